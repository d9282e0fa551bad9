"""CellSeg1's training data: squashed images, 256-px tiles, what an epoch is, and the point prompts.

Follows the authors' code (hotaru1227/cellseg1 @ db3b336):
- ``data/dataset.py :: TrainDataset``: every image (and label map, nearest) is resized to ``resize_size`` ×
  ``resize_size`` — squashed, the aspect ratio is not kept; prediction squashes the same way — and cut by
  cellpose's ``make_tiles`` with 50 % overlap (``ceil(2 L / tile)`` tiles per side, starts on a linspace), every
  tile kept (a tile without cells still teaches the IoU head with a background point); the tile list is
  repeated ``duplicate_data // n + 1`` times when it has fewer than ``duplicate_data`` entries.
- ``cellseg1_train.py``: one epoch = one shuffled pass over that list in batches (the last may be short); an
  optimiser step every ``gradient_accumulation_step`` batches and at the end of the epoch; OneCycleLR over
  ``epoch_max * (batches + GA - 1) // GA`` steps — CellSeg1's expression, kept as is: it is at least the number
  of steps taken, so the schedule ends 85-95 % through its cycle, as in the runs behind the paper.
- ``sampler.py :: sample_points``: positives from ``ceil(cells × pos_rate)`` random cells (at most
  ``max_points``), each a point drawn uniformly from the 20 % of the cell farthest from its boundary, skipping
  cells of ``<= min_cell_area`` px or lying within ``edge_distance`` px of the tile border; negatives
  ``ceil(cells × neg_rate)`` (none when cells cover over 5× the background, one when the tile has no cell, at
  most one per 1000 px of sampling area) drawn uniformly from the 20 % of the background farthest from cells.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

NEG_AREA_RATIO = 5  # sample_points: no negatives when cells cover more than 5x the background
NEG_AREA_PER_POINT = 1000  # at most one negative per 1000 px of background sampling area (+ 1)
SAMPLE_AREA_RATIO = 0.2  # foreground/background_sample_area_ratio: the farthest 20 % of the pixels


def tile_starts(size: int, tile: int) -> list[int]:
    """Start offsets of cellpose's ``make_tiles`` at 50 % overlap: ``ceil(2 size / tile)`` tiles on a linspace."""
    if size <= tile:
        return [0]
    n = math.ceil(2.0 * size / tile)
    return [int(v) for v in np.linspace(0, size - tile, n).astype(int)]


def tiles_per_image(resize_size: int, tile_size: int) -> int:
    """Tiles cut from one squashed image (every image gives the same number)."""
    return len(tile_starts(resize_size, tile_size)) ** 2


def cut_tiles(image: np.ndarray, labels: np.ndarray, tile: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """All tiles of a (squashed) image and its label map, row by row; empty tiles included."""
    h, w = labels.shape
    return [(image[y:y + tile, x:x + tile], labels[y:y + tile, x:x + tile])
            for y in tile_starts(h, tile) for x in tile_starts(w, tile)]


def dataset_size(n_tiles: int, duplicate: int) -> int:
    """Samples per epoch: the tile list, repeated ``duplicate // n + 1`` times when shorter than `duplicate`."""
    if duplicate > 0 and 0 < n_tiles < duplicate:
        return n_tiles * (duplicate // n_tiles + 1)
    return n_tiles


@dataclass(frozen=True)
class EpochPlan:
    """Batches of one epoch and how they group into optimiser steps."""

    samples: int
    batch_size: int
    grad_accumulation: int

    @property
    def batches(self) -> int:
        return math.ceil(self.samples / self.batch_size)

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.batches / self.grad_accumulation)

    def window(self, batch: int) -> int:
        """Number of batches accumulated into the optimiser step that batch `batch` belongs to."""
        first = batch // self.grad_accumulation * self.grad_accumulation
        return min(self.grad_accumulation, self.batches - first)

    def steps_after(self, batch: int) -> bool:
        """Whether the optimiser steps after batch `batch` (0-based) of the epoch."""
        return (batch + 1) % self.grad_accumulation == 0 or batch + 1 == self.batches

    def scheduler_steps(self, epochs: int) -> int:
        """OneCycleLR length, CellSeg1's expression ``epoch_max * (batches + GA - 1) // GA``."""
        return epochs * (self.batches + self.grad_accumulation - 1) // self.grad_accumulation


def schedule_size(n_images: int, *, epochs: int, resize_size: int, tile_size: int, duplicate_data: int,
                  batch_size: int, grad_accumulation: int, max_steps: int | None = None) -> tuple[int, int]:
    """``(optimiser steps, tiles drawn)`` of a schedule on `n_images` training images."""
    plan = EpochPlan(dataset_size(n_images * tiles_per_image(resize_size, tile_size), duplicate_data),
                     batch_size, grad_accumulation)
    steps = epochs * plan.steps_per_epoch
    if max_steps is None or max_steps >= steps:
        return steps, epochs * plan.samples
    full, rest = divmod(max_steps, plan.steps_per_epoch)  # rest < steps per epoch: only whole windows
    return max_steps, full * plan.samples + rest * grad_accumulation * batch_size


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
