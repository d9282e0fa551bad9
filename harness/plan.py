"""What a bench is made of: its settings (`BenchSpec`), its stages and their records, and ``plan.json``.

A bench is a list of :class:`Stage` (train → predict → evaluate → results) with explicit dependencies,
planned by `harness.planner.Planner` and executed by `harness.run.Runner`. A :class:`Plan` is the stages of
one or more models' benches, stored as ``plan.json`` in the run root so that any process — a local worker,
a cluster job on another node — rebuilds exactly the same runner and executes one stage
(``c6bench stage ROOT STAGE_ID``). Every stage leaves a record under ``stages/`` (state, key, outputs, log).
This module is the bottom of the runner's layers: it imports no planner, runner or launcher.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from harness import envs
from harness.errors import ConfigError
from harness.io import write_json

logger = logging.getLogger(__name__)

MODES = ("zero_shot", "finetuned")


@dataclass
class BenchSpec:
    """What ``c6bench bench`` was asked to do."""

    model: str
    data: str = "auto"
    profile: str = "quick"
    device: str = "auto"
    targets: Sequence[str] | None = None
    modes: Sequence[str] = MODES
    out: Path | None = None
    seed: int = 0
    bootstrap: int = 1000
    boundary: int = 2
    config: Path | None = None  # a model YAML to use instead of configs/models/<model>.yaml
    threads: int | None = None  # torch CPU threads per stage; CPU results are bit-identical for the same value
    rehearse: int | None = None  # optimiser steps of a rehearsal (`harness.rehearsal`); None = a real run
    seeds: Sequence[int] | None = None  # training seeds of the fine-tuned stages (`harness.efficiency`)
    train_images: Sequence[int | str] | None = None  # nested training-set sizes (numbers of images, or "all")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (stored in ``plan.json`` so any process or cluster job can rebuild the runner)."""
        return {"model": self.model, "data": self.data, "profile": self.profile, "device": self.device,
                "targets": list(self.targets) if self.targets else None, "modes": list(self.modes),
                "out": str(self.out) if self.out else None, "seed": self.seed, "bootstrap": self.bootstrap,
                "boundary": self.boundary, "config": str(self.config) if self.config else None,
                "threads": self.threads, "rehearse": self.rehearse,
                # the experiment dimensions only when asked for: plans (and keys) of ordinary runs are unchanged
                **({"seeds": list(self.seeds)} if self.seeds is not None else {}),
                **({"train_images": list(self.train_images)} if self.train_images is not None else {})}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> BenchSpec:
        out, config = raw.get("out"), raw.get("config")
        return cls(**{**raw, "out": Path(out) if out else None, "config": Path(config) if config else None})


# --------------------------------------------------------------------------------------------- helpers


def resolve_device(device: str) -> str:
    """``auto`` → ``cuda`` when torch sees a GPU, else ``cpu``; explicit ``cuda`` without one fails."""
    if device not in ("auto", "cpu") and not device.startswith("cuda"):
        raise ConfigError(f"--device {device!r}: use auto, cpu, cuda or cuda:N")
    if device == "cpu":
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return "cuda" if device == "auto" else device
    if device == "auto":
        return "cpu"
    raise ConfigError(f"--device {device}: no CUDA device is visible; use --device cpu or auto")


def stage_key(payload: dict[str, Any]) -> str:
    """Short stable hash of a stage's resolved inputs."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------------------------- stages


@dataclass(frozen=True)
class Stage:
    """One job of a bench: ``train`` a unit, ``predict`` a subset, ``evaluate`` it, or collect ``results``.

    Stages are what the launchers schedule (in-process, worker processes, SLURM jobs); ``deps`` are the
    ids that must be done first. Ids are ``<model>/<kind>[/<mode>]/<unit>[/<subset>]``.
    """

    id: str
    kind: str
    model: str
    deps: tuple[str, ...] = ()
    mode: str = ""
    unit: str = ""
    ref: str = ""
    member: str = ""  # a train stage's fine-tuning init when the model YAML lists several (an ensemble)
    trial: str = ""  # a fine-tuned stage's seed and training-set size (`Trial.tag`) under --seeds/--train-images

    @property
    def uses_gpu(self) -> bool:
        """Training and prediction want an accelerator; scoring and collecting do not."""
        return self.kind in ("train", "predict")

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "model": self.model, "deps": list(self.deps), "mode": self.mode,
                "unit": self.unit, "ref": self.ref, "member": self.member,
                **({"trial": self.trial} if self.trial else {})}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Stage:
        return cls(**{**raw, "deps": tuple(raw.get("deps", ()))})


STATES = ("running", "done", "failed")


def record_path(run_dir: Path, stage_id: str) -> Path:
    """``<run dir>/stages/<kind>__….stage.json``: one record per stage (state, key, outputs, log, seconds)."""
    return Path(run_dir) / "stages" / f"{stage_id.split('/', 1)[1].replace('/', '__')}.stage.json"


def read_record(path: Path) -> dict[str, Any]:
    """A stage (or job) record; absent or unreadable = ``{}`` (records are written atomically)."""
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, json.JSONDecodeError):
        return {}


def safe_ref(ref: str) -> str:
    """A subset name as one path component (``train/part1`` → ``train_part1``)."""
    return ref.replace("/", "_")


def job_record_path(run_dir: Path, stage_id: str) -> Path:
    """``<run dir>/stages/jobs/<stage>.json``: the last cluster submission of a stage (job id, job log)."""
    return record_path(run_dir, stage_id).parent / "jobs" / record_path(run_dir, stage_id).name


@dataclass(frozen=True)
class Trial:
    """One fine-tuning of a unit: its training seed and training-set size (None: the run's seed, every image).

    The tag names it in stage ids and file names (``s1-n4``); an ordinary run has one untagged trial, so its
    ids, files and keys are those of a run without the experiment dimensions.
    """

    seed: int
    size: int | str | None = None

    @property
    def tag(self) -> str:
        return "" if self.size is None else f"s{self.seed}-n{self.size}"

    @property
    def suffix(self) -> str:
        """Appended to a fine-tuned stage's id tail and file stem: ``/s1-n4`` / ``.s1-n4`` (empty untagged)."""
        return f"/{self.tag}" if self.tag else ""


# --------------------------------------------------------------------------------------------- plan.json


PLAN_FILE = "plan.json"


class BenchRunner(Protocol):
    """What a plan needs of one model's bench (`harness.planner.Planner`, `harness.run.Runner`)."""

    spec: BenchSpec
    run_dir: Path
    cls: type

    def stages(self) -> list[Stage]: ...

    def is_done(self, stage: Stage) -> bool: ...

    def log_path(self, stage: Stage) -> Path: ...


@dataclass
class Plan:
    """The stages of a run root (one model, or ``all`` with one run dir per model) and how to rebuild them.

    `make` builds a model's runner from its spec when the plan was loaded from ``plan.json`` (a worker passes
    `harness.run.Runner`); a plan that only reports states (``c6bench status``) needs none.
    """

    root: Path
    specs: dict[str, BenchSpec]
    stages: list[Stage]
    _runners: dict[str, BenchRunner] = field(default_factory=dict, repr=False)
    make: Callable[[BenchSpec], BenchRunner] | None = field(default=None, repr=False)

    @classmethod
    def create(cls, runners: Sequence[BenchRunner], root: Path) -> Plan:
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
    def load(cls, root: Path, make: Callable[[BenchSpec], BenchRunner] | None = None) -> Plan:
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
        return cls(Path(root).resolve(), specs, stages, make=make)

    def runner(self, model: str) -> BenchRunner:
        if model not in self._runners:
            if self.make is None:
                raise TypeError(f"{self.root / PLAN_FILE}: this plan was loaded without a runner class (make=)")
            self._runners[model] = self.make(self.specs[model])
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
