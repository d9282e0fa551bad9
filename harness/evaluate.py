"""Evaluate predicted instances against ground truth per target: the paper's P/R/F1@0.5 and AP@0.5/0.75/0.9.

For each target (a set of ground-truth category names and a set of predicted category names) and each
image: keep that target's instances, optionally resolve the ground truth into non-overlapping masks with the
data layer's priority rule (the paper's appendix, Table 4), drop ground-truth and predicted instances that
touch the outer frame (each set on its own, before matching, as NeurIPS-CellSeg does), then match by IoU
(`metrics.matching`) and count (`metrics.scores`). Counts are pooled over images (the paper's figures) and
averaged per image; the settings travel with the numbers.

Also here: the targets of an evaluation and writing ``metrics.json`` / ``per_image.csv``; prediction files are
read by `harness.predictions`.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness import drops
from harness.errors import ConfigError, DataError
from harness.io import write_text
from harness.records import Instance, Sample
from metrics.matching import InstanceSet, covered_fraction, iou_matrix, match, touches_frame
from metrics.scores import Counts, PerImageMean, bootstrap_intervals, per_image_mean, pool

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


def threshold_key(threshold: float) -> str:
    """``0.5`` → ``"0.5"``: the key of a threshold in metrics.json."""
    return f"{float(threshold):g}"


# --------------------------------------------------------------------------------------------- records


@dataclass(frozen=True)
class ImageResult:
    """One target on one image: what was removed, what was evaluated, counts per threshold."""

    target: str
    image: str
    image_id: int | None
    n_gt: int
    n_pred: int
    n_gt_boundary: int
    n_pred_boundary: int
    n_gt_resolve_dropped: int
    n_gt_empty: int
    n_pred_empty: int
    counts: tuple[Counts, ...]
    n_gt_crowd: int = 0
    n_pred_crowd_ignored: tuple[int, ...] = ()


@dataclass(frozen=True)
class TargetResult:
    """All images of one target, aggregated."""

    name: str
    gt_categories: tuple[str, ...]
    pred_categories: tuple[str, ...]
    thresholds: tuple[float, ...]
    images: tuple[ImageResult, ...]
    pooled: tuple[Counts, ...]
    means: tuple[PerImageMean, ...]
    intervals: tuple[dict[str, tuple[float, float]], ...]

    def total(self, attr: str) -> int:
        return int(sum(getattr(r, attr) for r in self.images))

    def to_dict(self) -> dict[str, Any]:
        pooled: dict[str, Any] = {}
        for t, counts, ci in zip(self.thresholds, self.pooled, self.intervals, strict=True):
            pooled[threshold_key(t)] = counts.to_dict()
            if ci:
                pooled[threshold_key(t)]["ci"] = {name: [lo, hi] for name, (lo, hi) in ci.items()}
        means = {threshold_key(t): m.to_dict() for t, m in zip(self.thresholds, self.means, strict=True)}
        first = self.means[0] if self.means else PerImageMean(0, 0, *([None] * 7))
        return {
            "n_images": len(self.images),
            "n_gt": self.total("n_gt"),
            "n_pred": self.total("n_pred"),
            "n_gt_boundary": self.total("n_gt_boundary"),
            "n_pred_boundary": self.total("n_pred_boundary"),
            "n_gt_resolve_dropped": self.total("n_gt_resolve_dropped"),
            "n_gt_empty": self.total("n_gt_empty"),
            "n_pred_empty": self.total("n_pred_empty"),
            "n_gt_crowd": self.total("n_gt_crowd"),
            "n_pred_crowd_ignored": {threshold_key(t): int(sum(r.n_pred_crowd_ignored[k] for r in self.images
                                                               if r.n_pred_crowd_ignored))
                                     for k, t in enumerate(self.thresholds)},
            "n_images_scored": first.n_scored,
            "n_images_empty": first.n_empty,
            "pooled": pooled,
            "per_image_mean": means,
        }


PER_IMAGE_COLUMNS = (
    "target",
    "image",
    "image_id",
    "threshold",
    "n_gt",
    "n_pred",
    "n_gt_boundary",
    "n_pred_boundary",
    "n_gt_resolve_dropped",
    "n_gt_crowd",
    "n_pred_crowd_ignored",
    "tp",
    "fp",
    "fn",
    "precision",
    "recall",
    "f1",
    "ap",
)


@dataclass(frozen=True)
class Evaluation:
    """The result of `evaluate`: settings + one `TargetResult` per target."""

    settings: dict[str, Any]
    targets: dict[str, TargetResult] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The ``metrics.json`` structure (fractions in [0, 1])."""
        return {"settings": self.settings, "targets": {name: t.to_dict() for name, t in self.targets.items()}}

    def per_image_rows(self) -> list[dict[str, Any]]:
        """One row per target × image × threshold (``per_image.csv``)."""
        rows = []
        for target in self.targets.values():
            for r in target.images:
                for k, (t, c) in enumerate(zip(target.thresholds, r.counts, strict=True)):
                    rows.append(
                        {
                            "target": r.target,
                            "image": r.image,
                            "image_id": r.image_id,
                            "threshold": threshold_key(t),
                            "n_gt": r.n_gt,
                            "n_pred": r.n_pred,
                            "n_gt_boundary": r.n_gt_boundary,
                            "n_pred_boundary": r.n_pred_boundary,
                            "n_gt_resolve_dropped": r.n_gt_resolve_dropped,
                            "n_gt_crowd": r.n_gt_crowd,
                            "n_pred_crowd_ignored": r.n_pred_crowd_ignored[k] if r.n_pred_crowd_ignored else 0,
                            **c.to_dict(),
                        }
                    )
        return rows

    def table(self) -> str:
        """Plain-text table of pooled and per-image-mean scores (percent)."""
        head = (
            f"{'target':<12} {'IoU':>5} {'n_img':>5} {'n_gt':>6} {'n_pred':>6} {'TP':>6} {'FP':>6} {'FN':>6} "
            f"{'P':>6} {'R':>6} {'F1':>6} {'AP':>6} | {'mF1':>6} {'mAP':>6}"
        )
        lines = [head, "-" * len(head)]
        for name, target in self.targets.items():
            n_gt, n_pred = target.total("n_gt"), target.total("n_pred")
            for t, c, m in zip(target.thresholds, target.pooled, target.means, strict=True):
                mf1 = "-" if m.f1 is None else f"{100 * m.f1:.2f}"
                map_ = "-" if m.ap is None else f"{100 * m.ap:.2f}"
                lines.append(
                    f"{name:<12} {threshold_key(t):>5} {len(target.images):>5} {n_gt:>6} {n_pred:>6} "
                    f"{c.tp:>6} {c.fp:>6} {c.fn:>6} {100 * c.precision:>6.2f} {100 * c.recall:>6.2f} "
                    f"{100 * c.f1:>6.2f} {100 * c.ap:>6.2f} | {mf1:>6} {map_:>6}"
                )
        lines.append("P/R/F1/AP pooled over images (percent); mF1/mAP = per-image means.")
        return "\n".join(lines)


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


def write_outputs(evaluation: Evaluation, out_dir: Path | str) -> tuple[Path, Path]:
    """Write ``metrics.json`` and ``per_image.csv`` into `out_dir` (temp file + rename each)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics_path, csv_path = out_dir / "metrics.json", out_dir / "per_image.csv"
    write_text(metrics_path, json.dumps(evaluation.to_dict(), indent=2) + "\n")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=PER_IMAGE_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(evaluation.per_image_rows())
    write_text(csv_path, buffer.getvalue())
    return metrics_path, csv_path
