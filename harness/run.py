"""The experiment runner behind ``c6bench bench``: zero-shot vs fine-tuned × targets × evaluation subsets.

Plan: for each mode, the model is built (zero-shot weights, or trained from the fine-tuning init),
predicts every evaluation subset, and is scored per target against the overlapping annotations (paper
Table 2) and the priority-resolved ones (Table 4). Single-class adapters get one model per target;
a multiclass adapter one model for all, its classes mapped onto targets.

Every stage (train, predict) is keyed by a hash of its resolved inputs and stored under the run dir, so
re-running with the same ``--out`` resumes: a finished stage with the same key is reused, a changed config
recomputes. Files are written to a temporary name and renamed.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import platform
import random
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

import adapters
from harness import dataset as ds
from harness import weights as weights_mod
from harness.config import ModelConfig, load_model_config
from harness.data import Sample, load_coco
from harness.errors import ConfigError, MissingWeightsError
from harness.evaluate import evaluate
from harness.predictions import write_json_atomic, write_predictions

logger = logging.getLogger(__name__)

MODES = ("zero_shot", "finetuned")
GT_MODES = {"overlap": None, "resolved": "last"}
PACKAGES = ("numpy", "scipy", "scikit-image", "pycocotools", "torch", "torchvision", "cellpose", "ultralytics",
            "segment-anything", "segmentation-models-pytorch", "peft")


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


@dataclass
class Unit:
    """One model to build: the targets it serves and how its predictions map onto them."""

    name: str  # target name, or "all" for a multiclass model
    targets: list[str]
    train_as: dict[str, list[str]]  # name it learns -> GT category names (of the training part)
    stage_times: dict[str, float] = field(default_factory=dict)


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


def _git_hash() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ds.REPO_ROOT, capture_output=True, text=True,
                             timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def _write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _units(cls: type, cfg: ds.DatasetConfig, targets: Sequence[str]) -> list[Unit]:
    train_targets = cfg.targets_of(cfg.train)
    if not cls.multiclass:
        return [Unit(name=t, targets=[t], train_as={t: list(train_targets[t])}) for t in targets]
    classes = list(cfg.classes or train_targets)
    return [Unit(name="all", targets=list(targets), train_as={c: list(train_targets[c]) for c in classes})]


def _pred_categories(unit: Unit, target: str, cfg: ds.DatasetConfig) -> list[str]:
    """Predicted category names that count for `target` (a class counts when its categories ⊂ the target's)."""
    if unit.name != "all":
        return [target]
    train_targets = cfg.targets_of(cfg.train)
    wanted = set(train_targets.get(target, ()))
    return [c for c, cats in unit.train_as.items() if set(cats) <= wanted]


def _training_samples(samples: Sequence[Sample], unit: Unit) -> list[Sample]:
    out = []
    for s in samples:
        out.append(s.with_instances(
            i.with_category(name) for i in s.instances for name, cats in unit.train_as.items() if i.category in cats
        ))
    return out


# --------------------------------------------------------------------------------------------- runner


class Runner:
    """Runs one bench: builds the plan, executes or reuses stages, writes results."""

    def __init__(self, spec: BenchSpec) -> None:
        self.spec = spec
        self.model_cfg: ModelConfig = load_model_config(spec.model, spec.profile)
        self.cls = adapters.get(spec.model)
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
        self.run_dir = Path(spec.out) if spec.out else ds.REPO_ROOT / "runs" / f"{stamp}_{spec.model}"
        self._splits: dict[str, list[Sample]] = {}
        self.timings: dict[str, float] = {}

    # ------------------------------------------------------------------ data

    def split(self, ref: str) -> list[Sample]:
        if ref not in self._splits:
            self._splits[ref] = ds.load_split(self.data, ref)
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
            "profile": self.spec.profile,
            "evaluation": {"boundary": self.spec.boundary, "thresholds": [0.5, 0.75, 0.9],
                           "gt_modes": GT_MODES, "bootstrap": self.spec.bootstrap},
        }

    # ------------------------------------------------------------------ stages

    def _train(self, unit: Unit) -> tuple[Path, str]:
        """Fine-tune one unit (or reuse a finished stage); returns (checkpoint, init description)."""
        init_name = self.model_cfg.finetune_init
        init_note = "scratch"
        weights: str | None = None
        if init_name:
            try:
                weights_mod.resolve(init_name)
                weights, init_note = init_name, f"pretrained:{init_name}"
            except MissingWeightsError as exc:
                init_note = f"scratch ({init_name} not found)"
                logger.warning("fine-tuning %s from random init: %s", unit.name, exc)
        key = stage_key({"model": self.model_cfg.to_dict(), "init": weights, "unit": unit.train_as,
                         "data": [self.data.train, self.data.valid, str(self.data.root)], "seed": self.spec.seed})
        stage_dir = self.run_dir / "checkpoints" / unit.name
        marker = stage_dir / "stage.json"
        if marker.is_file():
            done = json.loads(marker.read_text())
            if done.get("key") == key and Path(done["checkpoint"]).exists():
                logger.info("train %s: reusing finished stage %s", unit.name, key)
                return Path(done["checkpoint"]), done["init"]
        _seed_everything(self.spec.seed)
        adapter = self.cls.build(self.model_cfg.params, weights=weights, device=self.device)
        train = _training_samples(self.split(self.data.train), unit)
        valid = _training_samples(self.split(self.data.valid), unit)
        start = time.perf_counter()
        work = stage_dir / f"work-{key}"
        checkpoint = adapter.train(train, valid, work, **self.model_cfg.train)
        self.timings[f"train/{unit.name}"] = round(time.perf_counter() - start, 2)
        write_json_atomic(marker, {"key": key, "checkpoint": str(checkpoint), "init": init_note,
                                   "seconds": self.timings[f"train/{unit.name}"]})
        return Path(checkpoint), init_note

    def _predict(self, mode: str, unit: Unit, adapter_factory: Any, ref: str, key_extra: dict[str, Any]) -> Path:
        """Predict one subset with one unit's model (or reuse the finished stage)."""
        from tqdm import tqdm

        path = self.run_dir / "predictions" / mode / unit.name / f"{ref.replace('/', '_')}.json"
        marker = path.with_name(path.name + ".stage")  # not *.json: predictions/ holds only prediction files
        key = stage_key({"model": self.model_cfg.to_dict(), "ref": ref, "root": str(self.data.root), **key_extra})
        if path.is_file() and marker.is_file() and json.loads(marker.read_text()).get("key") == key:
            logger.info("predict %s/%s/%s: reusing finished stage", mode, unit.name, ref)
            return path
        adapter = adapter_factory()
        samples = self.split(ref)
        predicted, categories = [], list(unit.train_as)
        start = time.perf_counter()
        for sample in tqdm(samples, desc=f"predict {mode}/{unit.name}/{ref}", unit="image"):
            instances = adapter.predict(sample.load_image())
            if unit.name != "all":
                instances = [i.with_category(unit.name) for i in instances]
            unknown = {i.category for i in instances} - set(categories)
            if unknown:
                raise ConfigError(f"model {self.spec.model} predicted unknown class(es) {sorted(unknown)}; "
                                  f"it was trained on {categories}")
            predicted.append(sample.with_instances(instances))
        self.timings[f"predict/{mode}/{unit.name}/{ref}"] = round(time.perf_counter() - start, 2)
        write_predictions(path, predicted, categories)
        write_json_atomic(marker, {"key": key, "seconds": self.timings[f"predict/{mode}/{unit.name}/{ref}"]})
        return path

    def _evaluate(self, mode: str, unit: Unit, ref: str, pred_path: Path, init: str) -> tuple[list, list]:
        """Score one subset's predictions for every target of the unit defined on that subset."""
        gt = self.split(ref)
        part_targets = self.data.targets_of(ref)
        pred, _ = load_coco(pred_path, images_dir=None)
        pred_by_name = {p.file_name: p for p in pred}
        rows, per_image = [], []
        for target in unit.targets:
            if target not in part_targets:
                continue
            pred_cats = _pred_categories(unit, target, self.data)
            kept = [g.with_instances(i for i in pred_by_name[g.file_name].instances if i.category in pred_cats)
                    if g.file_name in pred_by_name else g.with_instances(()) for g in gt]
            metrics = {}
            for gt_mode, rule in GT_MODES.items():
                ev = evaluate(gt, kept, {target: list(part_targets[target])}, {target: pred_cats},
                              boundary=self.spec.boundary, resolve_gt=rule, bootstrap=self.spec.bootstrap,
                              seed=self.spec.seed)
                metrics[gt_mode] = ev.to_dict()["targets"][target]
                metrics[gt_mode]["settings"] = {k: ev.settings[k] for k in ("boundary", "resolve_gt", "min_pixels")}
                for r in ev.per_image_rows():
                    per_image.append({"model": self.spec.model, "mode": mode, "subset": ref, "gt_mode": gt_mode, **r})
            rows.append(self._row(mode, target, ref, "ok", "", init, metrics, len(gt)))
        return rows, per_image

    def _row(self, mode: str, target: str, ref: str, status: str, reason: str, init: str,
             metrics: dict[str, Any] | None = None, n_images: int | None = None) -> dict[str, Any]:
        return {"model": self.spec.model, "mode": mode, "target": target, "subset": ref, "status": status,
                "reason": reason, "init": init, "profile": self.spec.profile, "n_images": n_images,
                "metrics": metrics or {}}

    def _skip(self, mode: str, unit: Unit, reason: str, init: str) -> list[dict[str, Any]]:
        return [self._row(mode, t, ref, "skipped", reason, init)
                for ref in self.data.evaluate for t in unit.targets if t in self.data.targets_of(ref)]

    # ------------------------------------------------------------------ modes

    def _run_unit(self, mode: str, unit: Unit) -> tuple[list, list]:
        params, device = self.model_cfg.params, self.device
        if mode == "zero_shot":
            weights, reason = self.model_cfg.zero_shot_for(unit.targets[0] if unit.name != "all" else "all")
            if reason:
                return self._skip(mode, unit, reason, "-"), []
            try:
                if weights:
                    weights_mod.resolve(weights)
            except MissingWeightsError as exc:
                return self._skip(mode, unit, str(exc), f"pretrained:{weights}"), []
            init = f"pretrained:{weights}" if weights else "none (no weights)"

            def factory() -> Any:
                return self.cls.build(params, weights=weights, device=device)

            key_extra: dict[str, Any] = {"mode": mode, "weights": weights, "unit": unit.train_as}
        else:
            checkpoint, init = self._train(unit)

            def factory() -> Any:
                adapter = self.cls.build(params, weights=None, device=device)
                adapter.load(checkpoint)
                return adapter

            key_extra = {"mode": mode, "checkpoint": str(checkpoint), "mtime": checkpoint.stat().st_mtime_ns}
        rows, per_image = [], []
        for ref in self.data.evaluate:
            if not any(t in self.data.targets_of(ref) for t in unit.targets):
                continue
            pred_path = self._predict(mode, unit, factory, ref, key_extra)
            r, p = self._evaluate(mode, unit, ref, pred_path, init)
            rows += r
            per_image += p
        return rows, per_image

    def run(self) -> Path:
        """Execute the plan and write every result file; returns the run dir."""
        start = time.perf_counter()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        logger.info("bench %s on %s (%s profile), device %s, run dir %s", self.spec.model, self.data.name,
                    self.spec.profile, self.device, self.run_dir)
        _write_text_atomic(self.run_dir / "config.yaml", yaml.safe_dump(self.resolved_config(), sort_keys=False))
        rows: list[dict[str, Any]] = []
        per_image: list[dict[str, Any]] = []
        for mode in self.spec.modes:
            for unit in _units(self.cls, self.data, self.targets):
                r, p = self._run_unit(mode, unit)
                rows += r
                per_image += p
        self.timings["total"] = round(time.perf_counter() - start, 2)
        self._write_results(rows, per_image)
        return self.run_dir

    # ------------------------------------------------------------------ outputs

    def _write_results(self, rows: list[dict[str, Any]], per_image: list[dict[str, Any]]) -> None:
        manifest = {"model": self.spec.model, "profile": self.spec.profile, "device": self.device,
                    "seed": self.spec.seed, "git": _git_hash(), "versions": _versions(),
                    "data": self.data.name, "wall_seconds": self.timings,
                    "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        write_json_atomic(self.run_dir / "manifest.json", manifest)
        write_json_atomic(self.run_dir / "results.json", {"model": self.spec.model, "profile": self.spec.profile,
                                                          "data": self.data.name, "rows": rows})
        _write_text_atomic(self.run_dir / "results.csv", results_csv(rows))
        _write_text_atomic(self.run_dir / "results.md", results_markdown(rows))
        _write_text_atomic(self.run_dir / "per_image.csv", _csv(per_image))


COLUMNS = (("P@0.5", "0.5", "precision"), ("R@0.5", "0.5", "recall"), ("F1@0.5", "0.5", "f1"),
           ("AP@0.5", "0.5", "ap"), ("AP@0.75", "0.75", "ap"), ("AP@0.9", "0.9", "ap"))


def flat_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One flat record per result row: identity columns + the six scores for each GT mode (fractions)."""
    out = []
    for row in rows:
        flat = {k: row[k] for k in ("model", "mode", "target", "subset", "status", "reason", "init", "profile",
                                    "n_images")}
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


def results_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """``results.md``: the paper's Table 2 (overlapping GT) and Table 4 (priority-resolved GT), in percent."""
    lines = []
    for gt_mode, title in (("overlap", "Table 2 — overlapping ground truth"),
                           ("resolved", "Table 4 — priority-resolved ground truth (rule: last)")):
        lines += [f"### {title}", "",
                  "| model | mode | target | subset | init | " + " | ".join(c[0] for c in COLUMNS) + " |",
                  "|---|---|---|---|---|" + "---:|" * len(COLUMNS)]
        for row in rows:
            head = f"| {row['model']} | {row['mode']} | {row['target']} | {row['subset']} | {row['init']} |"
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
    """Run a bench and return its run dir."""
    return Runner(spec).run()
