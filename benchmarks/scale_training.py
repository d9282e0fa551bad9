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


def cellpose_training(data: Path, work: Path, env: dict[str, str], run_step: StepRunner, logs: Path,
                      targets: tuple[str, ...] = ("cells", "type_a", "type_b", "soma"),
                      epochs: int = 2) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """cellpose's quick training of each target cut to `epochs` (`benchmarks.cellpose_epoch`), cold then warm.

    Cold: an empty derived-array cache, so each target's flow targets are computed (what a first run pays);
    warm: the same trainings again in fresh folders, reading them back. Each step's figures are the child's
    wall/CPU/peak RSS plus what the training recorded (``flows_s``, ``cached``, ``epoch_s``, ``images``).
    Problems: a warm run that recomputed anything, or a cold one that found anything cached.
    """
    env = {**env, "C6BENCH_WEIGHTS": str(work / "cache-cellpose")}
    steps: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    for state in ("cold", "warm"):
        for target in targets:
            name = f"cellpose_{target}_{state}"
            out = work / "cellpose" / name
            cmd = [sys.executable, "-m", "benchmarks.cellpose_epoch", "--data", str(data), "--target", target,
                   "--work", str(out / "train"), "--epochs", str(epochs), "--json", str(out / "figures.json")]
            steps[name] = run_step(cmd, logs / f"{name}.log", env)
            figures = json.loads((out / "figures.json").read_text())
            steps[name].update({k: figures[k] for k in ("images", "validation_images", "flows_s", "cached",
                                                        "epochs", "epoch_s", "epoch_cpu_s")})
            everything = figures["images"] + figures["validation_images"]
            if figures["cached"] != (everything if state == "warm" else 0):
                problems.append(f"{name}: {figures['cached']} of {everything} image(s) read from the cache")
    for target in targets:
        cold, warm = steps[f"cellpose_{target}_cold"], steps[f"cellpose_{target}_warm"]
        logger.info("cellpose %s: flows %.1f s cold, %.1f s warm for %d image(s); %.2f s per epoch; peak RSS %.0f "
                    "MB", target, cold["flows_s"], warm["flows_s"], cold["images"] + cold["validation_images"],
                    cold["epoch_s"], max(cold["peak_rss_mb"], warm["peak_rss_mb"]))
    return steps, problems
