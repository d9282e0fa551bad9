"""The CellSeg1 paper's zero-shot baseline: plain SAM with its own automatic mask generator and SAM's defaults.

``experiment_in_paper/test_zeroshot_sam.py`` runs the official ``SamAutomaticMaskGenerator(build_sam_vit_h(
ckpt))`` with no arguments — a 1024-px model, a 32 × 32 point grid, ``pred_iou_thresh`` 0.88,
``stability_score_thresh`` 0.95 (offset 1.0), box NMS 0.7, no crop layers, no small-region cleanup — on each test
image after ``TestDataset`` resized it to the dataset's ``resize_size``; the generator itself scales that image
to 1024 px on its long side. Here: the same call on the PyPI ``segment-anything`` package, the image squashed to
the adapter's work size first (as the fine-tuned CellSeg1 sees it), masks resized back to the image.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from adapters._upstream.cellseg1.sam import build_sam, load_sam_file
from harness.masks import tighten

if TYPE_CHECKING:
    from torch import nn

logger = logging.getLogger(__name__)

SAM_SIZE = 1024  # segment_anything's builders: the size SAM was trained at
DESCRIPTION = "plain SAM, SamAutomaticMaskGenerator defaults at 1024 px"


def build_plain_sam(variant: str, weights: Path | None, device: str) -> nn.Module:
    """SAM of `variant` at 1024 px, weights loaded unchanged (a random init only in tests)."""
    sam = build_sam(variant, SAM_SIZE)
    if weights is not None:
        load_sam_file(sam, weights, variant)
    return sam.to(device).eval()


def generate(sam: nn.Module, rgb: np.ndarray) -> list[tuple[int, int, np.ndarray, float, float]]:
    """SAM's generator with its defaults on a float 0..255 HxWx3 image → ``(y0, x0, crop, iou, stability)``."""
    from segment_anything import SamAutomaticMaskGenerator

    records = SamAutomaticMaskGenerator(sam).generate(np.clip(rgb, 0, 255).round().astype(np.uint8))
    out = []
    for r in records:
        y0, x0, crop = tighten(0, 0, r["segmentation"])
        if crop.size:
            out.append((y0, x0, crop, float(r["predicted_iou"]), float(r["stability_score"])))
    logger.info("cellseg1 zero-shot (%s): %d masks", DESCRIPTION, len(out))
    return out
