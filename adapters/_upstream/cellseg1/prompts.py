"""CellSeg1's point prompts: one positive point per sampled cell, background points, from one tile's label map.

Follows ``sampler.py :: sample_points`` (hotaru1227/cellseg1 @ db3b336): positives from ``ceil(cells ×
pos_rate)`` random cells (at most ``max_points``), each a point drawn uniformly from the 20 % of the cell
farthest from its boundary, skipping cells of ``<= min_cell_area`` px or lying within ``edge_distance`` px of
the tile border; negatives ``ceil(cells × neg_rate)`` (none when cells cover over 5× the background, one when
the tile has no cell, at most one per 1000 px of sampling area) drawn uniformly from the 20 % of the
background farthest from cells. The label map is priority-resolved, so each prompt has one target.
"""

from __future__ import annotations

import logging
import math

import numpy as np

logger = logging.getLogger(__name__)

NEG_AREA_RATIO = 5  # sample_points: no negatives when cells cover more than 5x the background
NEG_AREA_PER_POINT = 1000  # at most one negative per 1000 px of background sampling area (+ 1)
SAMPLE_AREA_RATIO = 0.2  # foreground/background_sample_area_ratio: the farthest 20 % of the pixels


def _farthest(dist: np.ndarray, ratio: float) -> np.ndarray:
    """sampler.py :: filter_small_distance: the pixels among the `ratio` share with the largest distance."""
    values = dist[dist > 0]
    if values.size == 0:
        return np.zeros(dist.shape, bool)
    k = max(1, int(values.size * ratio))
    threshold = np.partition(values, values.size - k)[values.size - k]
    return dist >= max(threshold, np.finfo(np.float32).tiny)


def sample_prompts(labels: np.ndarray, rng: np.random.Generator, max_points: int, neg_rate: float,
                   min_cell_area: int, edge_distance: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positive and background points of one tile, as ``sampler.py :: sample_points`` (see the module doc).

    Returns points (N, 2) as (x, y) pixel indices (SAM's prompt encoder adds the 0.5), label ids
    (0 = background), positive flags.
    """
    import cv2
    from scipy import ndimage

    h, w = labels.shape
    slices = ndimage.find_objects(labels)
    cells = [k + 1 for k, sl in enumerate(slices) if sl is not None]
    pts: list[tuple[float, float]] = []
    ids: list[int] = []
    for k in rng.permutation(cells)[:max_points].tolist() if cells else []:
        sl = slices[k - 1]
        if sl[0].stop < edge_distance or sl[1].stop < edge_distance or sl[0].start > h - edge_distance \
                or sl[1].start > w - edge_distance:
            continue  # sampler.py :: check_at_edge
        cell = labels[sl] == k
        if int(cell.sum()) <= min_cell_area:
            continue
        dist = cv2.distanceTransform(np.pad(cell, 1).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        ys, xs = np.nonzero(_farthest(dist[1:-1, 1:-1], SAMPLE_AREA_RATIO))
        i = rng.integers(len(ys))
        pts.append((sl[1].start + xs[i], sl[0].start + ys[i]))
        ids.append(k)
    cell_px = int((labels > 0).sum())
    n_neg = min(max_points, math.ceil(len(cells) * neg_rate))
    if cell_px > NEG_AREA_RATIO * (h * w - cell_px):
        n_neg = 0
    if not cells and n_neg == 0:
        n_neg = 1
    if n_neg:
        background = cv2.distanceTransform(np.pad(labels == 0, 1, constant_values=False).astype(np.uint8),
                                           cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
        bys, bxs = np.nonzero(_farthest(background, SAMPLE_AREA_RATIO))
        n_neg = min(n_neg, len(bys) // NEG_AREA_PER_POINT + 1) if len(bys) else 0
        for i in rng.integers(len(bys), size=n_neg):
            pts.append((bxs[i], bys[i]))
            ids.append(0)
    points = np.asarray(pts, np.float32).reshape(-1, 2)
    id_arr = np.asarray(ids, np.int64)
    return points, id_arr, id_arr > 0
