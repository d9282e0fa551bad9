"""Peak memory of evaluating one full-size (2592x1944) image, measured in fresh subprocesses.

Two children, each a new interpreter so nothing else this process has loaded counts:

- ``baseline``: imports the harness (``harness.records``, ``harness.coco``, ``harness.evaluate``, ``harness.convert``) and exits —
  the floor every harness process pays;
- ``evaluate``: the same imports, then the synthetic scene of `bench_metrics.make_scene` with 300 GT and 300
  predicted overlapping instances (polygons), evaluated through the public `harness.evaluate.evaluate` in both
  GT modes the bench reports (overlaps kept, and resolved with the ``last`` rule), boundary rule on.

The peak is the child's VmHWM (kernel high-water mark of its RSS since exec), not a sample; ``ru_maxrss`` (``os.wait4``)
is reported beside it but also counts the parent's RSS at spawn. The
child also prints its own high-water mark after each step so the growth can be attributed.
Goal: evaluation adds <= 300 MB over the baseline.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
N_GT, N_PRED = 300, 300
GOAL_EXTRA_MB = 300.0

_IMPORTS = """
import json, sys
def peak_mb():
    # VmHWM: this process's peak RSS since exec (ru_maxrss would also count the parent's RSS at spawn)
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
import harness.records, harness.coco, harness.evaluate, harness.convert
steps = {"imports": peak_mb()}
"""

_BASELINE = _IMPORTS + "steps['peak'] = peak_mb()\nprint(json.dumps(steps))\n"

_EVALUATE = _IMPORTS + f"""
import importlib.util
spec = importlib.util.spec_from_file_location("bench_metrics", {str(REPO / "benchmarks" / "bench_metrics.py")!r})
bm = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bm)
from harness.records import Sample
from harness.evaluate import evaluate
gt, pred = bm.make_scene(n_gt={N_GT}, n_pred={N_PRED})
steps["scene_polygons"] = peak_mb()
gt_sample = Sample(image_path=None, height=bm.HEIGHT, width=bm.WIDTH, instances=tuple(gt), file_name="s.tif")
pred_sample = gt_sample.with_instances(pred)
targets = {{"cells": ["cell"]}}
overlap = evaluate([gt_sample], [pred_sample], targets, boundary=2).to_dict()
steps["evaluate_overlap"] = peak_mb()
resolved = evaluate([gt_sample], [pred_sample], targets, boundary=2, resolve_gt="last").to_dict()
steps["evaluate_resolved"] = peak_mb()
pooled = overlap["targets"]["cells"]["pooled"]["0.5"]
steps["tp_fp_fn_0.5"] = [pooled["tp"], pooled["fp"], pooled["fn"]]
steps["n_gt"] = overlap["targets"]["cells"]["n_gt"]
steps["n_pred"] = overlap["targets"]["cells"]["n_pred"]
steps["peak"] = peak_mb()
print(json.dumps(steps))
"""


def _child(code: str) -> tuple[float, dict[str, Any]]:
    """Run `code` in a fresh interpreter; (ru_maxrss in MB from wait4, the JSON it printed)."""
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    stdout = proc.stdout.read()
    stderr = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"memory benchmark child failed ({proc.returncode}): {stderr[-2000:]}")
    return usage.ru_maxrss / 1024, json.loads(stdout.strip().splitlines()[-1])


def run(quick: bool = False) -> dict[str, Any]:
    """Peak RSS (MB) of the baseline and the full-size evaluation children (one run each; quick changes nothing)."""
    base_maxrss, base_steps = _child(_BASELINE)
    eval_maxrss, steps = _child(_EVALUATE)
    base_mb, eval_mb = base_steps["peak"], steps.pop("peak")
    extra = eval_mb - base_mb
    figures = {
        "image": "2592x1944",
        "polygons_gt_pred": [N_GT, N_PRED],
        "n_gt": steps.pop("n_gt"),
        "n_pred": steps.pop("n_pred"),
        "tp_fp_fn_0.5_overlap": steps.pop("tp_fp_fn_0.5"),
        "baseline_import_peak_rss_mb": round(base_mb, 1),
        "evaluate_peak_rss_mb": round(eval_mb, 1),
        "evaluate_extra_over_baseline_mb": round(extra, 1),
        "evaluate_child_high_water_mb": {k: round(v, 1) for k, v in steps.items()},
        "baseline_ru_maxrss_mb": round(base_maxrss, 1),
        "evaluate_ru_maxrss_mb": round(eval_maxrss, 1),
        "goal_extra_le_300mb": extra <= GOAL_EXTRA_MB,
        "note": ("peak = the child's VmHWM (peak RSS since exec, /proc/self/status); ru_maxrss from os.wait4 is "
                 "reported too but on Linux it also holds the spawning process's RSS at exec (vfork), so it "
                 "depends on what ran before; evaluate runs both GT modes (overlap, resolved); "
                 "n_gt/n_pred count the instances evaluated (polygons clipped at the border below min_pixels "
                 "are dropped by the evaluator)"),
    }
    logger.info("memory: %s", figures)
    return figures


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    sys.stdout.write(json.dumps(run(), indent=2) + "\n")
