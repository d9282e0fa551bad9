"""The experiment runner behind ``c6bench bench``: executes the stages that `harness.planner` plans.

A :class:`Runner` is one model's bench (`harness.planner.Planner`) that executes one stage at a time
(train, predict, evaluate, results), logging to the stage's own file and leaving its record under
``stages/``. `execute` runs a stage of a `harness.plan.Plan` here or, for a model with its own environment,
in a child process under it; `run_stage` is the body of a worker process and of a cluster job. Files are
written to a temporary name and renamed, so a killed run never leaves half a file. The launchers
(`harness.launch_local`, `harness.launch_slurm`) build on this module, never the reverse.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from harness import efficiency, envs, rehearsal
from harness.classes import Unit, merge_classes, pred_categories, training_split
from harness.coco import load_coco
from harness.concurrency import run_dir_lock, stage_lock
from harness.errors import C6BenchError, ConfigError
from harness.evaluate import evaluate
from harness.io import describe_os_error, write_json, write_json_or_overwrite, write_text
from harness.manifest import PACKAGES, git_hash, versions
from harness.plan import BenchSpec, Plan, Stage, Trial, safe_ref
from harness.planner import Planner
from harness.predictions import PredictionFile, write_predictions
from harness.results import GT_MODES, ResultRow, parse_rows, write_result_files
from harness.weights import check as check_weights

logger = logging.getLogger(__name__)


class StageFailed(C6BenchError):
    """One or more stages failed; the message lists them with their logs."""


# --------------------------------------------------------------------------------------------- runner


class Runner(Planner):
    """One model's bench: its plan (`harness.planner.Planner`) and the execution of one stage at a time."""

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
        with run_dir_lock(self.run_dir):
            run_in_process(Plan.create([self], self.run_dir))
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
        adapter = self.cls.build(self.model_cfg.params, weights=weights, device=self.device, seed=trial.seed + k)
        subset = self.train_subset(trial)
        train, valid = (training_split(samples, unit, self.model_cfg, self.cls.needs_label_maps,  # overlaps flattened
                                       f"{stage.id}: {what}")
                        for samples, what in ((subset, "train"), (self.split(self.data.valid), "valid")))
        work = self.run_dir / "checkpoints" / unit.name / stage.member / stage.trial / f"work-{self.key(stage)}"
        if stage.trial:
            logger.info("trial %s: seed %d, %d training image(s): %s", stage.trial, trial.seed, len(subset),
                        ", ".join(s.name for s in subset))
        checkpoint = adapter.train(train, valid, work, **self.model_cfg.train)
        used = [check_weights(weights).to_dict()] if weights else []
        extra = {"seed": trial.seed, "train_images": [s.name for s in subset]} if stage.trial else {}
        write_json(work / "init.json", {"init": init, "weights": used, "versions": adapter.versions(), **extra})
        return {"checkpoint": Path(checkpoint), "init": work / "init.json"}

    def _stage_predict(self, stage: Stage) -> dict[str, Path]:
        """Predict one subset with one unit's model(s): zero-shot weights or the fine-tuned checkpoint(s).

        Several (a listed ensemble) are handed to the adapter's `load_ensemble`; what predicted is written
        to ``<subset>.models.json`` (weights checks, or the checkpoints), with the `PredictionFile` record.
        """
        from tqdm import tqdm

        unit = self.unit(stage.unit)
        params, device = self.model_cfg.params, self.device
        _seed_everything(self.trial_of(stage).seed)
        stem = safe_ref(stage.ref) + (f".{stage.trial}" if stage.trial else "")
        if stage.mode == "zero_shot":
            params = {**params, **self.model_cfg.zero_shot_params}  # what the zero-shot rows run (config)
            names = self.zero_shot(unit)[0]
            checks = [check_weights(name) for name in names]
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
        path = self.run_dir / "predictions" / stage.mode / unit.name / f"{stem}.json"
        predicts = PredictionFile(mode=stage.mode, target=unit.name, subset=stage.ref, path=path, trial=stage.trial)
        models = predicts.models_path  # its record says which subset it is: no reader guesses it from the name
        write_json(models, {**predicts.record(),
                            "models": [os.path.relpath(p, self.run_dir) if stage.mode != "zero_shot" else str(p)
                                       for p in paths], "ensemble": len(paths) > 1, "weights": used,
                            "versions": adapter.versions(),
                            # how zero-shot weights run, in the adapter's words (appended to the row's init)
                            "run_note": adapter.run_note if stage.mode == "zero_shot" else ""})
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
        pred, _ = load_coco(pred_path, images_dir=None, predictions=True)
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
                / f"{safe_ref(stage.ref)}{'.' + stage.trial if stage.trial else ''}.json")
        write_json(path, {"rows": [row.to_dict() for row in rows], "per_image": per_image})
        return {"evaluation": path}

    def _stage_results(self, stage: Stage) -> dict[str, Path]:
        """Collect every evaluation (and the skipped rows, with reasons) into the result files, in plan order."""
        rows: list[ResultRow] = []
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
                        ev = self.stage(f"{self.spec.model}/evaluate/{mode}/{unit.name}/{safe_ref(ref)}{trial.suffix}")
                        rec = self.record(ev)
                        if rec.get("state") != "done":
                            raise ConfigError(f"{ev.id} is not done; run the bench again to resume")
                        path = self.output(rec, "evaluation")
                        data = json.loads(path.read_text())
                        rows += parse_rows(data, path)
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
             ) -> ResultRow:
        seed = size = None  # a trial's seed and training-set size (images), only in runs with --seeds/--train-images
        if trial is not None and trial.tag:
            seed, size = trial.seed, len(self.train_subset(trial))
        return ResultRow(model=self.spec.model, mode=mode, target=target, subset=ref, status=status, reason=reason,
                         init=init, profile=self.spec.profile, rehearsal=bool(self.rehearse), n_images=n_images,
                         seed=seed, train_images=size, metrics=metrics or {})

    def _skip(self, mode: str, unit: Unit, reason: str, init: str) -> list[ResultRow]:
        return [self._row(mode, t, ref, "skipped", reason, init)
                for ref in self.data.evaluate for t in unit.targets if t in self.data.targets_of(ref)]

    # ------------------------------------------------------------------ outputs

    def _write_results(self, rows: list[ResultRow], per_image: list[dict[str, Any]],
                       seconds: dict[str, float], imported: dict[str, dict[str, str]]) -> None:
        env = envs.of(self.cls)
        manifest = {"model": self.spec.model, "profile": self.spec.profile, "device": self.device,
                    "seed": self.spec.seed, "threads": self.spec.threads, "git": git_hash(),
                    "versions": {**envs.versions(self.cls, versions()), **self.adapter_versions()},
                    "environment": {"path": str(env.path), **env.record()} if env else None,
                    "imported": imported, "data": self.data.name, "rehearsal": rehearsal.summary(self.rehearse),
                    "wall_seconds": seconds,
                    "weights": self.weights_used(),
                    "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        write_json(self.run_dir / "manifest.json", manifest)
        header = {"model": self.spec.model, "profile": self.spec.profile, "data": self.data.name,
                  "rehearsal": rehearsal.summary(self.rehearse)}
        seeds = "\n" + efficiency.seeds_markdown(rows) if self.trials()[0].tag else ""  # the over-seeds table
        write_result_files(self.run_dir, header, rows, per_image, self.rehearse, seeds)


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


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a declared dependency
        return
    torch.manual_seed(seed)


# --------------------------------------------------------------------------------------------- stages of a plan


def run_stage(root: str | Path, stage_id: str) -> str:
    """Execute one stage of a planned run (the body of a worker process and of a cluster job)."""
    plan = Plan.load(Path(root), make=Runner)
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


def run_in_process(plan: Plan) -> dict[str, str]:
    """Run every stage that is not done, here and in order (the ``local`` launcher with one worker).

    Fail-fast: the first failing stage's own exception reaches the caller. Returns the state of every stage run.
    """
    stages = plan.to_run()
    if not stages:
        logger.info("nothing to do: every stage of %s is done", plan.root)
        return {}
    states = {}
    for stage in stages:
        execute(plan, stage)
        states[stage.id] = "done"
    return states


def run_bench(spec: BenchSpec) -> Path:
    """Run a bench in this process and return its run dir."""
    return Runner(spec).run()
