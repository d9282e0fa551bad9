"""The CellSeg1 adapter's network: a SAM base, LoRA on it, and (optionally) the authors' released LoRA loaded.

Above both `sam` (SAM + LoRA modules) and `released` (the released files, converted onto `sam`'s module names),
so neither imports the other's caller: the imports run one way, network → released → sam.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from adapters._upstream.cellseg1.released import load_released_lora
from adapters._upstream.cellseg1.sam import SCRATCH_SEED, add_lora, build_sam, fingerprint, load_sam_file

if TYPE_CHECKING:
    from pathlib import Path

    from torch import nn

logger = logging.getLogger(__name__)


def build_lora_sam(variant: str, image_size: int, sam_path: Path | None, lora_rank: int, lora_dropout: float,
                   lora_path: Path | None, train_scope: str, device: str) -> tuple[nn.Module, float]:
    """Base SAM (checkpoint or seeded random init) on CPU → LoRA (+ a released one) → device; and the base's
    `fingerprint`. Random values come from `SCRATCH_SEED`, whatever the global generators hold."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SCRATCH_SEED)
        sam = build_sam(variant, image_size)
    if sam_path is not None:
        load_sam_file(sam, sam_path, variant)
    base_fingerprint = fingerprint(sam)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SCRATCH_SEED + 1)
        add_lora(sam, lora_rank, lora_dropout)
    if lora_path is not None:
        load_released_lora(sam, lora_path, variant, lora_rank)
    if train_scope == "all":
        for p in sam.parameters():
            p.requires_grad_(True)
    return sam.to(device).eval(), base_fingerprint
