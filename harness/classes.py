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
from typing import TYPE_CHECKING, Any

from harness.errors import ConfigError
from metrics.matching import mask_nms

if TYPE_CHECKING:
    from harness.data import Sample
    from harness.dataset import DatasetConfig

logger = logging.getLogger(__name__)


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
