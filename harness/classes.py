"""What a multiclass model learns, and how its classes count for a target that merges several of them.

A multiclass model (YOLO) learns a set of *classes*, each a target of the training part: by default the
dataset's ``classes`` (Glioma C6: type_a, type_b, soma); a model YAML may choose others, e.g. the Glioma C6
paper's ``[cells, soma]`` (type A and type B trained as one class). Classes must not share a COCO category,
or one annotation would be taught twice under two names.

A target counts the predictions of every class whose categories it contains (``cells`` = type_a + type_b).
One cell predicted as both type A and type B would then be one true positive *and* one false positive for
``cells``, so before scoring such a target the predictions of its classes are merged class-agnostically:
greedy mask-IoU NMS (`metrics.matching.mask_nms`, highest score first) at the model YAML's
``evaluate.merge_iou`` (YOLO: its NMS IoU, 0.7; null = off). Per-class targets are scored as predicted.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from harness.errors import ConfigError
from harness.flatten import flatten
from metrics.matching import mask_nms

if TYPE_CHECKING:
    from harness.config import ModelConfig
    from harness.dataset import DatasetConfig
    from harness.records import Sample

logger = logging.getLogger(__name__)


@dataclass
class Unit:
    """One model to build: the targets it serves and how its predictions map onto them."""

    name: str  # target name, or "all" for a multiclass model
    targets: list[str]
    train_as: dict[str, list[str]]  # name it learns -> GT category names (of the training part)


def train_classes(cfg: DatasetConfig, classes: Sequence[str] | None, where: str) -> dict[str, list[str]]:
    """Class name -> the training part's COCO categories it learns; checked to be known and disjoint."""
    targets = cfg.targets_of(cfg.train)
    chosen = list(classes or cfg.classes or targets)
    unknown = [c for c in chosen if c not in targets]
    if unknown:
        raise ConfigError(f"{where}: class(es) {', '.join(unknown)} are not targets of the training part "
                          f"{cfg.train}; targets: {', '.join(targets)}")
    seen: dict[str, str] = {}
    for name in chosen:
        for category in targets[name]:
            if category in seen:
                raise ConfigError(f"{where}: classes {seen[category]} and {name} both contain the category "
                                  f"{category!r}; a multiclass model needs disjoint classes")
            seen[category] = name
    return {name: list(targets[name]) for name in chosen}


def merge_classes(samples: Sequence[Sample], categories: Sequence[str], iou: float | None,
                  target: str) -> tuple[list[Sample], dict[str, Any] | None]:
    """Class-agnostic mask-IoU NMS over the predictions of several classes counted for one target.

    Returns the samples with the suppressed duplicates removed and what was done (recorded with the
    scores), or the samples unchanged and None when the target has one class or merging is off.
    """
    if iou is None or len(categories) < 2:
        return list(samples), None
    out, before, after = [], 0, 0
    for sample in samples:
        instances = [i for i in sample.instances if i.category in categories]
        scores = [i.score if i.score is not None else 0.0 for i in instances]
        keep = mask_nms(instances, scores, iou)
        before, after = before + len(instances), after + len(keep)
        out.append(sample.with_instances(instances[k] for k in keep))
    logger.info("%s: %s predictions merged class-agnostically (mask-IoU NMS at %.2f): %d -> %d (%d duplicate(s) "
                "removed)", target, " + ".join(categories), iou, before, after, before - after)
    return out, {"classes": list(categories), "iou": iou, "before": before, "after": after}


def units_of(cls: type, cfg: DatasetConfig, targets: Sequence[str], model_cfg: ModelConfig) -> list[Unit]:
    """One unit per target for a single-class adapter; one unit ``all`` learning the classes for a multiclass one."""
    train_targets = cfg.targets_of(cfg.train)
    if not cls.multiclass:
        return [Unit(name=t, targets=[t], train_as={t: list(train_targets[t])}) for t in targets]
    where = f"{model_cfg.source}: classes" if model_cfg.classes else f"{cfg.source}: classes"
    return [Unit(name="all", targets=list(targets), train_as=train_classes(cfg, model_cfg.classes, where))]


def pred_categories(unit: Unit, target: str, cfg: DatasetConfig) -> list[str]:
    """Predicted category names that count for `target` (a class counts when its categories ⊂ the target's)."""
    if unit.name != "all":
        return [target]
    train_targets = cfg.targets_of(cfg.train)
    wanted = set(train_targets.get(target, ()))
    return [c for c, cats in unit.train_as.items() if set(cats) <= wanted]


def training_samples(samples: Sequence[Sample], unit: Unit) -> list[Sample]:
    """The samples with their instances renamed to the names the unit learns (others dropped); crowd regions
    (``iscrowd: 1``, COCO ignore regions) are left out: they are not single cells."""
    out, crowd = [], 0
    for s in samples:
        crowd += sum(i.iscrowd for i in s.instances)
        out.append(s.with_instances(
            i.with_category(name) for i in s.instances if not i.iscrowd
            for name, cats in unit.train_as.items() if i.category in cats
        ))
    if crowd:
        logger.warning("%d crowd region(s) (iscrowd: 1) left out of training", crowd)
    return out


def training_split(samples: Sequence[Sample], unit: Unit, model_cfg: ModelConfig, needs_label_maps: bool,
                   what: str) -> list[Sample]:
    """What a model's ``train`` gets of `samples`: the unit's categories (`training_samples`) and, for a model
    with ``needs_label_maps``, the overlaps flattened by the config's ``label_maps`` rule.

    The harness's train stage (`harness.run`) and the benchmarks that train as it does call this one function,
    so they hand an adapter the same data.
    """
    out = training_samples(samples, unit)
    return flatten(out, model_cfg.label_rule, model_cfg.min_pixels, what) if needs_label_maps else out


def export_classes(targets: dict[str, tuple[str, ...]], classes: Sequence[str], where: str) -> dict[str, str]:
    """COCO category -> YOLO class for one part: each class that is a target of the part takes its categories
    (gen's ``cells`` = ``cell``; spec's ``cells`` = type A ∪ type B). Classes may not share a category."""
    out: dict[str, str] = {}
    for name in classes:
        for category in targets.get(name, ()):
            if category in out:
                raise ConfigError(f"{where}: classes {out[category]} and {name} both contain the category "
                                  f"{category!r}; YOLO classes must be disjoint")
            out[category] = name
    return out
