"""The local launcher: a bench's stages in this process, or in N worker processes (one per GPU).

Every launcher skips stages already done with the same key, so re-running a run resumes it; results do not
depend on the launcher because every stage seeds itself and writes only its own files (`harness.run`).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from harness import envs
from harness.concurrency import stop
from harness.plan import Plan, Stage
from harness.run import StageFailed, run_in_process

logger = logging.getLogger(__name__)


def visible_gpus() -> list[str]:
    """GPU ids a worker may be pinned to: ``CUDA_VISIBLE_DEVICES`` if set, else what torch counts."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g for g in env.split(",") if g.strip() and g.strip() != "-1"]
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a declared dependency
        return []
    return [str(i) for i in range(torch.cuda.device_count())]


def run_local(plan: Plan, workers: int = 1) -> dict[str, str]:
    """Run every stage that is not done: in this process (``workers=1``) or in N worker processes.

    With GPUs visible, N defaults to one worker per GPU and each worker sees only its GPU; on CPU each of
    the N workers gets ``cpus // N`` threads. Returns the state of every stage run.
    """
    if workers <= 1:
        return run_in_process(plan)
    stages = plan.to_run()
    if not stages:
        logger.info("nothing to do: every stage of %s is done", plan.root)
        return {}
    return _run_workers(plan, stages, workers)


@dataclass
class _Slot:
    index: int
    env: dict[str, str]
    busy: Any = None  # (stage, process, log handle) while a stage runs in this slot


def _slots(workers: int, threads: int | None) -> list[_Slot]:
    gpus = visible_gpus()
    if gpus:
        workers = min(workers, len(gpus))
        logger.info("%d workers, one per GPU (%s)", workers, ",".join(gpus[:workers]))
        return [_Slot(i, {"CUDA_VISIBLE_DEVICES": gpus[i]}) for i in range(workers)]
    threads = str(threads or max(1, (os.cpu_count() or 1) // workers))
    logger.info("%d CPU workers, %s thread(s) each", workers, threads)
    env = {k: threads for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    return [_Slot(i, dict(env, CUDA_VISIBLE_DEVICES="")) for i in range(workers)]


def _run_workers(plan: Plan, stages: Sequence[Stage], workers: int) -> dict[str, str]:
    """Keep-going scheduler: a failed stage blocks only its dependents; the rest of the matrix finishes."""
    from tqdm import tqdm

    todo = {s.id for s in stages}
    pending = list(stages)
    states: dict[str, str] = {}
    slots = _slots(workers, next(iter(plan.specs.values())).threads)
    bar = tqdm(total=len(stages), desc="stages", unit="stage")
    try:
        _schedule(plan, slots, pending, todo, states, bar)
    finally:  # Ctrl-C or an error here: the workers still running are interrupted, not left behind
        stop([slot.busy[1] for slot in slots if slot.busy])
        bar.close()
    failed = {k: v for k, v in states.items() if v != "done"}
    if failed:
        raise StageFailed(_failure_message(plan, failed))
    return states


def _schedule(plan: Plan, slots: list[_Slot], pending: list[Stage], todo: set[str], states: dict[str, str],
              bar: Any) -> None:
    """Start ready stages in free slots until every stage has finished, failed or is blocked."""
    while pending or any(s.busy for s in slots):
        for slot in slots:
            if slot.busy:
                continue
            ready = next((s for s in pending if all(states.get(d) == "done" or d not in todo for d in s.deps)), None)
            if ready is None:
                break
            pending.remove(ready)
            slot.busy = _spawn(plan, ready, slot)
        time.sleep(0.2)
        for slot in slots:
            if not slot.busy:
                continue
            stage, proc, handle = slot.busy
            if proc.poll() is None:
                continue
            handle.close()
            slot.busy = None
            states[stage.id] = "done" if proc.returncode == 0 else "failed"
            bar.update(1)
            if proc.returncode != 0:
                logger.error("stage %s failed (exit %s); log: %s", stage.id, proc.returncode,
                             plan.runner(stage.model).log_path(stage))
                for blocked in _downstream(pending, stage.id):
                    pending.remove(blocked)
                    states[blocked.id] = "blocked"
                    bar.update(1)


def _spawn(plan: Plan, stage: Stage, slot: _Slot) -> tuple[Stage, subprocess.Popen, Any]:
    """Start ``c6bench stage ROOT ID`` in a child process; its console output goes to ``logs/<stage>.out``."""
    runner = plan.runner(stage.model)
    out = runner.log_path(stage).with_suffix(".out")
    out.parent.mkdir(parents=True, exist_ok=True)
    handle = out.open("w")
    env = dict(os.environ, **slot.env, TQDM_DISABLE="1", C6BENCH_PARENT_PID=str(os.getpid()))
    if model_env := envs.for_stage(runner.cls, stage):
        env = model_env.child_environ(env)  # the worker itself runs under the model's environment
    logger.info("stage %s → worker %d", stage.id, slot.index)
    proc = subprocess.Popen([sys.executable, "-m", "harness", "stage", str(plan.root), stage.id],
                            stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=os.getcwd())
    return stage, proc, handle


def _downstream(stages: Iterable[Stage], failed: str) -> list[Stage]:
    """Every stage that (transitively) depends on `failed`, in order."""
    bad, out = {failed}, []
    for stage in stages:
        if any(d in bad for d in stage.deps):
            bad.add(stage.id)
            out.append(stage)
    return out


def _failure_message(plan: Plan, states: dict[str, str]) -> str:
    lines = [f"{len(states)} stage(s) did not finish (re-run the same command to resume):"]
    for stage_id, state in states.items():
        stage = plan.stage(stage_id)
        rec = plan.record(stage)
        detail = rec.get("error", "") if state == "failed" else "a dependency failed"
        lines.append(f"  {stage_id}: {state} — {detail} (log: {plan.runner(stage.model).log_path(stage)})")
    return "\n".join(lines)
