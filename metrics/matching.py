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
    """Anything with a tight pixel mask: ``harness.data.Instance`` satisfies it."""

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


def areas_of(instances: Sequence[Masked]) -> np.ndarray:
    """Pixel count of each instance's crop (int64)."""
    return np.array([np.count_nonzero(inst.crop) for inst in instances], dtype=np.int64)


def check_crops(instances: Sequence[Masked], boxes: np.ndarray, what: str) -> None:
    """Crops must have their box's shape: a mismatch would silently shift every intersection."""
    for k, inst in enumerate(instances):
        y0, x0, y1, x1 = boxes[k]
        if inst.crop.shape != (y1 - y0, x1 - x0):
            raise ValueError(f"{what} instance {k}: crop shape {inst.crop.shape} does not match its bbox "
                             f"{tuple(int(v) for v in boxes[k])}")


def candidate_pairs(gt_boxes: np.ndarray, pred_boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(i, j)`` of ground-truth/prediction pairs whose boxes intersect (all others have IoU 0)."""
    if len(gt_boxes) == 0 or len(pred_boxes) == 0:
        empty = np.zeros(0, dtype=np.intp)
        return empty, empty
    g = gt_boxes[:, None, :]
    p = pred_boxes[None, :, :]
    overlap = (np.maximum(g[..., 0], p[..., 0]) < np.minimum(g[..., 2], p[..., 2])) & (
        np.maximum(g[..., 1], p[..., 1]) < np.minimum(g[..., 3], p[..., 3])
    )
    return np.nonzero(overlap)


def iou_matrix(gt: Sequence[Masked], pred: Sequence[Masked]) -> np.ndarray:
    """Dense ``n_gt × n_pred`` IoU matrix (float64), exact, from box prefilter + crop intersections."""
    gt_boxes, pred_boxes = boxes_of(gt), boxes_of(pred)
    check_crops(gt, gt_boxes, "ground-truth")
    check_crops(pred, pred_boxes, "predicted")
    iou = np.zeros((len(gt), len(pred)), dtype=np.float64)
    rows, cols = candidate_pairs(gt_boxes, pred_boxes)
    if rows.size == 0:
        return iou
    gt_area, pred_area = areas_of(gt), areas_of(pred)
    gt_crops = [inst.crop for inst in gt]
    pred_crops = [inst.crop for inst in pred]
    inter = np.empty(rows.size, dtype=np.int64)
    for k, (i, j) in enumerate(zip(rows.tolist(), cols.tolist())):
        gy0, gx0, gy1, gx1 = gt_boxes[i].tolist()
        py0, px0, py1, px1 = pred_boxes[j].tolist()
        y0, x0, y1, x1 = max(gy0, py0), max(gx0, px0), min(gy1, py1), min(gx1, px1)
        a = gt_crops[i][y0 - gy0 : y1 - gy0, x0 - gx0 : x1 - gx0]
        b = pred_crops[j][y0 - py0 : y1 - py0, x0 - px0 : x1 - px0]
        inter[k] = np.count_nonzero(a & b)
    union = gt_area[rows] + pred_area[cols] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou[rows, cols] = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
    return iou


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

    Rows and columns without any IoU >= `threshold` can never hold a true positive and contribute at
    most a tie-break to the cost, so they are left out of the assignment: the number of true positives
    (the maximum number of disjoint pairs with IoU >= t) is the same, and the problem is much smaller.
    The tie-break denominator is ``2 * min(n_gt, n_pred)`` of the full matrix, as in cellpose.
    """
    empty = np.zeros(0, dtype=np.intp)
    if iou.size == 0:
        return Matching(threshold, empty, empty, np.zeros(0))
    hit = iou >= threshold
    rows = np.flatnonzero(hit.any(axis=1))
    cols = np.flatnonzero(hit.any(axis=0))
    if rows.size == 0:
        return Matching(threshold, empty, empty, np.zeros(0))
    n_min = min(iou.shape)
    sub = iou[np.ix_(rows, cols)]
    cost = -(sub >= threshold).astype(np.float64) - sub / (2.0 * n_min)
    r, c = linear_sum_assignment(cost)
    keep = sub[r, c] >= threshold
    return Matching(threshold, rows[r[keep]], cols[c[keep]], sub[r[keep], c[keep]])


def true_positives(iou: np.ndarray, thresholds: Sequence[float]) -> list[int]:
    """TP count at each threshold from one IoU matrix (one assignment per threshold)."""
    return [match(iou, t).tp for t in thresholds]


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
    kept = [inst for inst, t in zip(instances, touch) if not t]
    dropped = [inst for inst, t in zip(instances, touch) if t]
    return kept, dropped
