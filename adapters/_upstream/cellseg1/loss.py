"""CellSeg1's loss (``cell_loss.py``) and the balanced variant a random-init SAM needs."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from harness.errors import ConfigError

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

MASK_LOSSES = ("bce", "balanced_bce")


def mask_bce(logits: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    """Pixel BCE of (N, h, w) mask logits against 0/1 targets, mean over pixels and masks.

    ``bce`` is CellSeg1's loss. ``balanced_bce`` (not in CellSeg1) gives each mask's cell pixels and its
    background pixels half of the weight each: a cell covers ~2 % of a tile, so under plain BCE a
    randomly initialised SAM settles on all-background masks for every prompt (measured: constant logits
    near -4 after training) and never starts to follow the prompt; pretrained SAM does not need it.
    """
    import torch
    import torch.nn.functional as F

    if kind == "bce":
        return F.binary_cross_entropy_with_logits(logits, target)
    if kind != "balanced_bce":
        raise ConfigError(f"cellseg1: mask_loss must be one of {', '.join(MASK_LOSSES)}, not {kind!r}")
    fg = target.flatten(1).mean(1).clamp(1e-4, 1 - 1e-4)[:, None, None]
    weight = torch.where(target > 0, 0.5 / fg, 0.5 / (1 - fg))
    return F.binary_cross_entropy_with_logits(logits, target, weight=weight)


def stability(logits: torch.Tensor, offset: float) -> torch.Tensor:
    """SAM's stability score: IoU of the masks thresholded at +offset and -offset (logit 0 = mask)."""
    inter = (logits > offset).flatten(1).sum(-1).float()
    union = (logits > -offset).flatten(1).sum(-1).float()
    return inter / union.clamp(min=1)
