"""What is scored against what: the targets of an evaluation (ground-truth and predicted categories) and the
pairing of prediction images with ground-truth images.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.errors import ConfigError, DataError
from harness.records import Sample

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------- pairing


def _pairing_key(gt: Sequence[Sample], pred: Sequence[Sample]) -> str:
    """``file_name`` when every sample has one, else ``image_id``."""
    if all(s.file_name for s in (*gt, *pred)):
        return "file_name"
    missing = [s for s in (*gt, *pred) if s.image_id is None]
    if missing:
        raise DataError(
            f"cannot pair ground truth and predictions: image {missing[0].image_path} has neither a "
            "file_name nor an image_id"
        )
    return "image_id"


def _index(samples: Sequence[Sample], key: str, what: str) -> dict[Any, Sample]:
    out: dict[Any, Sample] = {}
    for s in samples:
        k = getattr(s, key)
        if k in out:
            raise DataError(f"{what}: two images share {key} {k!r}; each image must appear once")
        out[k] = s
    return out


def pair_samples(
    gt: Sequence[Sample], pred: Sequence[Sample]
) -> tuple[str, list[tuple[Sample, Sample | None]]]:
    """Pair each ground-truth image with its predictions (None when the prediction file lacks it).

    A prediction for an image the ground truth does not have, or with another image size, is an error.
    """
    key = _pairing_key(gt, pred)
    gt_index = _index(gt, key, "ground truth")
    pred_index = _index(pred, key, "predictions")
    for k, p in pred_index.items():
        g = gt_index.get(k)
        if g is None:
            raise DataError(
                f"predictions: image {key} {k!r} is not in the ground truth (GT images: "
                f"{', '.join(map(repr, list(gt_index)[:10]))}{' ...' if len(gt_index) > 10 else ''}); "
                "evaluate against the annotation file of the same split"
            )
        if (p.height, p.width) != (g.height, g.width):
            raise DataError(
                f"predictions: image {key} {k!r} is {p.width}x{p.height} (WxH) but the ground truth "
                f"says {g.width}x{g.height}; predictions must be at the original resolution"
            )
    return key, [(g, pred_index.get(k)) for k, g in gt_index.items()]


# --------------------------------------------------------------------------------------------- targets


# --------------------------------------------------------------------------------------------- files


def targets_for(
    gt_categories: set[str], pred_categories: set[str] | None, dataset_yaml: Path | str | None = None
) -> tuple[dict[str, tuple[str, ...]], dict[str, tuple[str, ...]] | None, dict[str, str], str | None]:
    """Targets of an evaluation: ``(targets, pred_targets, skipped target → reason, pairing note)``.

    Without a dataset YAML every ground-truth category is its own target. With one, the targets of the part
    whose category names all occur in the ground truth. A prediction file that declares its own categories
    may name them like the ground truth, like the targets (a single-target model's output), or like the
    dataset's classes (a multiclass model); a target for which the file declares no category is skipped.
    When no name fits but each side holds exactly one category, the two are paired and the note says so
    (None otherwise); any other mismatch is an error.
    """
    if dataset_yaml is None:
        targets = {c: (c,) for c in sorted(gt_categories)}
    else:
        from harness.dataset import load_dataset_config

        cfg = load_dataset_config(dataset_yaml)
        matching = {
            name: part.targets
            for name, part in cfg.parts.items()
            if all(set(cats) <= gt_categories for cats in part.targets.values())
        }
        distinct = {json.dumps(t, sort_keys=True) for t in matching.values()}
        if not matching:
            raise ConfigError(
                f"{dataset_yaml}: no part's targets fit the ground-truth categories "
                f"{sorted(gt_categories)}; parts: "
                + "; ".join(
                    f"{n}: {sorted({c for cs in p.targets.values() for c in cs})}"
                    for n, p in cfg.parts.items()
                )
            )
        if len(distinct) > 1:
            raise ConfigError(
                f"{dataset_yaml}: parts {', '.join(matching)} all fit the ground truth with "
                "different targets; give a dataset YAML with one matching part"
            )
        targets = {t: tuple(c) for t, c in next(iter(matching.values())).items()}
    if pred_categories is None:
        return targets, None, {}, None
    pred_targets: dict[str, tuple[str, ...]] = {}
    skipped: dict[str, str] = {}
    for t, cats in targets.items():
        names = tuple(
            sorted(n for n in pred_categories if n in cats or (n in targets and set(targets[n]) <= set(cats)))
        )
        if names:
            pred_targets[t] = names
        else:
            skipped[t] = (
                f"the prediction file declares no category for target {t!r} (its categories: "
                f"{sorted(pred_categories)}; target uses {list(cats)})"
            )
    if not pred_targets and len(gt_categories) == len(targets) == len(pred_categories) == 1:
        # One category on each side (a single-target model's output named by its target, e.g. "cells",
        # against a one-category COCO, e.g. "cell"): nothing to choose between, so pair them and say so.
        (t, cats), (name,) = next(iter(targets.items())), tuple(pred_categories)
        note = (f"paired the only prediction category {name!r} with the only target {t!r} (ground truth "
                f"{list(cats)}): each side holds one category")
        return {t: cats}, {t: (name,)}, {}, note
    if not pred_targets:
        raise DataError(
            f"no prediction category fits any target: prediction categories {sorted(pred_categories)}, "
            f"targets {dict(targets)}; pass --targets with the dataset YAML that names them"
        )
    return {t: targets[t] for t in pred_targets}, pred_targets, skipped, None
