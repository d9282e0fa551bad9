"""End-to-end wall time: what `make bench MODEL=classical` does on the bundled sample, start to finish.

Runs ``python -m harness bench --model classical --data sample --profile quick --device cpu --out <tmp>`` in a
fresh subprocess (the same command the Makefile runs, minus make itself, which must not be nested inside
``make perf``) and reports its wall time, including interpreter start-up and imports, plus the F1@0.5 of every
result row so a fast-but-broken run is visible. ``--bootstrap`` is left at its default, as `make bench` does.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
COMMAND = ["-m", "harness", "bench", "--model", "classical", "--data", "sample", "--profile", "quick",
           "--device", "cpu"]


def _f1_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One record per result row: identity, status and F1@0.5 under each GT mode (None if not computed)."""
    out = []
    for row in results["rows"]:
        record = {k: row.get(k) for k in ("mode", "target", "subset", "status")}
        for gt_mode, metrics in row.get("metrics", {}).items():
            f1 = metrics.get("pooled", {}).get("0.5", {}).get("f1")
            record[f"f1@0.5_{gt_mode}"] = None if f1 is None else round(float(f1), 4)
        out.append(record)
    return out


def run(quick: bool = False) -> dict[str, Any]:
    """Wall seconds of one classical quick bench on the sample; --quick: zero-shot only (a smoke run, not the
    figure)."""
    command = [*COMMAND, "--modes", "zero_shot"] if quick else COMMAND
    with tempfile.TemporaryDirectory(prefix="c6perf-bench-") as tmp:
        out_dir = Path(tmp) / "run"
        argv = [sys.executable, *command, "--out", str(out_dir)]
        start = time.perf_counter()
        proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - start
        figures: dict[str, Any] = {"command": " ".join(["python", *command, "--out", "<tmp>"]),
                                   "wall_s": round(wall, 2), "returncode": proc.returncode}
        if proc.returncode != 0:
            figures["error"] = proc.stderr.strip().splitlines()[-5:]
            logger.error("bench failed (%d): %s", proc.returncode, proc.stderr[-2000:])
            return figures
        results = json.loads((out_dir / "results.json").read_text())
        manifest = json.loads((out_dir / "manifest.json").read_text())
    rows = _f1_rows(results)
    figures["rows"] = rows
    figures["f1@0.5"] = {f"{r['mode']}/{r['target']}": r.get("f1@0.5_overlap") for r in rows
                         if r["status"] == "ok"}
    figures["stage_seconds"] = {k: round(float(v), 2) for k, v in manifest.get("wall_seconds", {}).items()
                                if v is not None}
    logger.info("bench classical: %.1f s, rows %s", wall, rows)
    return figures


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    sys.stdout.write(json.dumps(run(), indent=2) + "\n")
