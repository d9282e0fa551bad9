"""Launchers: run a bench's stages in this process, in worker processes, or as SLURM jobs (submitit).

A :class:`Plan` is the stages of one or more models' benches with their dependencies, stored as
``plan.json`` in the run root so that any process — a local worker, a cluster job on another node —
rebuilds exactly the same runner and executes one stage (``c6bench stage ROOT STAGE_ID``). Every launcher
skips stages already done with the same key, so re-running or re-submitting a run resumes it; results
do not depend on the launcher because every stage seeds itself and writes only its own files.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from harness import envs
from harness.checks import check_values
from harness.concurrency import stop
from harness.errors import C6BenchError, ConfigError
from harness.io import read_yaml, write_json
from harness.run import BenchSpec, Runner, Stage, read_record, record_path

logger = logging.getLogger(__name__)

PLAN_FILE = "plan.json"


class StageFailed(C6BenchError):
    """One or more stages failed; the message lists them with their logs."""


# --------------------------------------------------------------------------------------------- plan


@dataclass
class Plan:
    """The stages of a run root (one model, or ``all`` with one run dir per model) and how to rebuild them."""

    root: Path
    specs: dict[str, BenchSpec]
    stages: list[Stage]
    _runners: dict[str, Runner] = field(default_factory=dict, repr=False)

    @classmethod
    def create(cls, runners: Sequence[Runner], root: Path) -> Plan:
        """Plan the given runners' stages and write ``plan.json`` (atomically) into `root`."""
        root = Path(root).resolve()
        specs, stages, by_model = {}, [], {}
        for runner in runners:
            runner.spec.out = runner.run_dir  # absolute (Runner resolves it): plan.json stores it root-relative
            specs[runner.spec.model] = runner.spec
            by_model[runner.spec.model] = runner
            stages += runner.stages()
        envs.check_prepared(r.cls for r in runners)  # before any stage runs: nothing installs at run time
        plan = cls(root, specs, stages, by_model)
        stored = {m: {**s.to_dict(), "out": os.path.relpath(s.out, root)} for m, s in specs.items()}
        write_json(root / PLAN_FILE, {"specs": stored, "stages": [s.to_dict() for s in stages]})
        return plan

    @classmethod
    def load(cls, root: Path) -> Plan:
        """Read ``plan.json`` of a run root (what a worker or cluster job does first)."""
        path = Path(root) / PLAN_FILE
        if not path.is_file():
            raise ConfigError(f"{path}: no plan here; is {root} a run dir written by `c6bench bench`?")
        try:
            raw = json.loads(path.read_text())
            specs = {m: BenchSpec.from_dict({**s, "out": str((Path(root) / s["out"]).resolve())})
                     for m, s in raw["specs"].items()}  # run dirs are stored relative to the root
            stages = [Stage.from_dict(s) for s in raw["stages"]]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ConfigError(f"{path}: not a readable plan ({exc}); re-run `c6bench bench` to rewrite it") from exc
        return cls(Path(root).resolve(), specs, stages)

    def runner(self, model: str) -> Runner:
        if model not in self._runners:
            self._runners[model] = Runner(self.specs[model])
        return self._runners[model]

    def stage(self, stage_id: str) -> Stage:
        for stage in self.stages:
            if stage.id == stage_id:
                return stage
        raise ConfigError(f"{self.root / PLAN_FILE}: no stage {stage_id!r}; stages: "
                          f"{', '.join(s.id for s in self.stages)}")

    def run_dir(self, model: str) -> Path:
        return Path(self.specs[model].out)

    def record(self, stage: Stage) -> dict[str, Any]:
        """The stage's record merged with its last job submission (what ``c6bench status`` reads).

        A submission newer than the record means the job has not started yet: state ``submitted``.
        """
        path = record_path(self.run_dir(stage.model), stage.id)
        job_path = job_record_path(self.run_dir(stage.model), stage.id)
        rec, job = read_record(path), read_record(job_path)
        if job and (not rec or job_path.stat().st_mtime_ns > path.stat().st_mtime_ns):
            return {**rec, **job, "state": "submitted"}
        return {**job, **rec} if job else rec

    def to_run(self) -> list[Stage]:
        """Stages that are not done with their current key, plus everything downstream of them."""
        pending: list[Stage] = []
        redo: set[str] = set()
        for stage in self.stages:  # topological order
            if any(d in redo for d in stage.deps) or not self.runner(stage.model).is_done(stage):
                redo.add(stage.id)
                pending.append(stage)
            else:
                logger.info("stage %s: reusing finished stage (same inputs)", stage.id)
        return pending


def job_record_path(run_dir: Path, stage_id: str) -> Path:
    """``<run dir>/stages/jobs/<stage>.json``: the last cluster submission of a stage (job id, job log)."""
    return record_path(run_dir, stage_id).parent / "jobs" / record_path(run_dir, stage_id).name


def run_stage(root: str | Path, stage_id: str) -> str:
    """Execute one stage of a planned run (the body of a worker process and of a cluster job)."""
    plan = Plan.load(Path(root))
    execute(plan, plan.stage(stage_id))
    return "done"


def execute(plan: Plan, stage: Stage) -> None:
    """Run a stage here, or in a child process under its model's environment when this process is not in it."""
    runner = plan.runner(stage.model)
    env = envs.for_stage(runner.cls, stage)
    if env is None or env.active:
        runner.execute(stage)
        return
    code = envs.run_child(env, ["stage", str(plan.root), stage.id], f"stage {stage.id}")
    if code != 0:
        error = runner.record(stage).get("error") or f"exit status {code}"
        raise StageFailed(f"stage {stage.id} failed in its environment {env.path.name}: {error} "
                          f"(log: {runner.log_path(stage)})")


# --------------------------------------------------------------------------------------------- local


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
    stages = plan.to_run()
    if not stages:
        logger.info("nothing to do: every stage of %s is done", plan.root)
        return {}
    if workers <= 1:
        return _run_in_process(plan, stages)
    return _run_workers(plan, stages, workers)


def _run_in_process(plan: Plan, stages: Sequence[Stage]) -> dict[str, str]:
    """Sequential, fail-fast: the first failing stage's own exception reaches the caller."""
    states = {}
    for stage in stages:
        execute(plan, stage)
        states[stage.id] = "done"
    return states


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


# --------------------------------------------------------------------------------------------- slurm


@dataclass
class SlurmOptions:
    """Cluster resources of the jobs (CLI flags or a launcher YAML; see README, "Running on a cluster")."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time_min: int = 24 * 60
    gpus_per_node: int = 1  # train and predict stages; evaluate/results run without a GPU
    cpus_per_task: int = 8
    mem_gb: float = 32
    array_parallelism: int = 8  # independent first-wave stages go out as one throttled job array
    constraint: str | None = None
    setup: list[str] = field(default_factory=list)  # shell lines run before each job (module load, conda ...)
    additional: dict[str, Any] = field(default_factory=dict)  # any other #SBATCH --key=value
    cluster: str = "slurm"  # submitit executor: slurm, or local / debug (no scheduler: waits level by level)

    @classmethod
    def from_yaml(cls, path: Path) -> SlurmOptions:
        try:
            raw = read_yaml(path) or {}
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the launcher YAML ({exc.strerror})") from exc
        allowed = {f.name for f in fields(cls)}
        if not isinstance(raw, dict) or set(raw) - allowed:
            unknown = sorted(set(raw) - allowed) if isinstance(raw, dict) else raw
            raise ConfigError(f"{path}: unknown launcher key(s) {unknown}; allowed: {', '.join(sorted(allowed))}")
        if raw.get("cluster", "slurm") not in ("slurm", "local", "debug"):
            raise ConfigError(f"{path}: cluster must be slurm, local or debug, not {raw['cluster']!r}")
        check_values(cls.__init__, raw, SLURM_LIMITS, {k: f"{path}: {k}" for k in raw})  # types + ranges
        return cls(**raw)

    def merged(self, overrides: dict[str, Any]) -> SlurmOptions:
        """These options with the CLI's explicitly given values on top."""
        return SlurmOptions(**{**self.__dict__, **{k: v for k, v in overrides.items() if v is not None}})

    def parameters(self, stage: Stage, name: str) -> dict[str, Any]:
        """submitit ``update_parameters`` for one stage."""
        params: dict[str, Any] = {
            "name": name, "timeout_min": self.time_min, "cpus_per_task": self.cpus_per_task,
            "mem_gb": self.mem_gb, "slurm_array_parallelism": self.array_parallelism,
        }
        if stage.uses_gpu and self.gpus_per_node:
            params["gpus_per_node"] = self.gpus_per_node
        optional = {"slurm_partition": self.partition, "slurm_account": self.account, "slurm_qos": self.qos,
                    "slurm_constraint": self.constraint, "slurm_setup": self.setup or None}
        params.update({k: v for k, v in optional.items() if v})
        if self.additional:
            params["slurm_additional_parameters"] = dict(self.additional)
        return params


SLURM_LIMITS = {"time_min": ">= 1", "gpus_per_node": ">= 0", "cpus_per_task": ">= 1", "mem_gb": "> 0",
                "array_parallelism": ">= 1"}


def _job_name(stage: Stage) -> str:
    return "c6-" + stage.id.replace("/", "-")


def _squeue_alive(job_id: str) -> bool:
    """Is this SLURM job still queued or running? (False where squeue is not available.)"""
    squeue = shutil.which("squeue")
    if not squeue:
        return False
    try:
        out = subprocess.run([squeue, "-h", "-j", str(job_id), "-o", "%T"], capture_output=True, text=True,
                             timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return out.returncode == 0 and bool(out.stdout.strip())


def submit(plan: Plan, options: SlurmOptions) -> dict[str, str]:
    """Submit every stage that is not done as a submitit job with ``afterok`` dependencies; returns stage → job id.

    The first wave (stages needing nothing that is queued) goes out as one job array throttled to
    ``array_parallelism``; every later stage is its own job depending on the jobs it needs. Stages
    already queued or running from an earlier submission (per ``squeue``) are not submitted twice:
    their job ids become dependencies. ``cluster: local|debug`` (no scheduler) runs the waves one after
    the other instead, waiting for each: how the path is exercised without a cluster.
    """
    todo = plan.to_run()
    if options.cluster != "slurm":
        return _submit_and_wait(plan, options, todo)
    jobs: dict[str, str] = {}
    for stage in todo:
        rec = plan.record(stage)
        if rec.get("state") in ("submitted", "running") and rec.get("job_id") and _squeue_alive(rec["job_id"]):
            logger.info("stage %s: already in the queue as job %s, not resubmitted", stage.id, rec["job_id"])
            jobs[stage.id] = rec["job_id"]
    todo = [s for s in todo if s.id not in jobs]
    pending = {s.id for s in todo} | set(jobs)
    first = [s for s in todo if not any(d in pending for d in s.deps)]
    if len(first) > 1:
        executor = _executor(plan, options)
        executor.update_parameters(**options.parameters(first[0], "c6-first-wave"))
        with executor.batch():
            submitted = [executor.submit(run_stage, str(plan.root), s.id) for s in first]
        for stage, job in zip(first, submitted):
            _submitted(plan, stage, job, jobs)
        todo = [s for s in todo if s not in first]
    for stage in todo:
        params = options.parameters(stage, _job_name(stage))
        after = [jobs[d] for d in stage.deps if d in jobs]
        if after:
            params["slurm_additional_parameters"] = {**params.get("slurm_additional_parameters", {}),
                                                     "dependency": "afterok:" + ":".join(after)}
        executor = _executor(plan, options)  # a fresh one: parameters (dependency, GPUs) must not leak
        executor.update_parameters(**params)
        _submitted(plan, stage, executor.submit(run_stage, str(plan.root), stage.id), jobs)
    return jobs


def _executor(plan: Plan, options: SlurmOptions) -> Any:
    import submitit

    try:
        return submitit.AutoExecutor(folder=plan.root / "submitit", cluster=options.cluster)
    except RuntimeError as exc:  # submitit's "Could not detect srun"
        raise ConfigError(f"--launcher slurm: {exc}. Submit from a SLURM login node (sbatch and srun on PATH), "
                          "or use --launcher local") from exc


def _submit_and_wait(plan: Plan, options: SlurmOptions, todo: Sequence[Stage]) -> dict[str, str]:
    """No scheduler (submitit local/debug executors): run the dependency waves in order, waiting for each."""
    jobs: dict[str, str] = {}
    failed: set[str] = set()
    for wave in _waves(todo):
        handles = []
        for stage in wave:
            if any(d in failed for d in stage.deps):
                failed.add(stage.id)
                continue
            executor = _executor(plan, options)
            executor.update_parameters(**options.parameters(stage, _job_name(stage)))
            job = executor.submit(run_stage, str(plan.root), stage.id)
            _submitted(plan, stage, job, jobs)
            handles.append((stage, job))
        for stage, job in handles:
            try:
                job.result()
            except Exception:  # noqa: BLE001 - reported through the stage record and `c6bench status`
                logger.error("stage %s failed; see `c6bench status %s`", stage.id, plan.root)
                failed.add(stage.id)
    return jobs


def _waves(stages: Sequence[Stage]) -> list[list[Stage]]:
    """Group stages into dependency levels (each stage one level after the deepest stage it needs)."""
    level: dict[str, int] = {}
    for stage in stages:  # topological order
        level[stage.id] = 1 + max((level[d] for d in stage.deps if d in level), default=-1)
    waves: list[list[Stage]] = [[] for _ in range(max(level.values(), default=-1) + 1)]
    for stage in stages:
        waves[level[stage.id]].append(stage)
    return waves


def _submitted(plan: Plan, stage: Stage, job: Any, jobs: dict[str, str]) -> None:
    jobs[stage.id] = str(job.job_id)
    runner = plan.runner(stage.model)
    write_json(job_record_path(runner.run_dir, stage.id), {
        "job_id": str(job.job_id), "log": str(runner.log_path(stage)), "job_log": str(job.paths.stderr),
        "submitted": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    logger.info("stage %s → job %s", stage.id, job.job_id)


# --------------------------------------------------------------------------------------------- status


def stage_status(plan: Plan) -> list[dict[str, Any]]:
    """One row per stage: state (done, running, failed, submitted, pending, blocked, interrupted) and where to look."""
    rows: list[dict[str, Any]] = []
    state_of: dict[str, str] = {}
    for stage in plan.stages:
        rec = plan.record(stage)
        state = rec.get("state", "pending")
        if state == "running" and rec.get("host") == platform.node() and not _pid_alive(rec.get("pid")):
            state = "interrupted"
        if state in ("pending", "submitted") and any(state_of.get(d) in ("failed", "blocked", "interrupted")
                                                     for d in stage.deps):
            state = "blocked"  # under SLURM its afterok job will never start
        elif state in ("submitted", "running") and rec.get("job_id"):
            ended = _sacct_failure(rec["job_id"])
            if ended:  # the job ended without the stage finishing: time limit, memory, node failure, cancel
                state, rec = "failed", {**rec, "error": f"slurm job {rec['job_id']}: {ended}"}
        state_of[stage.id] = state
        detail = {"done": f"{rec.get('seconds', 0):.1f} s",
                  "failed": rec.get("error", ""),
                  "submitted": f"job {rec.get('job_id')}",
                  "running": f"pid {rec.get('pid')} on {rec.get('host')}" + (
                      f", job {rec['job_id']}" if rec.get("job_id") else ""),
                  "interrupted": "its process ended without recording a result (killed, or the record could "
                                 "not be written: disk full?); see its log, re-run to resume",
                  "blocked": "a dependency did not finish",
                  "pending": "waiting for " + ", ".join(d for d in stage.deps if state_of.get(d) != "done")
                  if any(state_of.get(d) != "done" for d in stage.deps) else "ready"}[state]
        rows.append({"stage": stage.id, "state": state, "detail": detail,
                     "log": rec.get("log") or str(plan.run_dir(stage.model) / "logs"),
                     "job_log": rec.get("job_log", "")})
    return rows


SLURM_FAILURES = ("FAILED", "TIMEOUT", "CANCELLED", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL",
                  "DEADLINE")


def _sacct_failure(job_id: str) -> str | None:
    """The SLURM end state of a job that ended badly (``TIMEOUT``, ``OUT_OF_MEMORY`` …), else None (or no sacct)."""
    sacct = shutil.which("sacct")
    if not sacct:
        return None
    try:
        out = subprocess.run([sacct, "-n", "-P", "-X", "-j", str(job_id), "-o", "State"], capture_output=True,
                             text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    states = out.stdout.split()
    return states[0] if states and states[0] in SLURM_FAILURES else None


def _pid_alive(pid: Any) -> bool:
    try:
        os.kill(int(pid), 0)
    except (TypeError, ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True
