"""CellSeg1's training data: images read and squashed, 256-px tiles, and what an epoch is.

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
- ``data/utils.py :: read_image_to_numpy``: an image is read as 3 channels, min-max scaled to 0..255
  (`to_rgb_float`; here per channel, as float, not rounded to uint8).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from adapters._upstream.cellseg1.augment import resize

if TYPE_CHECKING:
    from harness.records import Sample

logger = logging.getLogger(__name__)

#: The schedule keys `schedule_size` reads (the adapter's `train` keywords of the same names).
SCHEDULE_KEYS = ("epochs", "resize_size", "tile_size", "duplicate_data", "batch_size", "grad_accumulation",
                 "max_steps")


def to_rgb_float(image: np.ndarray) -> np.ndarray:
    """Any grayscale/RGB image → float32 HxWx3 in 0..255 (per-image min-max, as CellSeg1's reader)."""
    img = np.asarray(image, dtype=np.float32)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    lo, hi = img.min(axis=(0, 1), keepdims=True), img.max(axis=(0, 1), keepdims=True)
    return (img - lo) / np.maximum(hi - lo, 1e-6) * 255.0


def squash(image: np.ndarray, labels: np.ndarray | None, size: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Resize to size × size, aspect ratio not kept (CellSeg1's ``resize_size``), labels nearest."""
    return resize(image, size, size), (None if labels is None else resize(labels, size, size))


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


def make_tiles(samples: Sequence[Sample], resize_size: int, tile_size: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Squash each image (and its label map, nearest) to resize_size², cut every tile.

    The samples are flattened by the harness (`harness.flatten`, the config's ``label_maps``); they are only
    painted here, so an overlap left in is an error rather than a second rule.
    """
    from harness.flatten import label_image

    tiles = []
    for s in samples:
        labels = label_image(s)
        image, labels = squash(to_rgb_float(s.load_image()), labels, resize_size)
        tiles += cut_tiles(image, labels, tile_size)
    return tiles


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
