"""CellSeg1's loss (``cell_loss.py``) and the balanced variant a random-init SAM needs; SAM's stability score.

Per prompt: BCE on a positive's low-res mask logits against its cell's mask, and MSE of the IoU head against
1 (a cell's point) or 0 (a background point); the batch loss is the mean over its tiles (`prompt_loss`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from harness.errors import ConfigError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from adapters._upstream.cellseg1.train import TileBatchItem

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


def prompt_loss(sam: nn.Module, items: Sequence[TileBatchItem], device: str, dice_weight: float = 0.0,
                mask_loss: str = "bce") -> torch.Tensor | None:
    """BCE on positives' low-res logits + MSE of the IoU head (1 cell / 0 background), batch mean; plus
    `dice_weight` x soft dice on the positives; ``balanced_bce`` see `mask_bce`. None: no tile has a prompt."""
    import torch
    import torch.nn.functional as F

    from adapters._upstream.cellseg1.sam import decode, embed

    items = [it for it in items if len(it.points)]
    if not items:
        return None
    emb = embed(sam, np.stack([it.image for it in items]), device)
    total = []
    for k, it in enumerate(items):
        logits, iou = decode(sam, emb[k:k + 1], torch.as_tensor(it.points, device=device))
        pos = torch.as_tensor(it.positive, device=device)
        target = torch.as_tensor(it.masks, device=device, dtype=torch.float32)
        target = F.interpolate(target[:, None], size=logits.shape[-2:], mode="nearest")[:, 0]
        loss = F.mse_loss(iou, pos.float())
        if pos.any():
            loss = loss + mask_bce(logits[pos], target[pos], mask_loss)
            if dice_weight > 0:
                prob, tgt = torch.sigmoid(logits[pos]).flatten(1), target[pos].flatten(1)
                dice = 1 - (2 * (prob * tgt).sum(1) + 1) / (prob.sum(1) + tgt.sum(1) + 1)
                loss = loss + dice_weight * dice.mean()
        total.append(loss)
    return torch.stack(total).mean()
