"""Cross-check against the reference: `cellpose.metrics.average_precision` on non-overlapping label maps.

With one label per pixel our instance-list IoU and matching must give exactly cellpose's TP/FP/FN at every
threshold (boundary rule off, since cellpose has none). Our side gets random, non-consecutive label
values; cellpose 3.x counts instances as ``labels.max()``, so it gets the same maps relabelled sequentially.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from skimage.segmentation import relabel_sequential

from metrics.matching import iou_matrix, true_positives
from metrics.scores import Counts

THRESHOLDS = [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95]


class Obj:
    def __init__(self, bbox: tuple[int, int, int, int], crop: np.ndarray) -> None:
        self.bbox, self.crop = bbox, crop


def instances_from_labels(labels: np.ndarray) -> list[Obj]:
    """One instance per label present (find_objects boxes; a label may have several pieces)."""
    out = []
    for k, sl in enumerate(ndimage.find_objects(labels), 1):
        if sl is not None:
            out.append(Obj((sl[0].start, sl[1].start, sl[0].stop, sl[1].stop), labels[sl] == k))
    return out


def paint(rng: np.random.Generator, shape: tuple[int, int], n: int, ids: np.ndarray) -> np.ndarray:
    """Painter's-order ellipses and rectangles: later shapes overwrite earlier ones (pieces may split)."""
    h, w = shape
    labels = np.zeros(shape, np.int32)
    yy, xx = np.mgrid[:h, :w]
    for k in range(n):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        ry, rx = rng.uniform(2, 9), rng.uniform(2, 9)
        if rng.random() < 0.5:
            inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        else:
            inside = (abs(yy - cy) <= ry) & (abs(xx - cx) <= rx)
        labels[inside] = ids[k]
    return labels


def jitter(rng: np.random.Generator, labels: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """A plausible prediction: each object shifted by a pixel or two, some dropped, some spurious ones."""
    out = np.zeros_like(labels)
    present = [v for v in np.unique(labels) if v]
    for n, v in enumerate(present):
        if rng.random() < 0.15:
            continue
        dy, dx = rng.integers(-2, 3, size=2)
        ys, xs = np.nonzero(labels == v)
        ys, xs = np.clip(ys + dy, 0, labels.shape[0] - 1), np.clip(xs + dx, 0, labels.shape[1] - 1)
        out[ys, xs] = ids[n]
    extra = paint(rng, labels.shape, int(rng.integers(0, 4)), ids[len(present) :])
    out[extra > 0] = extra[extra > 0]
    return out


@pytest.mark.filterwarnings("ignore:invalid value encountered in divide")  # cellpose: 0/0 on empty images
def test_identical_counts_to_cellpose_on_random_label_maps() -> None:
    cp_metrics = pytest.importorskip("cellpose.metrics", reason="cellpose is the reference implementation")
    rng = np.random.default_rng(2024)
    truths, preds = [], []
    for _ in range(60):
        shape = (int(rng.integers(24, 80)), int(rng.integers(24, 80)))
        n = int(rng.integers(0, 25))
        ids = rng.permutation(np.arange(1, 400))  # non-consecutive label values
        truth = paint(rng, shape, n, ids[:n])
        pred = jitter(rng, truth, rng.permutation(np.arange(1, 400)))
        if rng.random() < 0.1:
            pred[:] = 0  # an image without predictions
        truths.append(truth)
        preds.append(pred)
    sequential = [relabel_sequential(m)[0] for m in (*truths, *preds)]
    _, tp, fp, fn = cp_metrics.average_precision(
        sequential[: len(truths)], sequential[len(truths) :], threshold=THRESHOLDS
    )

    total_tp = 0
    for n, (truth, pred) in enumerate(zip(truths, preds, strict=True)):
        gt_inst, pred_inst = instances_from_labels(truth), instances_from_labels(pred)
        tps = true_positives(iou_matrix(gt_inst, pred_inst), THRESHOLDS)
        ours = [Counts.from_matching(t, len(gt_inst), len(pred_inst)) for t in tps]
        assert [c.tp for c in ours] == tp[n].astype(int).tolist(), f"image {n}"
        assert [c.fp for c in ours] == fp[n].astype(int).tolist(), f"image {n}"
        assert [c.fn for c in ours] == fn[n].astype(int).tolist(), f"image {n}"
        # The pruned matrix evaluate() uses (pairs that cannot reach IoU 0.5 skipped) gives the same TPs.
        assert true_positives(iou_matrix(gt_inst, pred_inst, min_iou=0.5), THRESHOLDS) == tps
        total_tp += tps[0]
    assert total_tp > 200  # the cross-check exercised real matches, not only empty images
