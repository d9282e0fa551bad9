"""The SLURM launcher: a bench's stages as submitit jobs with ``afterok`` dependencies.

Each job runs ``harness.run.run_stage`` (one stage of the run root's ``plan.json``) on its node; stages done
with the same key are not submitted again, so re-submitting a run resumes it. ``cluster: local|debug`` runs
the same path without a scheduler (how the tests exercise it).
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from harness.checks import check_values
from harness.errors import ConfigError
from harness.io import read_yaml, write_json
from harness.plan import Plan, Stage, job_record_path
from harness.run import run_stage

logger = logging.getLogger(__name__)


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
