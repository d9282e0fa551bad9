"""IoU of overlapping instance sets, Hungarian matching and the boundary rule, on hand-computed shapes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from metrics.matching import (
    candidate_pairs,
    iou_matrix,
    mask_nms,
    match,
    split_boundary,
    touches_frame,
    true_positives,
)


@dataclass(frozen=True)
class Obj:
    """Minimal `Masked`: proves the metrics need nothing from the harness."""

    bbox: tuple[int, int, int, int]
    crop: np.ndarray


def rect(y0: int, x0: int, y1: int, x1: int) -> Obj:
    return Obj((y0, x0, y1, x1), np.ones((y1 - y0, x1 - x0), dtype=bool))


def from_mask(mask: np.ndarray) -> Obj:
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    return Obj((int(y0), int(x0), int(y1), int(x1)), mask[y0:y1, x0:x1].copy())


def greedy_tp(iou: np.ndarray, t: float) -> int:
    """Greedy by descending IoU (what a naive matcher does): the reference shows it loses TPs."""
    used_g, used_p, tp = set(), set(), 0
    for flat in np.argsort(-iou, axis=None, kind="stable"):
        i, j = np.unravel_index(flat, iou.shape)
        if iou[i, j] >= t and i not in used_g and j not in used_p:
            used_g.add(i)
            used_p.add(j)
            tp += 1
    return tp


# 1-D intervals of metrics.md §3.5 as one-row rectangles, shifted by +30 so p2=[-30,70) fits:
# g1=[30,130), g2=[50,150), p1=[35,135), p2=[0,100).
G1, G2, P1, P2 = rect(0, 30, 1, 130), rect(0, 50, 1, 150), rect(0, 35, 1, 135), rect(0, 0, 1, 100)


def test_interval_example_iou_by_hand() -> None:
    iou = iou_matrix([G1, G2], [P1, P2])
    expected = np.array([[95 / 105, 70 / 130], [85 / 115, 50 / 150]])
    np.testing.assert_allclose(iou, expected, rtol=0, atol=1e-15)


def test_hungarian_beats_greedy_when_one_prediction_overlaps_two_gt() -> None:
    iou = iou_matrix([G1, G2], [P1, P2])
    assert greedy_tp(iou, 0.5) == 1  # p1-g1 first, then p2's only partner g1 is taken
    m = match(iou, 0.5)
    assert m.tp == 2
    assert sorted(zip(m.gt.tolist(), m.pred.tolist(), strict=True)) == [(0, 1), (1, 0)]  # g1-p2, g2-p1
    assert true_positives(iou, [0.5, 0.75, 0.9, 0.95]) == [2, 1, 1, 0]  # 0.9048 >= 0.9 > 0.7391


def test_threshold_is_inclusive() -> None:
    # 4 of 8 pixels shared, union 8 → IoU exactly 0.5 counts at t = 0.5.
    iou = iou_matrix([rect(0, 0, 1, 6)], [rect(0, 2, 1, 8)])
    assert iou[0, 0] == 0.5
    assert match(iou, 0.5).tp == 1
    assert match(iou, 0.5 + 1e-12).tp == 0


def test_nested_ground_truth() -> None:
    big, small = rect(5, 5, 15, 15), rect(8, 8, 12, 12)  # small lies inside big: both annotated
    ring = np.zeros((20, 20), bool)
    ring[5:15, 5:15] = True
    ring[8:12, 8:12] = False  # prediction = big minus small (84 px)
    preds = [from_mask(ring), rect(8, 8, 12, 12)]
    iou = iou_matrix([big, small], preds)
    np.testing.assert_allclose(iou, [[84 / 100, 16 / 100], [0.0, 1.0]], atol=1e-15)
    assert true_positives(iou, [0.5, 0.75, 0.9]) == [2, 2, 1]
    # A prediction of only the big cell: it matches big (IoU 1), small stays a FN.
    assert true_positives(iou_matrix([big, small], [big]), [0.5]) == [1]


def test_overlapping_predictions_and_crop_offsets() -> None:
    # Two diagonal-ish shapes whose boxes overlap but whose pixels only partly do: exact pixel counts.
    a = np.zeros((12, 12), bool)
    a[np.tril_indices(12)] = True  # lower triangle incl. diagonal: 78 px
    b = np.zeros((12, 12), bool)
    b[2:10, 2:10] = True  # 64 px
    ga, pb = from_mask(a), from_mask(b)
    inter = int((a & b).sum())
    union = int((a | b).sum())
    assert iou_matrix([ga], [pb])[0, 0] == pytest.approx(inter / union, abs=1e-15)
    assert iou_matrix([ga, ga], [pb])[:, 0].tolist() == [inter / union] * 2  # duplicates allowed in a set


def test_disjoint_boxes_are_not_candidates_and_touching_edges_do_not_overlap() -> None:
    boxes_g = np.array([[0, 0, 5, 5], [10, 10, 20, 20]])
    boxes_p = np.array([[5, 0, 8, 5], [0, 4, 5, 9], [12, 12, 13, 13]])
    rows, cols = candidate_pairs(boxes_g, boxes_p)
    assert list(zip(rows.tolist(), cols.tolist(), strict=True)) == [
        (0, 1),
        (1, 2),
    ]  # [5,..) starts where [..,5) ends


def test_empty_sets() -> None:
    a = [rect(2, 2, 5, 5)]
    assert iou_matrix([], a).shape == (0, 1)
    assert iou_matrix(a, []).shape == (1, 0)
    assert iou_matrix([], []).shape == (0, 0)
    for iou in (iou_matrix([], a), iou_matrix(a, []), iou_matrix([], [])):
        assert true_positives(iou, [0.5, 0.9]) == [0, 0]


def test_crop_shape_must_match_bbox() -> None:
    bad = Obj((0, 0, 3, 3), np.ones((2, 3), bool))
    with pytest.raises(ValueError, match="crop shape"):
        iou_matrix([bad], [rect(0, 0, 3, 3)])


def test_hungarian_uses_total_iou_to_break_ties() -> None:
    # Both assignments give 2 TPs at 0.5; the tie-break picks the one with the larger total IoU.
    iou = np.array([[0.9, 0.6], [0.6, 0.55]])
    m = match(iou, 0.5)
    assert m.tp == 2
    assert sorted(zip(m.gt.tolist(), m.pred.tolist(), strict=True)) == [(0, 0), (1, 1)]  # 1.45 > 1.2


# --------------------------------------------------------------------------------------------- boundary


def test_cell_touching_only_column_w_minus_2() -> None:
    h, w = 20, 30
    cell = rect(8, 20, 12, 29)  # columns 20..28: last column W-2 = 28, never W-1
    assert touches_frame(np.array([cell.bbox]), h, w, 2).tolist() == [True]
    assert touches_frame(np.array([cell.bbox]), h, w, 1).tolist() == [False]
    assert touches_frame(np.array([cell.bbox]), h, w, 0).tolist() == [False]
    assert touches_frame(np.array([cell.bbox]), h, w, 3).tolist() == [True]


@pytest.mark.parametrize(
    ("box", "dropped_at_2", "dropped_at_1"),
    [
        ((1, 10, 5, 15), True, False),  # top: row 1
        ((10, 1, 15, 5), True, False),  # left: column 1
        ((14, 10, 19, 15), True, False),  # bottom: last row 18 = H-2
        ((10, 20, 15, 29), True, False),  # right: last column 28 = W-2
        ((0, 10, 5, 15), True, True),  # row 0
        ((10, 25, 15, 30), True, True),  # column W-1
        ((2, 2, 18, 28), False, False),  # rows 2..17, columns 2..27: inside the frame
    ],
)
def test_frame_on_each_side(box: tuple[int, int, int, int], dropped_at_2: bool, dropped_at_1: bool) -> None:
    assert touches_frame(np.array([box]), 20, 30, 2).tolist() == [dropped_at_2]
    assert touches_frame(np.array([box]), 20, 30, 1).tolist() == [dropped_at_1]


def test_boundary_rule_equals_neurips_label_map_rule() -> None:
    """Our bbox test keeps exactly the labels NeurIPS-CellSeg's `remove_boundary_cells` keeps (2-px frame)."""
    rng = np.random.default_rng(3)
    h, w = 40, 50
    labels = np.zeros((h, w), np.int32)
    for k in range(1, 40):
        y, x = rng.integers(0, h - 3), rng.integers(0, w - 3)
        labels[y : y + rng.integers(1, 6), x : x + rng.integers(1, 6)] = k
    frame = np.ones((h, w), bool)
    frame[2 : h - 2, 2 : w - 2] = False
    present = set(np.unique(labels)) - {0}
    expected_kept = present - set(np.unique(labels[frame]))
    instances = {k: from_mask(labels == k) for k in sorted(present)}
    kept, dropped = split_boundary(list(instances.values()), h, w, 2)
    kept_ids = {k for k, inst in instances.items() if any(inst is o for o in kept)}
    assert kept_ids == expected_kept
    assert len(kept) + len(dropped) == len(present)
    assert 0 < len(dropped) < len(present)


def test_min_iou_pruning_keeps_pairs_at_the_threshold() -> None:
    gt = [rect(0, 0, 1, 10), rect(5, 0, 15, 10)]
    pred = [rect(0, 1, 1, 10), rect(14, 9, 20, 20)]  # 9/10 exactly; a corner touch (1 px of 165)
    full = iou_matrix(gt, pred)
    assert full[0, 0] == 9 / 10 and full[1, 1] == 1 / 165
    pruned = iou_matrix(gt, pred, min_iou=0.9)
    assert pruned[0, 0] == 9 / 10 and pruned[1, 1] == 0.0  # cannot reach 0.9: never intersected
    assert true_positives(pruned, [0.9]) == true_positives(full, [0.9]) == [1]


def test_mask_nms_keeps_touching_cells_and_drops_duplicates_by_mask_iou() -> None:
    """Greedy by score; suppressed when mask IoU > t (strict); box overlap alone never suppresses."""
    ring = np.ones((10, 10), dtype=bool)
    ring[2:8, 2:8] = False  # 64 px; its box holds the inner square entirely
    a, inner = Obj((0, 0, 10, 10), ring), rect(2, 2, 8, 8)  # masks disjoint, boxes nested
    dup, half = rect(2, 2, 8, 8), rect(2, 2, 8, 5)  # IoU(inner, dup) = 1, IoU(inner, half) = 18/36 = 0.5
    far = rect(40, 40, 45, 45)
    instances, scores = [a, inner, dup, half, far], [0.5, 0.9, 0.8, 0.7, 0.1]
    assert mask_nms(instances, scores, 0.5) == [1, 3, 0, 4]  # dup suppressed (1.0 > 0.5); half kept (0.5 !> 0.5)
    assert mask_nms(instances, scores, 0.49) == [1, 0, 4]
    assert mask_nms(instances, [1.0] * 5, 0.9) == [0, 1, 3, 4]  # ties: input order
    assert mask_nms([], [], 0.5) == []
    with pytest.raises(ValueError, match="2 scores for 1 instances"):
        mask_nms([a], [0.1, 0.2], 0.5)
