"""The data path a new user takes, at the dataset's scale: wall time, peak memory and exact counts per step.

On the seeded Glioma C6 replica (`benchmarks.replica`; `make perf` uses the 972×1296 ``SMALL`` one,
``python -m benchmarks.bench_scale --full`` the published 75 images of 2592×1944 with ~20,000 polygons), each
step runs as the real CLI in its own process, so that its peak RSS (``os.wait4``'s ``ru_maxrss``) is that
step's alone:

1. ``replica``: generate it and zip it (the archive layout of Zenodo's dataset.zip);
2. ``fetch``: ``c6bench data fetch --url file://…/dataset.zip`` (download, verify, unpack, validate);
3. ``validate``: ``c6bench data validate --json`` — instances per category and target, overlapping pairs;
4. ``labelmaps_<split>``: ``c6bench data convert --to labelmaps`` (one map per target) for every split;
5. ``yolo``: ``c6bench data convert --to yolo`` of all four splits, classes ``cells soma``;
6. ``evaluate_<split>``: ``c6bench evaluate`` of spec/test and gen/test (the ground truth as its own
   prediction);
7. ``bench_classical_cold`` / ``_warm`` (``train``): the classical baseline's whole quick bench, with an empty
   and then a filled derived-array cache (`benchmarks.scale_training`);
8. ``cellpose_<target>_cold`` / ``_warm`` (``train``): cellpose's quick training of every target cut to 2 epochs,
   flow targets computed then read back from the cache (`benchmarks.cellpose_epoch`: flow seconds, seconds per
   epoch).

Every count is compared with the generator's ``expected.json``; a mismatch is listed under ``mismatches`` (and
``counts_match`` is false), never hidden.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
GLIOMA_YAML = REPO / "configs" / "datasets" / "glioma_c6.yaml"
SPLITS = ("spec/train", "spec/valid", "spec/test", "gen/test")
YOLO_FOLDERS = {
    "spec/train": "train",
    "spec/valid": "valid",
    "spec/test": "spec_test",
    "gen/test": "gen_test",
}
EVALUATED = ("spec/test", "gen/test")


def _step(cmd: Sequence[str], log: Path, env: dict[str, str]) -> dict[str, float]:
    """Run one command; its wall time, CPU time (user + system: what a shared machine does not inflate) and
    peak RSS (MB). A failure raises with the end of its log."""
    from harness.io import write_bytes

    start = time.perf_counter()
    proc = subprocess.Popen(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    output = proc.stdout.read()  # until the child closes it, i.e. exits; then reap it with its own usage
    proc.stdout.close()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    write_bytes(log, output)
    if proc.returncode != 0:
        tail = output.decode(errors="replace").splitlines()[-5:]
        raise RuntimeError(f"{' '.join(cmd[2:5])} exited {proc.returncode}: " + " | ".join(tail))
    return {"wall_s": round(wall, 2), "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}


def _c6(*args: str) -> list[str]:
    return [sys.executable, "-m", "harness", *args]


def _check(mismatches: list[str], what: str, got: Any, want: Any) -> None:
    if got != want:
        mismatches.append(f"{what}: got {got}, the generator says {want}")


def _du_mb(path: Path) -> float:
    return round(sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6, 1)


def scenario(work: Path, full: bool = False, seed: int = 0, train: bool = True) -> dict[str, Any]:
    """Run the steps in `work` (which must be empty or absent); returns the figures.

    `train`: also the training steps (`benchmarks.scale_training`), after the data path.
    """
    work.mkdir(parents=True, exist_ok=True)
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    )
    steps: dict[str, dict[str, float]] = {}
    mismatches: list[str] = []
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    replica_dir, data = work / "replica", work / "data"
    size = [] if full else ["--small"]
    steps["replica"] = _step(
        [
            sys.executable,
            "-m",
            "benchmarks.replica",
            "--out",
            str(replica_dir),
            "--zip",
            "--seed",
            str(seed),
            *size,
        ],
        logs / "replica.log",
        env,
    )
    generated = json.loads((replica_dir / "expected.json").read_text())
    expected = generated["splits"]
    zip_mb = round((replica_dir / "dataset.zip").stat().st_size / 1e6, 1)
    steps["fetch"] = _step(
        _c6(
            "data",
            "fetch",
            "--url",
            (replica_dir / "dataset.zip").resolve().as_uri(),
            "--dest",
            str(data),
            "--timeout",
            "60",
        ),
        logs / "fetch.log",
        env,
    )
    report_path = work / "validate.json"
    steps["validate"] = _step(
        _c6("data", "validate", "--data", str(data), "--json", str(report_path)), logs / "validate.log", env
    )
    report = json.loads(report_path.read_text())
    for ref, want in expected.items():
        got = report["splits"][ref]
        _check(mismatches, f"validate {ref} images", got["images"], want["images"])
        _check(
            mismatches,
            f"validate {ref} instances",
            {c: v["instances"] for c, v in got["categories"].items()},
            want["instances"],
        )
        _check(
            mismatches,
            f"validate {ref} pairs per category",
            {c: v["overlapping_pairs"] for c, v in got["categories"].items()},
            want["overlapping_pairs"],
        )
        _check(
            mismatches,
            f"validate {ref} pairs per target",
            {t: v["overlapping_pairs"] for t, v in got["targets"].items()},
            want["target_pairs"],
        )
        _check(
            mismatches,
            f"validate {ref} pairs in all",
            got["overlapping_pairs"],
            want["overlapping_pairs_all"],
        )
    for ref in SPLITS:
        out = work / "labelmaps" / ref.replace("/", "_")
        steps[f"labelmaps_{ref.replace('/', '_')}"] = _step(
            _c6(
                "data", "convert", "--data", str(data), "--split", ref, "--to", "labelmaps", "--out", str(out)
            ),
            logs / f"labelmaps_{ref.replace('/', '_')}.log",
            env,
        )
        for target, n in expected[ref]["target_instances"].items():
            totals = json.loads((out / target / "conversion.json").read_text())["totals"]
            _check(mismatches, f"labelmaps {ref} {target} (in, kept)", (totals["in"], totals["kept"]), (n, n))
    yolo = work / "yolo"
    steps["yolo"] = _step(
        _c6(
            "data",
            "convert",
            "--data",
            str(data),
            "--to",
            "yolo",
            "--classes",
            "cells",
            "soma",
            *[a for ref in SPLITS for a in ("--split", ref)],
            "--out",
            str(yolo),
        ),
        logs / "yolo.log",
        env,
    )
    for ref, folder in YOLO_FOLDERS.items():
        lines = Counter(
            ln.split(" ", 1)[0]
            for f in (yolo / "labels" / folder).glob("*.txt")
            for ln in f.read_text().splitlines()
        )
        want = expected[ref]["target_instances"]
        _check(
            mismatches,
            f"yolo {ref} lines per class",
            dict(lines),
            {k: v for k, v in (("0", want["cells"]), ("1", want.get("soma", 0))) if v},
        )
    for ref in EVALUATED:
        gt = data / "dataset" / ("gen" if ref == "gen/test" else ref) / "annotations.coco.json"
        out = work / "evaluate" / ref.replace("/", "_")
        steps[f"evaluate_{ref.replace('/', '_')}"] = _step(
            _c6(
                "evaluate",
                "--gt",
                str(gt),
                "--pred",
                str(gt),
                "--targets",
                str(GLIOMA_YAML),
                "--out",
                str(out),
            ),
            logs / f"evaluate_{ref.replace('/', '_')}.log",
            env,
        )
        metrics = json.loads((out / "metrics.json").read_text())["targets"]
        for target, n in expected[ref]["target_instances"].items():
            cats = report["splits"][ref]["targets"][target]["categories"]
            kept = n - sum(expected[ref]["touching_frame"][c] for c in cats)
            pooled = metrics[target]["pooled"]["0.5"]
            _check(
                mismatches,
                f"evaluate {ref} {target} (TP, FP, FN)",
                (pooled["tp"], pooled["fp"], pooled["fn"]),
                (kept, 0, 0),
            )
    if train:
        from benchmarks import scale_training

        for training in (scale_training.classical_bench, scale_training.cellpose_training):
            trained, problems = training(data, work, env, _step, logs)
            steps.update(trained)
            mismatches += problems
    one = expected["spec/train"]
    return {
        "scale": "full" if full else "small",
        "image": f"{generated['width']}x{generated['height']}",
        "images": sum(s["images"] for s in expected.values()),
        "instances": sum(sum(s["instances"].values()) for s in expected.values()),
        "spec_train_instances": sum(one["instances"].values()),
        "steps": steps,
        "wall_s": round(sum(s["wall_s"] for s in steps.values()), 1),
        "cpu_s": round(sum(s["cpu_s"] for s in steps.values()), 1),
        "peak_rss_mb": max(s["peak_rss_mb"] for s in steps.values()),
        "disk_mb": {
            "zip": zip_mb,
            "dataset": _du_mb(data),
            "labelmaps": _du_mb(work / "labelmaps"),
            "yolo": _du_mb(yolo),
        },
        "counts_match": not mismatches,
        "mismatches": mismatches,
    }


def run(quick: bool = False) -> dict[str, Any]:
    """Figures for perf.json under ``scale``: the small replica (``quick``: the same; about half a minute)."""
    with tempfile.TemporaryDirectory(prefix="c6perf-scale-") as tmp:
        result = scenario(Path(tmp) / "work")
    if result["mismatches"]:
        logger.error("scale: counts differ from the generator's: %s", "; ".join(result["mismatches"]))
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="the full-scale replica (75 images of 2592x1944)")
    parser.add_argument("--out", type=Path, default=Path("perf_scale.json"), help="figures (JSON)")
    parser.add_argument(
        "--work", type=Path, default=None, help="keep the files here (default: a temp folder)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from harness.io import write_json

    if args.work is not None:
        result = scenario(args.work, full=args.full)
    else:
        with tempfile.TemporaryDirectory(prefix="c6perf-scale-") as tmp:
            result = scenario(Path(tmp) / "work", full=args.full)
    write_json(args.out, result, indent=2)
    sys.stdout.write(json.dumps(result, indent=2) + "\n")
    return 0 if result["counts_match"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
