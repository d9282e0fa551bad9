"""The experiment runner behind ``c6bench bench``: zero-shot vs fine-tuned × targets × evaluation subsets.

Plan: for each mode, the model is built (zero-shot weights, or trained from the fine-tuning init),
predicts every evaluation subset, and is scored per target against the overlapping annotations (paper
Table 2) and the priority-resolved ones (Table 4). Single-class adapters get one model per target;
a multiclass adapter one model for all, its classes mapped onto targets (`harness.classes`). A model YAML
that lists several fine-tuning inits gets one train stage per init (``<model>/train/<unit>/<init>``; member k
trains with seed + k) and predicts with their ensemble; several zero-shot weights are ensembled too.

The plan is a list of :class:`Stage` (train → predict → evaluate → results) with explicit dependencies,
so a launcher (``harness.launch``: in-process, worker processes, SLURM) can schedule them. Every stage is
keyed by what it reads (`harness.keys`: settings, data and weights file contents, the outputs of the
stages it needs, its code) and leaves a record under ``stages/``; re-running with the same ``--out`` skips
finished stages with the same key and recomputes the rest. Files are written to a temporary name and renamed,
so a killed run never leaves half a file.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import platform
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

import adapters
from harness import dataset as ds
from harness import efficiency, envs, integrity, keys, rehearsal
from harness.checks import check_bench_spec
from harness.classes import Unit, merge_classes, pred_categories, training_samples, units_of
from harness.concurrency import run_dir_lock, stage_lock
from harness.config import ModelConfig, load_model_config
from harness.data import Sample, load_coco
from harness.errors import C6BenchError, ConfigError, MissingWeightsError
from harness.evaluate import evaluate
from harness.io import describe_os_error, write_json, write_json_or_overwrite, write_text
from harness.manifest import PACKAGES, git_hash, versions
from harness.predictions import write_predictions

logger = logging.getLogger(__name__)

MODES = ("zero_shot", "finetuned")
GT_MODES = {"overlap": None, "resolved": "last"}


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


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a declared dependency
        return
    torch.manual_seed(seed)


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


def _safe(ref: str) -> str:
    return ref.replace("/", "_")


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


# --------------------------------------------------------------------------------------------- runner


class Runner:
    """One model's bench: plans its stages, computes their keys, executes one stage at a time."""

    def __init__(self, spec: BenchSpec) -> None:
        check_bench_spec(spec, MODES)
        self.spec = spec
        self.model_cfg: ModelConfig = load_model_config(spec.model, spec.profile, spec.config)
        self.cls = adapters.get(spec.model)
        self.rehearse = rehearsal.check_steps(spec.rehearse) if spec.rehearse is not None else None
        if self.rehearse:
            self.model_cfg = rehearsal.rehearsal_config(self.model_cfg, self.cls, self.rehearse)
        self.data = ds.resolve_data(spec.data)
        train_targets = self.data.targets_of(self.data.train)
        wanted = list(spec.targets) if spec.targets else list(train_targets)
        unknown = [t for t in wanted if t not in train_targets]
        if unknown:
            raise ConfigError(f"unknown target(s) {', '.join(unknown)} for dataset {self.data.name}; "
                              f"available: {', '.join(train_targets)}")
        self.targets = wanted
        bad_modes = [m for m in spec.modes if m not in MODES]
        if bad_modes:
            raise ConfigError(f"unknown mode(s) {', '.join(bad_modes)}; available: {', '.join(MODES)}")
        self.device = resolve_device(spec.device)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        name = f"{stamp}_{spec.model}" + ("-rehearsal" if self.rehearse else "")
        self.run_dir = (Path(spec.out) if spec.out else ds.REPO_ROOT / "runs" / name).resolve()
        self.units = units_of(self.cls, self.data, self.targets, self.model_cfg)
        self._splits: dict[str, list[Sample]] = {}
        self._index: dict[str, Stage] | None = None
        self._keys: dict[str, str] = {}

    # ------------------------------------------------------------------ data

    def split(self, ref: str) -> list[Sample]:
        if ref not in self._splits:
            samples = ds.load_split(self.data, ref)
            self._splits[ref] = rehearsal.first_images(samples, ref) if self.rehearse else samples
        return self._splits[ref]

    def resolved_config(self) -> dict[str, Any]:
        return {
            "model": self.model_cfg.to_dict(),
            "data": {"name": self.data.name, "root": str(self.data.root), "config": str(self.data.source),
                     "train": self.data.train, "valid": self.data.valid, "evaluate": list(self.data.evaluate)},
            "targets": self.targets,
            "modes": list(self.spec.modes),
            "device": self.device,
            "seed": self.spec.seed,
            **({"seeds": list(self.spec.seeds)} if self.spec.seeds is not None else {}),
            **({"train_images": list(self.spec.train_images)} if self.spec.train_images is not None else {}),
            "profile": self.spec.profile,
            "rehearsal": rehearsal.summary(self.rehearse),
            "evaluation": {"boundary": self.spec.boundary, "thresholds": [0.5, 0.75, 0.9],
                           "gt_modes": GT_MODES, "bootstrap": self.spec.bootstrap},
        }

    def unit(self, name: str) -> Unit:
        for unit in self.units:
            if unit.name == name:
                return unit
        raise ConfigError(f"unit {name!r} is not part of this bench of {self.spec.model}")

    def refs(self, unit: Unit) -> list[str]:
        """Evaluation subsets on which at least one of the unit's targets is annotated."""
        return [ref for ref in self.data.evaluate if any(t in self.data.targets_of(ref) for t in unit.targets)]

    # ------------------------------------------------------------------ plan

    def zero_shot(self, unit: Unit) -> tuple[tuple[str, ...], str, str | None]:
        """``(weights, init description, skip reason)`` of the unit's zero-shot row (several weights = ensemble)."""
        weights, reason = self.model_cfg.zero_shot_for(unit.targets[0] if unit.name != "all" else "all")
        if reason:
            return (), "-", reason
        if not weights:
            return (), "none (no weights)", None
        inits, missing = [], []
        for name in weights:
            try:
                inits.append(f"pretrained:{name}{integrity.check(name).note()}")
            except MissingWeightsError as exc:
                inits.append(f"pretrained:{name}")
                missing.append(str(exc))
        return weights, " + ".join(inits), "; ".join(missing) or None

    def finetune_init(self, member: str | None) -> tuple[str | None, str]:
        """``(weights to start from, init description)``: a missing init file means random init, recorded."""
        if not member:
            return None, "scratch"
        try:
            check = integrity.check(member)
        except MissingWeightsError:
            return None, f"scratch ({member} not found)"
        return member, f"pretrained:{member}{check.note()}"

    def train_ids(self, unit: Unit, trial: Trial | None = None) -> list[str]:
        """The unit's train stages: one, or one per fine-tuning init of an ensemble (the id names the init),
        per trial (``--seeds``/``--train-images``: the id ends with the trial's tag)."""
        members = self.model_cfg.finetune_members()
        base = f"{self.spec.model}/train/{unit.name}"
        ids = [base] if len(members) == 1 else [f"{base}/{m}" for m in members]
        return [i + (trial.suffix if trial else "") for i in ids]

    def trials(self) -> list[Trial]:
        """The fine-tunings of every unit: seeds × nested training-set sizes, or the run's one (untagged)."""
        if self.spec.seeds is None and self.spec.train_images is None:
            return [Trial(self.spec.seed)]
        sizes = tuple(self.spec.train_images or (efficiency.ALL,))
        efficiency.nested_subsets([s.name for s in self.split(self.data.train)], sizes, 0)  # sizes fit the split
        return [Trial(seed, size) for seed in (self.spec.seeds or (self.spec.seed,)) for size in sizes]

    def trial_of(self, stage: Stage) -> Trial:
        """A stage's trial (zero-shot and results stages: the run's untagged one)."""
        if not stage.trial:
            return Trial(self.spec.seed)
        return next(t for t in self.trials() if t.tag == stage.trial)

    def train_subset(self, trial: Trial) -> list[Sample]:
        """The training images of a trial: its seed's nested subset of the train split (all when untagged)."""
        samples = self.split(self.data.train)
        if trial.size is None:
            return samples
        names = set(efficiency.nested_subsets([s.name for s in samples], (trial.size,), trial.seed)[trial.size])
        return [s for s in samples if s.name in names]

    def subsets_record(self) -> dict[str, list[str]]:
        """``trial tag → training image names`` (written to ``train_subsets.json`` of a run with trials)."""
        return {t.tag: [s.name for s in self.train_subset(t)] for t in self.trials() if t.tag}

    def _member(self, stage: Stage) -> tuple[int, str | None]:
        """``(index, init)`` of a train stage's ensemble member (index 0, the only init, for a single model)."""
        members = self.model_cfg.finetune_members()
        k = members.index(stage.member) if stage.member else 0
        return k, members[k]

    def stages(self) -> list[Stage]:
        """Every stage of this bench in a valid sequential order (mode → unit → subset), results last."""
        model, out, evaluations = self.spec.model, [], []
        for mode in self.spec.modes:
            for unit in self.units:
                if mode == "zero_shot" and self.zero_shot(unit)[2]:
                    continue  # skipped rows are written by the results stage, with the reason
                for trial in self.trials() if mode == "finetuned" else [Trial(self.spec.seed)]:
                    deps: tuple[str, ...] = ()
                    if mode == "finetuned":
                        members = self.model_cfg.finetune_members()
                        names = [m or "" for m in members] if len(members) > 1 else [""]
                        trains = [Stage(sid, "train", model, unit=unit.name, member=m, trial=trial.tag)
                                  for sid, m in zip(self.train_ids(unit, trial), names, strict=True)]
                        out += trains
                        deps = tuple(t.id for t in trains)
                    for ref in self.refs(unit):
                        tail = f"{mode}/{unit.name}/{_safe(ref)}{trial.suffix}"
                        predict = Stage(f"{model}/predict/{tail}", "predict", model, deps, mode, unit.name, ref,
                                        trial=trial.tag)
                        evaluate = Stage(f"{model}/evaluate/{tail}", "evaluate", model, (predict.id,), mode,
                                         unit.name, ref, trial=trial.tag)
                        out += [predict, evaluate]
                        evaluations.append(evaluate.id)
        out.append(Stage(f"{model}/results", "results", model, tuple(evaluations)))
        return out

    # ------------------------------------------------------------------ keys and records

    def stage(self, stage_id: str) -> Stage:
        """A stage of this plan by id."""
        if self._index is None:
            self._index = {s.id: s for s in self.stages()}
        if stage_id not in self._index:
            raise ConfigError(f"no stage {stage_id!r} in the bench of {self.spec.model}")
        return self._index[stage_id]

    def key(self, stage: Stage) -> str:
        """Hash of everything a stage's output depends on (`harness.keys`): its settings, the contents of the
        files it reads, its code, and for each stage it needs that stage's key and its outputs' digests.

        A key is remembered only once every stage it needs is done (their outputs are then part of it).
        """
        if stage.id in self._keys:
            return self._keys[stage.id]
        upstream, settled = [], True
        for dep in (self.stage(d) for d in stage.deps):
            dep_key, rec = self.key(dep), self.record(dep)
            done = rec.get("state") == "done" and rec.get("key") == dep_key
            upstream.append([dep_key, keys.outputs_digest(self.run_dir, rec.get("outputs", {})) if done else None])
            settled = settled and done and dep.id in self._keys
        inputs = self._inputs(stage)
        if self.rehearse:  # a rehearsal never reuses a real stage, nor the reverse
            inputs["rehearse"] = self.rehearse
        key = stage_key({"kind": stage.kind, **inputs, **envs.key_fields(self.cls, stage),
                         "upstream": upstream, "code": keys.code_digest(stage.kind, self.spec.model)})
        if settled:
            self._keys[stage.id] = key
        return key

    def _inputs(self, stage: Stage) -> dict[str, Any]:
        """A stage's own inputs, by content: settings it uses, digests of the data and weights files it reads."""
        if stage.kind == "results":
            return {"config": self.resolved_config()}
        cfg, seed, unit = self.model_cfg, self.trial_of(stage).seed, self.unit(stage.unit)
        if stage.kind == "train":  # predict-only params do not change a training
            k, member = self._member(stage)
            init = self.finetune_init(member)[0]
            params = {name: v for name, v in cfg.params.items() if name not in self.cls.predict_params}
            subset = ({"train_images": [s.name for s in self.train_subset(self.trial_of(stage))]}
                      if stage.trial else {})
            return {"params": params, "schedule": cfg.train, "init": [init, keys.weights_digest(init)],
                    "unit": unit.train_as, "seed": seed + k, **subset,
                    "data": keys.data_digest(self.data, [self.data.train, self.data.valid])}
        if stage.kind == "predict":
            zero = stage.mode == "zero_shot"
            names = list(self.zero_shot(unit)[0]) if zero else []
            params = {**cfg.params, **cfg.zero_shot_params} if zero else cfg.params  # what _stage_predict builds
            return {"params": params, "mode": stage.mode, "weights": [names, keys.weights_digest(names or None)],
                    "unit": unit.train_as, "seed": seed,
                    "data": keys.data_digest(self.data, [stage.ref], annotations=False)}
        part = self.data.targets_of(stage.ref)  # evaluate
        targets = {t: [list(part[t]), pred_categories(unit, t, self.data)] for t in unit.targets if t in part}
        return {"boundary": self.spec.boundary, "bootstrap": self.spec.bootstrap, "seed": self.spec.seed,
                "gt_modes": GT_MODES, **({"trial": stage.trial} if stage.trial else {}),
                "targets": targets, "merge_iou": cfg.merge_iou,
                "gt": keys.data_digest(self.data, [stage.ref], images=False)}

    def record_path(self, stage: Stage) -> Path:
        return record_path(self.run_dir, stage.id)

    def log_path(self, stage: Stage) -> Path:
        return self.run_dir / "logs" / f"{stage.id.split('/', 1)[1].replace('/', '__')}.log"

    def record(self, stage: Stage) -> dict[str, Any]:
        return read_record(self.record_path(stage))

    def output(self, rec: dict[str, Any], name: str) -> Path:
        """An output of a stage record; stored relative to the run dir so a run dir can be moved."""
        return self.run_dir / rec["outputs"][name]

    def is_done(self, stage: Stage) -> bool:
        """Finished with the same inputs (key) and its outputs still on disk."""
        rec = self.record(stage)
        return (rec.get("state") == "done" and rec.get("key") == self.key(stage)
                and all((self.run_dir / p).exists() for p in rec.get("outputs", {}).values()))

    def _write_record(self, stage: Stage, **fields: Any) -> None:
        """Write a stage record; a failure is recorded even on a full disk (`harness.io.write_json_or_overwrite`)."""
        payload = {"id": stage.id, "kind": stage.kind, **fields}
        (write_json_or_overwrite if fields.get("state") == "failed" else write_json)(self.record_path(stage), payload)

    # ------------------------------------------------------------------ execution

    def execute(self, stage: Stage) -> None:
        """Run one stage (its dependencies must be done), logging to ``logs/<stage>.log``; records its state.

        The stage's lock is held meanwhile: another process asked to run it fails naming this one.
        """
        with stage_lock(self.record_path(stage), stage.id):
            self._execute(stage)

    def _execute(self, stage: Stage) -> None:
        key = self.key(stage)
        log = self.log_path(stage)
        base = {"key": key, "log": str(log), "host": platform.node(), "pid": os.getpid(),
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        start = time.perf_counter()
        handler: logging.Handler | None = None
        try:  # from the "running" record on: an interrupt anywhere after it is recorded as one
            self._write_record(stage, state="running", **base)
            handler = _attach_log(log)
            if self.spec.threads and stage.uses_gpu:
                import torch

                torch.set_num_threads(self.spec.threads)  # float reductions depend on the thread count
            logger.info("stage %s: start (key %s)", stage.id, key)
            outputs = getattr(self, f"_stage_{stage.kind}")(stage)
        except BaseException as exc:
            error = (f"{type(exc).__name__}: {exc}" if not isinstance(exc, KeyboardInterrupt) else
                     "interrupted (Ctrl-C, or the launcher that started it stopped); run the bench again to resume")
            if isinstance(exc, OSError):
                error = f"{type(exc).__name__}: {describe_os_error(exc)}"
            if isinstance(exc, (C6BenchError, OSError, KeyboardInterrupt)):  # a message, not a bug: no traceback
                logger.error("stage %s failed: %s", stage.id, error)
            else:
                logger.exception("stage %s failed", stage.id)
            self._write_record(stage, state="failed", error=error, seconds=round(time.perf_counter() - start, 2),
                               **base)
            raise
        finally:
            if handler is not None:
                logging.getLogger().removeHandler(handler)
                handler.close()
        imported = envs.imported_versions([*PACKAGES, *self.cls.requirements]) if stage.uses_gpu else {}
        self._write_record(stage, state="done", seconds=round(time.perf_counter() - start, 2),
                           outputs={k: os.path.relpath(v, self.run_dir) for k, v in outputs.items()},
                           imported=imported, **base)
        logger.info("stage %s: done in %.1f s", stage.id, time.perf_counter() - start)

    def run(self) -> Path:
        """Execute the plan in this process (the ``local`` launcher with one worker); returns the run dir."""
        from harness.launch import Plan, run_local

        with run_dir_lock(self.run_dir):
            run_local(Plan.create([self], self.run_dir), workers=1)
        return self.run_dir

    def _dependencies(self, stage: Stage, kind: str) -> list[dict[str, Any]]:
        """The records of the stages of `kind` this one needs (in plan order); they must be done."""
        recs = []
        for dep in (self.stage(d) for d in stage.deps if self.stage(d).kind == kind):
            rec = self.record(dep)
            if rec.get("state") != "done":
                raise ConfigError(f"stage {stage.id} needs {dep.id}, which is not done (state: {rec.get('state')}); "
                                  f"run the bench again to resume")
            recs.append(rec)
        return recs

    def _dependency(self, stage: Stage, kind: str) -> dict[str, Any]:
        return self._dependencies(stage, kind)[0]

    def _stage_train(self, stage: Stage) -> dict[str, Path]:
        """Fine-tune one unit (one ensemble member) from its init (random when absent, recorded as scratch)."""
        unit, trial = self.unit(stage.unit), self.trial_of(stage)
        k, member = self._member(stage)
        weights, init = self.finetune_init(member)
        if weights is None and member:
            logger.warning("fine-tuning %s from random init: weights %s not found (c6bench weights fetch %s)",
                           unit.name, member, member)
        _seed_everything(trial.seed + k)  # member k of an ensemble: its own seed, so random inits differ
        schedule = dict(self.model_cfg.train)
        if stage.trial and isinstance(schedule.get("seed"), int):
            schedule["seed"] = trial.seed  # a trial's seed replaces the schedule's (the experiment dimension)
        if k and isinstance(schedule.get("seed"), int):
            schedule["seed"] += k  # adapters that still read a schedule seed (cellseg1); they move to adapter.seed
        adapter = self.cls.build(self.model_cfg.params, weights=weights, device=self.device, seed=trial.seed + k)
        subset = self.train_subset(trial)
        train = training_samples(subset, unit)
        valid = training_samples(self.split(self.data.valid), unit)
        work = self.run_dir / "checkpoints" / unit.name / stage.member / stage.trial / f"work-{self.key(stage)}"
        if stage.trial:
            logger.info("trial %s: seed %d, %d training image(s): %s", stage.trial, trial.seed, len(subset),
                        ", ".join(s.name for s in subset))
        checkpoint = adapter.train(train, valid, work, **schedule)
        used = [integrity.check(weights).to_dict()] if weights else []
        extra = {"seed": trial.seed, "train_images": [s.name for s in subset]} if stage.trial else {}
        write_json(work / "init.json", {"init": init, "weights": used, **extra})
        return {"checkpoint": Path(checkpoint), "init": work / "init.json"}

    def _stage_predict(self, stage: Stage) -> dict[str, Path]:
        """Predict one subset with one unit's model(s): zero-shot weights or the fine-tuned checkpoint(s).

        Several (a listed ensemble) are handed to the adapter's `load_ensemble`; what predicted is written
        to ``<subset>.models.json`` (weights checks, or the checkpoints).
        """
        from tqdm import tqdm

        unit = self.unit(stage.unit)
        params, device = self.model_cfg.params, self.device
        _seed_everything(self.trial_of(stage).seed)
        stem = _safe(stage.ref) + (f".{stage.trial}" if stage.trial else "")
        if stage.mode == "zero_shot":
            params = {**params, **self.model_cfg.zero_shot_params}  # what the zero-shot rows run (config)
            names = self.zero_shot(unit)[0]
            checks = [integrity.check(name) for name in names]
            paths, used = [c.path for c in checks], [c.to_dict() for c in checks]
            adapter = self.cls.build(params, weights=names[0] if len(names) == 1 else None, device=device,
                                     seed=self.trial_of(stage).seed)
        else:
            paths = [self.output(rec, "checkpoint") for rec in self._dependencies(stage, "train")]
            used = []
            adapter = self.cls.build(params, weights=None, device=device, seed=self.trial_of(stage).seed)
        if len(paths) > 1:
            adapter.load_ensemble(paths)
        elif stage.mode != "zero_shot":
            adapter.load(paths[0])
        models = self.run_dir / "predictions" / stage.mode / unit.name / f"{stem}.models.json"
        write_json(models, {"models": [os.path.relpath(p, self.run_dir) if stage.mode != "zero_shot" else str(p)
                                       for p in paths], "ensemble": len(paths) > 1, "weights": used,
                            # how zero-shot weights run, in the adapter's words (appended to the row's init)
                            "run_note": adapter.run_note if stage.mode == "zero_shot" else ""})
        path = self.run_dir / "predictions" / stage.mode / unit.name / f"{stem}.json"
        predicted, categories = [], list(unit.train_as)
        for sample in tqdm(self.split(stage.ref), desc=f"predict {stage.mode}/{unit.name}/{stage.ref}",
                           unit="image"):
            instances = adapter.predict(sample.load_image())
            if unit.name != "all":
                instances = [i.with_category(unit.name) for i in instances]
            unknown = {i.category for i in instances} - set(categories)
            if unknown:
                raise ConfigError(f"model {self.spec.model} predicted unknown class(es) {sorted(unknown)}; "
                                  f"it was trained on {categories}")
            predicted.append(sample.with_instances(instances))
        write_predictions(path, predicted, categories)
        return {"predictions": path, "models": models}

    def _stage_evaluate(self, stage: Stage) -> dict[str, Path]:
        """Score one subset's predictions for every target of the unit annotated there, both GT modes."""
        unit = self.unit(stage.unit)
        pred_path = self.output(self._dependency(stage, "predict"), "predictions")
        init = self._init_of(stage.mode, unit, self._dependency(stage, "predict"), self.trial_of(stage))
        gt = self.split(stage.ref)
        part_targets = self.data.targets_of(stage.ref)
        pred, _ = load_coco(pred_path, images_dir=None)
        pred_by_name = {p.file_name: p for p in pred}
        rows, per_image = [], []
        for target in unit.targets:
            if target not in part_targets:
                continue
            pred_cats = pred_categories(unit, target, self.data)
            if not pred_cats:  # e.g. type_a for a model that learns [cells, soma]: nothing to score, not zero
                rows.append(self._row(stage.mode, target, stage.ref, "skipped", f"{self.spec.model} learns the "
                                      f"classes {', '.join(unit.train_as)}; none of them counts for {target}", init,
                                      trial=self.trial_of(stage)))
                continue
            kept = [g.with_instances(i for i in pred_by_name[g.file_name].instances if i.category in pred_cats)
                    if g.file_name in pred_by_name else g.with_instances(()) for g in gt]
            kept, merged = merge_classes(kept, pred_cats, self.model_cfg.merge_iou, target)
            metrics = {}
            for gt_mode, rule in GT_MODES.items():
                ev = evaluate(gt, kept, {target: list(part_targets[target])}, {target: pred_cats},
                              boundary=self.spec.boundary, resolve_gt=rule, bootstrap=self.spec.bootstrap,
                              seed=self.spec.seed)
                metrics[gt_mode] = ev.to_dict()["targets"][target]
                metrics[gt_mode]["settings"] = {**{k: ev.settings[k] for k in ("boundary", "resolve_gt", "min_pixels")},
                                                "class_merge": merged}
                for r in ev.per_image_rows():
                    per_image.append({"model": self.spec.model, "mode": stage.mode, "subset": stage.ref,
                                      "gt_mode": gt_mode, **r})
            rows.append(self._row(stage.mode, target, stage.ref, "ok", "", init, metrics, len(gt),
                                  self.trial_of(stage)))
        path = (self.run_dir / "evaluations" / stage.mode / unit.name
                / f"{_safe(stage.ref)}{'.' + stage.trial if stage.trial else ''}.json")
        write_json(path, {"rows": rows, "per_image": per_image})
        return {"evaluation": path}

    def _init_of(self, mode: str, unit: Unit, predict: dict[str, Any], trial: Trial) -> str:
        if mode == "zero_shot":
            models = self.output(predict, "models") if "models" in predict.get("outputs", {}) else None
            note = json.loads(models.read_text()).get("run_note", "") if models and models.is_file() else ""
            return self.zero_shot(unit)[1] + note
        inits = []
        for sid, member in zip(self.train_ids(unit, trial), self.model_cfg.finetune_members(), strict=True):
            rec = self.record(self.stage(sid))
            done = "init" in rec.get("outputs", {})
            inits.append(json.loads(self.output(rec, "init").read_text())["init"] if done
                         else self.finetune_init(member)[1])
        return " + ".join(inits)

    def weights_used(self) -> list[dict[str, Any]]:
        """Every weights file a finished stage used (name, path, sha256, verified) with the stages that used it."""
        used: dict[tuple[str, str], dict[str, Any]] = {}
        for stage in self.stages():
            rec = self.record(stage)
            name = {"train": "init", "predict": "models"}.get(stage.kind)
            if rec.get("state") != "done" or name not in rec.get("outputs", {}):
                continue
            for entry in json.loads(self.output(rec, name).read_text()).get("weights", []):
                item = used.setdefault((entry["path"], entry["sha256"]), {**entry, "stages": []})
                item["stages"].append(stage.id)
        return list(used.values())

    def _stage_results(self, stage: Stage) -> dict[str, Path]:
        """Collect every evaluation (and the skipped rows, with reasons) into the result files, in plan order."""
        rows: list[dict[str, Any]] = []
        per_image: list[dict[str, Any]] = []
        seconds: dict[str, float] = {}
        imported: dict[str, dict[str, str]] = {}
        tagged = bool(self.trials()[0].tag)  # --seeds/--train-images: rows and per-image records name their trial
        for mode in self.spec.modes:
            for unit in self.units:
                if mode == "zero_shot":
                    _, init, reason = self.zero_shot(unit)
                    if reason:
                        rows += self._skip(mode, unit, reason, init)
                        continue
                for trial in self.trials() if mode == "finetuned" else [Trial(self.spec.seed)]:
                    for ref in self.refs(unit):
                        ev = self.stage(f"{self.spec.model}/evaluate/{mode}/{unit.name}/{_safe(ref)}{trial.suffix}")
                        rec = self.record(ev)
                        if rec.get("state") != "done":
                            raise ConfigError(f"{ev.id} is not done; run the bench again to resume")
                        data = json.loads(self.output(rec, "evaluation").read_text())
                        rows += data["rows"]
                        per_image += [{**r, "trial": trial.tag} if tagged else r for r in data["per_image"]]
        for done in self.stages():
            rec = self.record(done)
            if done.kind != "results" and rec.get("state") == "done":
                seconds[done.id.split("/", 1)[1]] = rec.get("seconds")
                if rec.get("imported"):
                    imported[done.id.split("/", 1)[1]] = rec["imported"]
        write_text(self.run_dir / "config.yaml", yaml.safe_dump(self.resolved_config(), sort_keys=False))
        if self.trials()[0].tag:
            write_json(self.run_dir / "train_subsets.json", self.subsets_record(), indent=1)
        self._write_results(rows, per_image, seconds, imported)
        return {"results": self.run_dir / "results.json"}

    def _row(self, mode: str, target: str, ref: str, status: str, reason: str, init: str,
             metrics: dict[str, Any] | None = None, n_images: int | None = None, trial: Trial | None = None
             ) -> dict[str, Any]:
        dims = {}  # a trial's seed and training-set size (images), only in runs with --seeds/--train-images
        if trial is not None and trial.tag:
            dims = {"seed": trial.seed, "train_images": len(self.train_subset(trial))}
        return {"model": self.spec.model, "mode": mode, "target": target, "subset": ref, "status": status,
                "reason": reason, "init": init, "profile": self.spec.profile, "rehearsal": bool(self.rehearse),
                "n_images": n_images, **dims,
                "metrics": metrics or {}}

    def _skip(self, mode: str, unit: Unit, reason: str, init: str) -> list[dict[str, Any]]:
        return [self._row(mode, t, ref, "skipped", reason, init)
                for ref in self.data.evaluate for t in unit.targets if t in self.data.targets_of(ref)]

    # ------------------------------------------------------------------ outputs

    def _write_results(self, rows: list[dict[str, Any]], per_image: list[dict[str, Any]],
                       seconds: dict[str, float], imported: dict[str, dict[str, str]]) -> None:
        env = envs.of(self.cls)
        manifest = {"model": self.spec.model, "profile": self.spec.profile, "device": self.device,
                    "seed": self.spec.seed, "threads": self.spec.threads, "git": git_hash(),
                    "versions": envs.versions(self.cls, versions()),
                    "environment": {"path": str(env.path), **env.record()} if env else None,
                    "imported": imported, "data": self.data.name, "rehearsal": rehearsal.summary(self.rehearse),
                    "wall_seconds": seconds,
                    "weights": self.weights_used(),
                    "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        write_json(self.run_dir / "manifest.json", manifest)
        write_json(self.run_dir / "results.json", {"model": self.spec.model, "profile": self.spec.profile,
                                                   "data": self.data.name,
                                                   "rehearsal": rehearsal.summary(self.rehearse), "rows": rows})
        write_text(self.run_dir / "results.csv", results_csv(rows))
        markdown = results_markdown(rows, rehearse=self.rehearse)
        if self.trials()[0].tag:
            markdown += "\n" + efficiency.seeds_markdown(rows)
        write_text(self.run_dir / "results.md", markdown)
        write_text(self.run_dir / "per_image.csv", _csv(per_image))


def _attach_log(path: Path) -> logging.Handler:
    """Send everything logged while a stage runs to its own file (what ``c6bench status`` points at)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    return handler


COLUMNS = (("P@0.5", "0.5", "precision"), ("R@0.5", "0.5", "recall"), ("F1@0.5", "0.5", "f1"),
           ("AP@0.5", "0.5", "ap"), ("AP@0.75", "0.75", "ap"), ("AP@0.9", "0.9", "ap"))


def flat_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One flat record per result row: identity columns + the six scores for each GT mode (fractions)."""
    out, trials = [], any("train_images" in row for row in rows)
    for row in rows:
        flat = {k: row[k] for k in ("model", "mode", "target", "subset", "status", "reason", "init", "profile")}
        flat["rehearsal"] = bool(row.get("rehearsal"))
        flat["n_images"] = row["n_images"]
        if trials:  # a run with --seeds/--train-images (zero-shot rows: empty)
            flat["seed"], flat["train_images"] = row.get("seed"), row.get("train_images")
        for gt_mode in GT_MODES:
            pooled = row["metrics"].get(gt_mode, {}).get("pooled", {})
            for name, threshold, key in COLUMNS:
                flat[f"{gt_mode} {name}"] = pooled.get(threshold, {}).get(key)
        out.append(flat)
    return out


def _csv(records: Sequence[dict[str, Any]]) -> str:
    if not records:
        return ""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(records[0]))
    writer.writeheader()
    writer.writerows(records)
    return buffer.getvalue()


def results_csv(rows: Sequence[dict[str, Any]]) -> str:
    """``results.csv``: flat rows, fractions in [0, 1]."""
    return _csv(flat_rows(rows))


def results_markdown(rows: Sequence[dict[str, Any]], rehearse: int | None = None) -> str:
    """``results.md``: the paper's Table 2 (overlapping GT) and Table 4 (priority-resolved GT), in percent."""
    lines = [rehearsal.banner(rehearse)] if rehearse else []
    for gt_mode, title in (("overlap", "Table 2 — overlapping ground truth"),
                           ("resolved", "Table 4 — priority-resolved ground truth (rule: last)")):
        lines += [f"### {title}", "",
                  "| model | mode | target | subset | init | " + " | ".join(c[0] for c in COLUMNS) + " |",
                  "|---|---|---|---|---|" + "---:|" * len(COLUMNS)]
        for row in rows:
            trial = f" · seed {row['seed']}, {row['train_images']} train img" if "train_images" in row else ""
            head = f"| {row['model']} | {row['mode']} | {row['target']} | {row['subset']} | {row['init']}{trial} |"
            if row["status"] != "ok":
                lines.append(head + f" skipped: {row['reason']} |" + " |" * (len(COLUMNS) - 1))
                continue
            pooled = row["metrics"][gt_mode]["pooled"]
            lines.append(head + "".join(f" {100 * pooled[t][k]:.1f} |" for _, t, k in COLUMNS))
        lines.append("")
    lines.append("Scores pooled over images (TP/FP/FN summed per target), AP = TP/(TP+FP+FN) (cellpose-style); "
                 "instances touching the 2-px image frame removed from GT and predictions separately.")
    return "\n".join(lines) + "\n"


def run_bench(spec: BenchSpec) -> Path:
    """Run a bench in this process and return its run dir."""
    return Runner(spec).run()
