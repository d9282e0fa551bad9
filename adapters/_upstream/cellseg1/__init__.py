"""Pieces of the CellSeg1 adapter (`adapters.cellseg1`), one concern per module.

``sam`` (SAM at 512 px + LoRA; embedding and decoding), ``network`` (the adapter's network: SAM + LoRA + a
released LoRA), ``tiles`` (images read and squashed, training tiles,
what an epoch is), ``augment`` (the upstream augmentation), ``prompts`` (point prompts from a tile's label
map), ``loss`` (BCE + IoU-head MSE, the balanced variant, stability), ``train`` (the training loop), ``amg``
(the point-grid mask generator over crop layers), ``nms`` (mask-IoU NMS), ``select`` (crop layers + cut picked
on validation), ``checkpoint`` (what a trained model's file holds), ``plain_sam`` (SAM's own generator: the
zero-shot baseline), ``released`` (the authors' released LoRA files).
"""
