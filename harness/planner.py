"""Planning one model's bench: its settings, data and units, its stages, their keys.

Plan: for each mode, the model is built (zero-shot weights, or trained from the fine-tuning init),
predicts every evaluation subset, and is scored per target against the overlapping annotations (paper
Table 2) and the priority-resolved ones (Table 4). Single-class adapters get one model per target;
a multiclass adapter one model for all, its classes mapped onto targets (`harness.classes`). A model YAML
that lists several fine-tuning inits gets one train stage per init (``<model>/train/<unit>/<init>``; member k
trains with seed + k) and predicts with their ensemble; several zero-shot weights are ensembled too.

Every stage is keyed by what it reads (`harness.keys`: settings, data and weights file contents, the outputs
of the stages it needs, its code); re-running with the same ``--out`` skips finished stages with the same key
and recomputes the rest. `harness.run.Runner` executes the stages.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import adapters
from harness import dataset as ds
from harness import efficiency, envs, keys, rehearsal
from harness.checks import check_bench_spec
from harness.classes import Unit, pred_categories, units_of
from harness.config import ModelConfig, load_model_config
from harness.errors import ConfigError, MissingWeightsError
from harness.plan import (
    MODES,
    BenchSpec,
    Stage,
    Trial,
    read_record,
    record_path,
    resolve_device,
    safe_ref,
    stage_key,
)
from harness.records import Sample
from harness.results import GT_MODES
from harness.weights import check as check_weights

logger = logging.getLogger(__name__)


class Planner:
    """One model's bench as a plan: its settings, data and units, its stages, their keys and records.

    Everything a launcher or ``c6bench status`` needs to decide what to run, without running anything;
    `harness.run.Runner` adds the execution of a stage.
    """

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
                inits.append(f"pretrained:{name}{check_weights(name).note()}")
            except MissingWeightsError as exc:
                inits.append(f"pretrained:{name}")
                missing.append(str(exc))
        return weights, " + ".join(inits), "; ".join(missing) or None

    def finetune_init(self, member: str | None) -> tuple[str | None, str]:
        """``(weights to start from, init description)``: a missing init file means random init, recorded."""
        if not member:
            return None, "scratch"
        try:
            check = check_weights(member)
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
                        tail = f"{mode}/{unit.name}/{safe_ref(ref)}{trial.suffix}"
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
            if self.cls.needs_label_maps:  # how Runner._stage_train flattens the training overlaps
                subset["label_maps"] = [cfg.label_rule, cfg.min_pixels]
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

    # ------------------------------------------------------------------ what finished stages recorded

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

    def _model_notes(self) -> Iterator[tuple[Stage, dict[str, Any]]]:
        """Each finished train / predict stage with what it recorded of its model (init.json, <subset>.models.json)."""
        for stage in self.stages():
            rec = self.record(stage)
            name = {"train": "init", "predict": "models"}.get(stage.kind)
            if rec.get("state") == "done" and name in rec.get("outputs", {}):
                yield stage, json.loads(self.output(rec, name).read_text())

    def weights_used(self) -> list[dict[str, Any]]:
        """Every weights file a finished stage used (name, path, sha256, verified) with the stages that used it."""
        used: dict[tuple[str, str], dict[str, Any]] = {}
        for stage, notes in self._model_notes():
            for entry in notes.get("weights", []):
                item = used.setdefault((entry["path"], entry["sha256"]), {**entry, "stages": []})
                item["stages"].append(stage.id)
        return list(used.values())

    def adapter_versions(self) -> dict[str, str]:
        """The package versions the adapter reported (`Adapter.versions`) in its finished stages, where they ran."""
        return {k: v for _, notes in self._model_notes() for k, v in notes.get("versions", {}).items()}
