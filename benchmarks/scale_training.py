"""The training steps of the scale scenario (`benchmarks.bench_scale`): a user's first benchmark at full size.

Why: the data path alone says nothing of what a bench costs once models train on 30 images of 2592×1944. The
classical baseline's bench runs end to end (zero-shot and fine-tuned rows of every target, every evaluated split)
twice in fresh run dirs: first with an empty derived-array cache (``harness.cache``: what a new user pays), then
with the cache the first run filled (what a second run or another target pays). Each run is the real CLI in its
own process, so wall time, CPU time and peak RSS are that bench's alone; every row must come out ``ok``.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: runs one command, logging to a file, with this environment → wall_s, cpu_s, peak_rss_mb
StepRunner = Callable[[list[str], Path, dict[str, str]], dict[str, float]]


def classical_bench(data: Path, work: Path, env: dict[str, str], run_step: StepRunner,
                    logs: Path) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """``c6bench bench --model classical`` (quick profile, CPU, one thread) on `data`, cold cache then warm.

    Returns the steps' figures (with each run's row count) and what went wrong (rows not ``ok``, differing
    scores between the cold and the warm run: the cache must never change a number).
    """
    cache = work / "cache"
    env = {**env, "C6BENCH_WEIGHTS": str(cache)}
    steps: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    scores: dict[str, list[Any]] = {}
    for name in ("bench_classical_cold", "bench_classical_warm"):
        out = work / "runs" / name
        cmd = [sys.executable, "-m", "harness", "bench", "--model", "classical", "--data", str(data),
               "--profile", "quick", "--device", "cpu", "--threads", "1", "--out", str(out)]
        steps[name] = run_step(cmd, logs / f"{name}.log", env)
        rows = json.loads((out / "results.json").read_text())["rows"]
        bad = [f"{r['mode']} {r['target']} {r['subset']}: {r['status']} {r.get('reason', '')}".strip()
               for r in rows if r["status"] != "ok"]
        problems += [f"{name}: row {b}" for b in bad]
        steps[name]["rows"] = len(rows)
        scores[name] = [(r["mode"], r["target"], r["subset"], r.get("metrics")) for r in rows]
    if scores["bench_classical_cold"] != scores["bench_classical_warm"]:
        problems.append("bench_classical: the warm-cache run's scores differ from the cold run's")
    logger.info("classical bench: cold %.0f s CPU, warm %.0f s CPU", steps["bench_classical_cold"]["cpu_s"],
                steps["bench_classical_warm"]["cpu_s"])
    return steps, problems
