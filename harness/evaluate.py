"""Evaluate predicted instances against ground truth per target: the paper's P/R/F1@0.5 and AP@0.5/0.75/0.9.

For each target (a set of ground-truth category names and a set of predicted category names) and each
image: keep that target's instances, optionally resolve the ground truth into non-overlapping masks with the
data layer's priority rule (the paper's appendix, Table 4), drop ground-truth and predicted instances that
touch the outer frame (each set on its own, before matching, as NeurIPS-CellSeg does), then match by IoU
(`metrics.matching`) and count (`metrics.scores`). Counts are pooled over images (the paper's figures) and
averaged per image; the settings travel with the numbers.

The targets of an evaluation and the pairing of images are `harness.targets`; the result records and
``metrics.json`` / ``per_image.csv`` are `harness.evaluation`; prediction files are read by `harness.predictions`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from harness import drops
from harness.errors import ConfigError, DataError
from harness.evaluation import Evaluation, ImageResult, TargetResult, threshold_key
from harness.records import Instance, Sample
from harness.targets import pair_samples
from metrics.matching import InstanceSet, covered_fraction, iou_matrix, match, touches_frame
from metrics.scores import Counts, bootstrap_intervals, per_image_mean, pool

logger = logging.getLogger(__name__)

DEFAULT_THRESHOLDS = (0.5, 0.75, 0.9)
RESOLVE_RULES = ("last", "first", "smallest")

MATCHING_NOTE = (
    "one-to-one Hungarian assignment (scipy linear_sum_assignment) on cost -(IoU>=t) - IoU/(2*n_min), "
    "a pair is a TP when IoU >= t (cellpose / NeurIPS-CellSeg / stardist); FP = n_pred - TP, "
    "FN = n_gt - TP; AP = TP/(TP+FP+FN) (cellpose-style, not COCO AP)"
)
AGGREGATION_NOTE = (
    "pooled (the paper's figures): TP/FP/FN summed over images per target, then P/R/F1/AP; "
    "scores are 0 when TP = 0. per_image_mean: mean over images of per-image counts and scores; "
    "images with neither ground truth nor prediction for the target are left out of the mean "
    "(counted in n_images_empty); an image with only ground truth or only predictions scores 0"
)
BOUNDARY_NOTE = (
    "instances with a pixel in the outer frame `boundary` px wide are dropped, ground truth and "
    "predictions separately, before matching (after GT resolution in resolved mode); 0 = off"
)
EMPTY_NOTE = "instances whose mask has no pixel are dropped before anything else (counted in n_*_empty)"
CROWD_NOTE = (
    "ground truth with iscrowd=1 is an ignore region, as in COCO: never counted (not in n_gt, never a FN), left "
    "out of the frame rule and of GT resolution; predictions are matched to the other GT first, then an unmatched "
    "prediction with at least t of its pixels inside one crowd region is ignored (neither TP nor FP; "
    "n_pred_crowd_ignored per threshold)"
)


# --------------------------------------------------------------------------------------------- per image


def _label(sample: Sample) -> str:
    return sample.file_name or str(sample.image_id)


def _instance_set(instances: Sequence[Instance], where: str) -> InstanceSet:
    """Boxes/areas/crops of `instances` (rasterised once, cached); a broken geometry is a DataError."""
    try:
        return InstanceSet.of(instances)
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - find the instance at fault and name it
        for inst in instances:
            try:
                _ = inst.crop
            except DataError:
                raise
            except Exception as inner:  # noqa: BLE001 - any decoder failure means a broken annotation
                raise DataError(
                    f"{inst.source or where}: cannot rasterise the segmentation of instance "
                    f"{inst.order} ({type(inner).__name__}: {inner})"
                ) from inner
        raise DataError(f"{where}: {exc}") from exc


def _check_pred_categories(pairs: Sequence[tuple[Sample, Sample | None]], allowed: set[str]) -> None:
    for _, p in pairs:
        for inst in p.instances if p is not None else ():
            if inst.category not in allowed:
                raise DataError(
                    f"{inst.source or _label(p)}: predicted category {inst.category!r} (image "
                    f"{_label(p)!r}, instance {inst.order}) is not used by any target; known predicted "
                    f"categories: {', '.join(map(repr, sorted(allowed)))}"
                )


def evaluate_image(
    target: str,
    gt: Sample,
    pred: Sample | None,
    gt_categories: set[str],
    pred_categories: set[str],
    thresholds: Sequence[float],
    boundary: int,
    resolve_gt: str | None,
    min_pixels: int,
) -> ImageResult:
    """Counts of one target on one image (see the module docstring for the order of the steps)."""
    where = f"image {_label(gt)!r}"
    gt_inst = [i for i in gt.instances if i.category in gt_categories and not i.iscrowd]
    crowd = [i for i in gt.instances if i.category in gt_categories and i.iscrowd]
    pred_inst = [i for i in (pred.instances if pred is not None else ()) if i.category in pred_categories]
    resolve_dropped = 0
    if resolve_gt is not None:
        from harness.convert import resolve_priority

        _instance_set(gt_inst, where)  # name a broken annotation before the resolution touches it
        resolution = resolve_priority(gt_inst, gt.height, gt.width, rule=resolve_gt, min_pixels=min_pixels)
        gt_inst, resolve_dropped = list(resolution.instances), len(resolution.dropped)
    g, p = _instance_set(gt_inst, where), _instance_set(pred_inst, where)
    g_empty, p_empty = g.areas == 0, p.areas == 0
    g_frame = touches_frame(g.boxes, gt.height, gt.width, boundary) & ~g_empty
    p_frame = touches_frame(p.boxes, gt.height, gt.width, boundary) & ~p_empty
    g, p = g.subset(~(g_empty | g_frame)), p.subset(~(p_empty | p_frame))
    iou = iou_matrix(g, p, min_iou=min(thresholds))
    matchings = [match(iou, t) for t in thresholds]
    ignored = _crowd_ignored(p, _instance_set(crowd, where), matchings)
    counts = tuple(Counts.from_matching(m.tp, len(g), len(p) - n) for m, n in zip(matchings, ignored, strict=True))
    return ImageResult(
        target=target,
        image=_label(gt),
        image_id=gt.image_id,
        n_gt=len(g),
        n_pred=len(p),
        n_gt_boundary=int(g_frame.sum()),
        n_pred_boundary=int(p_frame.sum()),
        n_gt_resolve_dropped=resolve_dropped,
        n_gt_empty=int(g_empty.sum()),
        n_pred_empty=int(p_empty.sum()),
        counts=counts,
        n_gt_crowd=len(crowd),
        n_pred_crowd_ignored=ignored,
    )


def _crowd_ignored(p: InstanceSet, crowd: InstanceSet, matchings: Sequence[Any]) -> tuple[int, ...]:
    """Per threshold t: unmatched predictions with >= t of their pixels inside one crowd region (COCO)."""
    if len(crowd) == 0 or len(p) == 0:
        return tuple(0 for _ in matchings)
    inside = covered_fraction(p, crowd).max(axis=1)
    out = []
    for m in matchings:
        free = np.ones(len(p), dtype=bool)
        free[m.pred] = False
        out.append(int((free & (inside >= m.threshold)).sum()))
    return tuple(out)


# --------------------------------------------------------------------------------------------- evaluate


def _check_settings(
    thresholds: Sequence[float], boundary: int, resolve_gt: str | None, min_pixels: int, bootstrap: int
) -> tuple[float, ...]:
    ts = tuple(float(t) for t in thresholds)
    if not ts:
        raise ConfigError("thresholds: give at least one IoU threshold (e.g. 0.5 0.75 0.9)")
    bad = [t for t in ts if not (0.0 < t <= 1.0) or math.isnan(t)]
    if bad:
        raise ConfigError(f"thresholds: IoU thresholds must lie in (0, 1], got {bad}")
    if len(set(map(threshold_key, ts))) != len(ts):
        raise ConfigError(f"thresholds: duplicate threshold in {list(ts)}")
    if boundary < 0:
        raise ConfigError(f"boundary: frame width must be >= 0 (0 = off), got {boundary}")
    if resolve_gt is not None and resolve_gt not in RESOLVE_RULES:
        raise ConfigError(
            f"resolve_gt: unknown rule {resolve_gt!r}; choose one of {', '.join(RESOLVE_RULES)}"
        )
    if min_pixels < 0:
        raise ConfigError(f"min_pixels must be >= 0, got {min_pixels}")
    if bootstrap < 0:
        raise ConfigError(f"bootstrap: number of resamples must be >= 0, got {bootstrap}")
    return ts


def evaluate(
    gt: Sequence[Sample],
    pred: Sequence[Sample],
    targets: Mapping[str, Sequence[str]],
    pred_targets: Mapping[str, Sequence[str]] | None = None,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    boundary: int = 2,
    resolve_gt: str | None = None,
    min_pixels: int = 10,
    bootstrap: int = 0,
    seed: int = 0,
) -> Evaluation:
    """Score predictions against ground truth per target (see the module docstring).

    `targets` maps a target name to ground-truth category names, `pred_targets` to predicted category names
    (None: the same names). Every predicted instance's category must belong to some target.
    ``resolve_gt`` (``last``/``first``/``smallest``) switches to the non-overlapping ground-truth mode.
    """
    ts = _check_settings(thresholds, boundary, resolve_gt, min_pixels, bootstrap)
    if not targets:
        raise ConfigError("no target to evaluate")
    pred_targets = dict(targets) if pred_targets is None else dict(pred_targets)
    missing = [t for t in targets if t not in pred_targets]
    if missing:
        raise ConfigError(f"pred_targets lacks target(s) {', '.join(missing)}")
    if not gt:
        raise DataError("no ground-truth image to evaluate against")
    for g in gt:
        if boundary and 2 * boundary >= min(g.height, g.width):
            raise ConfigError(f"boundary {boundary} px: the frame covers all of image {_label(g)!r} "
                              f"({g.width}x{g.height}); use a smaller --boundary (0 = off)")
    key, pairs = pair_samples(gt, pred)
    _check_pred_categories(pairs, {c for t in targets for c in pred_targets[t]})
    unpaired = [_label(g) for g, p in pairs if p is None]
    if unpaired:
        logger.warning(
            "%d of %d ground-truth image(s) have no entry in the predictions and count as images with no "
            "predicted instance: %s",
            len(unpaired),
            len(gt),
            ", ".join(unpaired[:5]),
        )

    from tqdm import tqdm

    per_target: dict[str, list[ImageResult]] = {t: [] for t in targets}
    for g, p in tqdm(pairs, desc="evaluate", unit="image"):
        for t in targets:
            per_target[t].append(
                evaluate_image(
                    t, g, p, set(targets[t]), set(pred_targets[t]), ts, boundary, resolve_gt, min_pixels
                )
            )

    results = {}
    for t, images in per_target.items():
        by_threshold = [[r.counts[k] for r in images] for k in range(len(ts))]
        counts = np.array([[[c.tp, c.fp, c.fn] for c in r.counts] for r in images], dtype=np.int64)
        counts = counts.reshape(len(images), len(ts), 3)
        results[t] = TargetResult(
            name=t,
            gt_categories=tuple(targets[t]),
            pred_categories=tuple(pred_targets[t]),
            thresholds=ts,
            images=tuple(images),
            pooled=tuple(pool(c) for c in by_threshold),
            means=tuple(per_image_mean(c) for c in by_threshold),
            intervals=tuple(bootstrap_intervals(counts, bootstrap, seed))
            if bootstrap
            else tuple({} for _ in ts),
        )
    for t, result in results.items():
        drops.check(t, result.to_dict(), boundary, len(result.images))
    settings = {
        "thresholds": list(ts),
        "boundary": int(boundary),
        "gt_mode": "overlap" if resolve_gt is None else "resolved",
        "resolve_gt": resolve_gt,
        "min_pixels": int(min_pixels) if resolve_gt is not None else None,
        "matching": MATCHING_NOTE,
        "boundary_rule": BOUNDARY_NOTE,
        "empty_masks": EMPTY_NOTE,
        "crowd": CROWD_NOTE,
        "aggregation": AGGREGATION_NOTE,
        "primary": "pooled",
        "bootstrap": {
            "n": int(bootstrap),
            "seed": int(seed),
            "level": 0.95,
            "method": "percentile interval; images resampled with replacement (numpy default_rng(seed))",
        }
        if bootstrap
        else None,
        "pairing": key,
        "gt_images_without_predictions": unpaired,
        "targets": {t: {"gt": list(targets[t]), "pred": list(pred_targets[t])} for t in targets},
    }
    return Evaluation(settings=settings, targets=results)
