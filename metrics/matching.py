"""IoU between instance sets that may overlap *within* a set, and optimal one-to-one matching.

Glioma C6 ground truth is a list of overlapping polygons, so it cannot be a single label map (one label
per pixel) as in cellpose/stardist/NeurIPS-CellSeg. Each instance is instead a tight bounding box plus a
boolean crop (`Masked`). IoU is computed the way pycocotools' ``rleIou`` does it: a vectorised bounding-box
prefilter keeps only pairs whose boxes intersect, and only those pairs AND their crops over the box
intersection. Nothing here allocates a full-image array.

Matching follows cellpose ``metrics._true_positive`` / NeurIPS-CellSeg ``compute_metric`` / stardist
``matching``: Hungarian assignment on the cost ``-(iou >= t) - iou / (2 * n_min)``, a pair counting as a
true positive when its IoU is ``>= t``. The tie-break term sums to at most 0.5 < 1, so the assignment first
maximises the number of pairs with IoU >= t (a greedy match can lose some when ground truth overlaps), then
the total IoU among them.

Only numpy and scipy are used (``metrics`` never imports ``harness``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from scipy.optimize import linear_sum_assignment

logger = logging.getLogger(__name__)


class Masked(Protocol):
    """Anything with a tight pixel mask: ``harness.records.Instance`` satisfies it."""

    @property
    def bbox(self) -> tuple[int, int, int, int]:
        """``(y0, x0, y1, x1)``, end-exclusive."""
        ...

    @property
    def crop(self) -> np.ndarray:
        """Boolean mask of shape ``(y1 - y0, x1 - x0)``."""
        ...


# --------------------------------------------------------------------------------------------- geometry


def boxes_of(instances: Sequence[Masked]) -> np.ndarray:
    """``(n, 4)`` int64 array of the instances' ``(y0, x0, y1, x1)`` boxes."""
    if not instances:
        return np.zeros((0, 4), dtype=np.int64)
    return np.array([inst.bbox for inst in instances], dtype=np.int64).reshape(len(instances), 4)


@dataclass(frozen=True)
class InstanceSet:
    """Boxes, pixel counts and crops of a list of instances, read once (attribute access is the slow part)."""

    boxes: np.ndarray
    areas: np.ndarray
    crops: tuple[np.ndarray, ...]

    @classmethod
    def of(cls, instances: Sequence[Masked] | InstanceSet, what: str = "instance") -> InstanceSet:
        """Read `instances`; a crop whose shape differs from its box is an error (it would shift overlaps)."""
        if isinstance(instances, InstanceSet):
            return instances
        boxes = boxes_of(instances)
        crops = tuple(inst.crop for inst in instances)
        shapes = [c.shape for c in crops]
        if any(len(sh) != 2 for sh in shapes) or not np.array_equal(
            np.array(shapes, dtype=np.int64).reshape(len(crops), 2), boxes[:, 2:] - boxes[:, :2]
        ):
            k = next(k for k, c in enumerate(crops) if c.shape != tuple(boxes[k, 2:] - boxes[k, :2]))
            raise ValueError(
                f"{what} {k}: crop shape {crops[k].shape} does not match its bbox "
                f"{tuple(int(v) for v in boxes[k])}"
            )
        areas = np.fromiter((np.count_nonzero(c) for c in crops), dtype=np.int64, count=len(crops))
        return cls(boxes=boxes, areas=areas, crops=crops)

    def __len__(self) -> int:
        return len(self.crops)

    def subset(self, keep: np.ndarray) -> InstanceSet:
        """The instances where boolean `keep` is True (order kept)."""
        idx = np.flatnonzero(keep)
        return InstanceSet(self.boxes[idx], self.areas[idx], tuple(self.crops[i] for i in idx))


def candidate_pairs(gt_boxes: np.ndarray, pred_boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(i, j)`` of ground-truth/prediction pairs whose boxes intersect (all others have IoU 0)."""
    if len(gt_boxes) == 0 or len(pred_boxes) == 0:
        empty = np.zeros(0, dtype=np.intp)
        return empty, empty
    g, p = gt_boxes.T[:, :, None], pred_boxes.T[:, None, :]  # (4, n, 1) and (4, 1, m)
    # [a0, a1) and [b0, b1) intersect iff a0 < b1 and b0 < a1 (cheaper than max/min on n×m arrays).
    overlap = (g[0] < p[2]) & (p[0] < g[2]) & (g[1] < p[3]) & (p[1] < g[3])
    return np.nonzero(overlap)


def iou_matrix(
    gt: Sequence[Masked] | InstanceSet, pred: Sequence[Masked] | InstanceSet, min_iou: float = 0.0
) -> np.ndarray:
    """Dense ``n_gt × n_pred`` IoU matrix (float64), exact, from box prefilter + crop intersections.

    With ``min_iou > 0``, pairs whose IoU provably stays below it (the intersection cannot exceed the
    box intersection nor either area) are left at 0 without touching their pixels: matching at
    thresholds >= `min_iou` gives the same true positives.
    """
    g, p = InstanceSet.of(gt, "ground-truth instance"), InstanceSet.of(pred, "predicted instance")
    iou = np.zeros((len(g), len(p)), dtype=np.float64)
    rows, cols = candidate_pairs(g.boxes, p.boxes)
    if rows.size == 0:
        return iou
    gb, pb = g.boxes[rows], p.boxes[cols]
    lo = np.maximum(gb[:, :2], pb[:, :2])  # (y0, x0) of the box intersection
    hi = np.minimum(gb[:, 2:], pb[:, 2:])  # (y1, x1)
    ga, pa = g.areas[rows], p.areas[cols]
    if min_iou > 0:
        bound = np.minimum(np.prod(hi - lo, axis=1), np.minimum(ga, pa))
        # The same float division as the IoU below: division is monotone, so no true pair at the
        # threshold is lost to rounding.
        denom = ga + pa - bound
        upper = np.divide(bound, denom, out=np.zeros(bound.size), where=denom > 0)
        possible = upper >= min_iou
        rows, cols, gb, pb, lo, hi, ga, pa = (a[possible] for a in (rows, cols, gb, pb, lo, hi, ga, pa))
    inter = _intersections(g, p, rows, cols, gb, pb, lo, hi)
    union = ga + pa - inter
    iou[rows, cols] = np.divide(inter, union, out=np.zeros(rows.size), where=union > 0)
    return iou


def _intersections(g: InstanceSet, p: InstanceSet, rows: np.ndarray, cols: np.ndarray, gb: np.ndarray,
                   pb: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Pixel counts of ``g[rows[k]] & p[cols[k]]`` over their box intersections ``[lo[k], hi[k])``."""
    g_off = np.concatenate([lo - gb[:, :2], hi - gb[:, :2]], axis=1).tolist()
    p_off = np.concatenate([lo - pb[:, :2], hi - pb[:, :2]], axis=1).tolist()
    return np.fromiter(
        (
            np.count_nonzero(g.crops[i][a0:a2, a1:a3] & p.crops[j][b0:b2, b1:b3])
            for i, j, (a0, a1, a2, a3), (b0, b1, b2, b3) in zip(
                rows.tolist(), cols.tolist(), g_off, p_off, strict=True
            )
        ),
        dtype=np.int64,
        count=rows.size,
    )


def covered_fraction(pred: Sequence[Masked] | InstanceSet, regions: Sequence[Masked] | InstanceSet) -> np.ndarray:
    """``n_pred × n_regions``: the fraction of each prediction's pixels inside each region (|p ∩ r| / |p|).

    COCO's IoU against a crowd region (``iscrowd: 1``), where the region's own area does not count.
    """
    p, r = InstanceSet.of(pred, "predicted instance"), InstanceSet.of(regions, "crowd region")
    out = np.zeros((len(p), len(r)), dtype=np.float64)
    cols, rows = candidate_pairs(r.boxes, p.boxes)  # (region, prediction) pairs whose boxes intersect
    if rows.size == 0:
        return out
    pb, rb = p.boxes[rows], r.boxes[cols]
    lo, hi = np.maximum(pb[:, :2], rb[:, :2]), np.minimum(pb[:, 2:], rb[:, 2:])
    inter = _intersections(p, r, rows, cols, pb, rb, lo, hi)
    area = p.areas[rows]
    out[rows, cols] = np.divide(inter, area, out=np.zeros(rows.size), where=area > 0)
    return out


# --------------------------------------------------------------------------------------------- matching


@dataclass(frozen=True)
class Matching:
    """True-positive pairs at one IoU threshold: ``gt[k]`` matched to ``pred[k]`` with IoU ``iou[k] >= t``."""

    threshold: float
    gt: np.ndarray
    pred: np.ndarray
    iou: np.ndarray

    @property
    def tp(self) -> int:
        return int(self.gt.size)


def match(iou: np.ndarray, threshold: float) -> Matching:
    """Optimal one-to-one matching at `threshold` (Hungarian on the cellpose/NeurIPS cost).

    Only pairs with IoU >= `threshold` can be true positives, and the tie-break term can never trade one
    away, so the problem splits without changing the count of true positives (the maximum number of
    disjoint pairs with IoU >= t): a pair that is the only candidate of both its row and its column is
    matched directly (any optimum holds it), and the Hungarian assignment runs on the rows and columns
    that remain with any IoU >= t. The tie-break denominator is ``2 * min(n_gt, n_pred)`` of the full
    matrix, as in cellpose.
    """
    empty = np.zeros(0, dtype=np.intp)
    if iou.size == 0:
        return Matching(threshold, empty, empty, np.zeros(0))
    hit = iou >= threshold
    row_hits, col_hits = hit.sum(axis=1), hit.sum(axis=0)
    hr, hc = np.nonzero(hit)
    alone = (row_hits[hr] == 1) & (col_hits[hc] == 1)
    gt_idx, pred_idx = [hr[alone]], [hc[alone]]
    row_left, col_left = row_hits > 0, col_hits > 0
    row_left[hr[alone]] = False
    col_left[hc[alone]] = False
    rows, cols = np.flatnonzero(row_left), np.flatnonzero(col_left)
    if rows.size:
        sub = iou[np.ix_(rows, cols)]
        cost = -(sub >= threshold).astype(np.float64) - sub / (2.0 * min(iou.shape))
        r, c = linear_sum_assignment(cost)
        keep = sub[r, c] >= threshold
        gt_idx.append(rows[r[keep]])
        pred_idx.append(cols[c[keep]])
    g, p = np.concatenate(gt_idx), np.concatenate(pred_idx)
    order = np.argsort(g, kind="stable")
    return Matching(threshold, g[order], p[order], iou[g[order], p[order]])


def true_positives(iou: np.ndarray, thresholds: Sequence[float]) -> list[int]:
    """TP count at each threshold from one IoU matrix (one assignment per threshold)."""
    return [match(iou, t).tp for t in thresholds]


# --------------------------------------------------------------------------------------------- NMS


def mask_nms(instances: Sequence[Masked] | InstanceSet, scores: Sequence[float], iou_threshold: float) -> list[int]:
    """Greedy non-maximum suppression by *mask* IoU; returns the kept indices, highest score first.

    Each instance, in descending score (ties: input order), is kept unless its mask IoU with an already
    kept one is ``> iou_threshold`` (the torchvision / ultralytics convention). Box IoU would suppress
    touching cells, whose boxes overlap while their masks do not. Only kept instances whose boxes intersect
    are compared (pixel AND over the box intersection, as `iou_matrix`).
    """
    s = InstanceSet.of(instances, "instance")
    if len(scores) != len(s):
        raise ValueError(f"mask_nms: {len(scores)} scores for {len(s)} instances")
    kept: list[int] = []
    kept_boxes = np.zeros((len(s), 4), dtype=np.int64)  # the first len(kept) rows are in use
    for i in np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable").tolist():
        y0, x0, y1, x1 = s.boxes[i].tolist()
        kb = kept_boxes[: len(kept)]
        hits = np.flatnonzero((kb[:, 0] < y1) & (kb[:, 2] > y0) & (kb[:, 1] < x1) & (kb[:, 3] > x0))
        suppressed = False
        for j in (kept[h] for h in hits.tolist()):
            ky0, kx0, ky1, kx1 = s.boxes[j].tolist()
            iy0, ix0, iy1, ix1 = max(y0, ky0), max(x0, kx0), min(y1, ky1), min(x1, kx1)
            inter = np.count_nonzero(s.crops[i][iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0]
                                     & s.crops[j][iy0 - ky0 : iy1 - ky0, ix0 - kx0 : ix1 - kx0])
            union = int(s.areas[i]) + int(s.areas[j]) - inter
            if union and inter / union > iou_threshold:
                suppressed = True
                break
        if not suppressed:
            kept_boxes[len(kept)] = s.boxes[i]
            kept.append(i)
    return kept


# --------------------------------------------------------------------------------------------- boundary


def touches_frame(boxes: np.ndarray, height: int, width: int, frame: int) -> np.ndarray:
    """Boolean per box: does the instance have a pixel in the outer frame `frame` pixels wide?

    NeurIPS-CellSeg ``remove_boundary_cells`` drops a cell with any pixel in rows/columns ``< 2`` or
    ``>= H-2`` / ``>= W-2``; for a tight box that is ``y0 < w or x0 < w or y1-1 >= H-w or x1-1 >= W-w``.
    ``frame = 0`` switches the rule off.
    """
    boxes = np.asarray(boxes, dtype=np.int64).reshape(-1, 4)
    if frame <= 0:
        return np.zeros(len(boxes), dtype=bool)
    return (
        (boxes[:, 0] < frame)
        | (boxes[:, 1] < frame)
        | (boxes[:, 2] - 1 >= height - frame)
        | (boxes[:, 3] - 1 >= width - frame)
    )


def split_boundary(
    instances: Sequence[Masked], height: int, width: int, frame: int
) -> tuple[list[Masked], list[Masked]]:
    """``(kept, dropped)``: instances away from / touching the outer frame (see `touches_frame`)."""
    touch = touches_frame(boxes_of(instances), height, width, frame)
    kept = [inst for inst, t in zip(instances, touch, strict=True) if not t]
    dropped = [inst for inst, t in zip(instances, touch, strict=True) if t]
    return kept, dropped
