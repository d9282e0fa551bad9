"""Pieces of the CellSeg1 adapter (`adapters.cellseg1`), one concern per module.

``sam`` (SAM at 512 px + LoRA), ``tiles`` (training tiles and what an epoch is), ``augment`` (the upstream
augmentation), ``released`` (the authors' released LoRA files), ``select`` (crop layers + threshold picked on
validation), ``plain_sam`` (SAM's own generator: the zero-shot baseline).
"""
