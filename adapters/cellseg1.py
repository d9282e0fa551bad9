"""CellSeg1 adapter: Segment Anything with LoRA, trained from few images, prompted by a point grid.

A rebuild of CellSeg1 (Zhou, Du, Xu 2024, arXiv 2412.01410; code hotaru1227/cellseg1 @ db3b336) on the PyPI
``segment-anything`` 1.0 package, because the authors' code hard-codes CUDA and vendors a modified SAM (see
shared/reference/models.md, C). The pieces, one module each in `adapters._upstream.cellseg1`: ``sam`` (SAM at
512 px + LoRA), ``network`` (base + LoRA + a released LoRA), ``tiles``, ``augment``, ``prompts``, ``loss``,
``train`` (the recipe), ``amg`` + ``nms`` (the generator), ``select`` (crop layers + cut picked on validation),
``checkpoint``, ``plain_sam`` (``generator: sam``, the paper's zero-shot baseline), ``released`` (the authors'
LoRA files); each names its deviations.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapters import register
from adapters._upstream.cellseg1 import amg, nms, plain_sam, select
from adapters._upstream.cellseg1 import checkpoint as checkpoints
from adapters._upstream.cellseg1 import tiles as tiling
from adapters._upstream.cellseg1 import train as training
from adapters._upstream.cellseg1.network import build_lora_sam
from adapters._upstream.cellseg1.released import released_specs, resolve_lora
from adapters._upstream.cellseg1.sam import check_variants, sam_specs
from adapters.torch_base import TorchAdapter
from harness.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np
    from torch import nn

    from harness.records import Instance, Sample

logger = logging.getLogger(__name__)


@register("cellseg1")
class CellSeg1Adapter(TorchAdapter):
    """SAM + LoRA trained on few images, automatic mask generation with mask-IoU NMS (CellSeg1)."""

    description = "CellSeg1: SAM (ViT-B/L/H at 512 px) + LoRA rank 4, point-grid masks, mask-IoU NMS"
    multiclass = False
    needs_label_maps = True
    packages = ("segment-anything", "torch")
    limits = {"image_size": ">= 16 and multiple of 16", "lora_rank": ">= 1", "lora_dropout": "in [0, 1)",
              "points_per_side": ">= 1", "points_per_batch": ">= 1", "crop_n_layers": ">= 0",
              "epochs": ">= 1", "learning_rate": "> 0", "batch_size": ">= 1", "grad_accumulation": ">= 1",
              "duplicate_data": ">= 1", "threshold_grid": "non-empty and in [0, 1]",
              "crop_layers_grid": "non-empty and >= 0", "balanced_fraction": "in [0, 1]", "max_steps": ">= 1"}
    weights = (*sam_specs(), *released_specs())

    def __init__(
        self, weights: str | None = None, device: str = "cpu", *, variant: str = "vit_b", image_size: int = 512,
        lora_rank: int = 4, lora_dropout: float = 0.1, scratch_variant: str | None = None, train_scope: str = "auto",
        generator: str = "cellseg1", lora_checkpoint: str | None = None, points_per_side: int = 32,
        points_per_batch: int = 64, crop_n_layers: int | None = None, crop_overlap_ratio: float = 512 / 1500,
        pred_iou_thresh: float | None = None, stability_score_thresh: float = 0.6,
        stability_score_offset: float = 0.8, mask_nms_thresh: float = 0.05, max_mask_region_area_ratio: float = 0.1,
        min_mask_region_area: int = 20,
    ) -> None:
        """Args (beyond the harness's `weights`/`device`):
        variant: vit_b / vit_l / vit_h (SAM weights) or small / tiny (random init only, CPU profiles, tests).
        image_size: model input size (CellSeg1: 512); SAM checkpoints are resized to it.
        scratch_variant: the variant built when there are no weights (random init); None = `variant`.
        train_scope: ``lora`` (the method: only LoRA trains), ``all`` (every weight trains; the checkpoint
            then holds everything) or ``auto``: lora on SAM weights, all on a random base.
        generator: ``cellseg1`` (the method's, `amg`) or ``sam``: plain SAM's own generator with SAM's defaults
            at 1024 px — the CellSeg1 paper's zero-shot baseline (no LoRA, no training).
        lora_checkpoint: a released CellSeg1 LoRA (known name, e.g. ``cellseg1_cellpose_specialized``, or a
            path) applied on the SAM `weights`: zero-shot with the authors' model.
        crop_n_layers, pred_iou_thresh: crop layers of the point grid and the predicted-IoU cut; None =
            picked on the validation split by `train` (`select`; CellSeg1's 1 and 0.8 before).
        points_per_side … min_mask_region_area: the generator's settings (`amg.GeneratorSettings`).
        """
        check_variants(variant, scratch_variant, weights)
        if train_scope not in ("auto", "lora", "all"):
            raise ConfigError(f"cellseg1: train_scope must be 'auto', 'lora' or 'all', not {train_scope!r}")
        if generator not in amg.GENERATORS:
            raise ConfigError(f"cellseg1: generator must be one of {', '.join(amg.GENERATORS)}, not {generator!r}")
        if generator == "sam" and lora_checkpoint is not None:
            raise ConfigError("cellseg1: generator 'sam' is plain SAM (no LoRA); drop lora_checkpoint or use "
                              "generator 'cellseg1'")
        if crop_n_layers is not None and not 0 <= int(crop_n_layers) <= 4:
            raise ConfigError(f"cellseg1: crop_n_layers must be 0..4 or null, not {crop_n_layers!r}")
        super().__init__(weights=weights, device=device)  # MissingWeightsError names the fetch command
        self._variants = {"pretrained": variant, "scratch": scratch_variant or variant}
        self._scope, self.generator, self.image_size = train_scope, generator, int(image_size)
        self.work_size = self.image_size  # squashed image size; the trained resize_size once trained/loaded
        self.lora_rank, self.lora_dropout = int(lora_rank), float(lora_dropout)
        self.amg = amg.GeneratorSettings(self.image_size, int(points_per_side), int(points_per_batch),
                                         float(crop_overlap_ratio), stability_score_thresh, stability_score_offset,
                                         mask_nms_thresh, max_mask_region_area_ratio, min_mask_region_area)
        self.crop_n_layers, self.pred_iou_thresh = crop_n_layers, pred_iou_thresh
        self.calibrated: dict[str, Any] = {}
        self.category = "cell"
        self.base_weights: str | None = str(weights) if weights is not None else None
        self.lora_checkpoint, self.lora_path = lora_checkpoint, resolve_lora(lora_checkpoint, self.weights_path)
        self._model: nn.Module | None = None
        self.base_fingerprint = 0.0  # of the base's values, set when the model is built (`checkpoint`)

    @property
    def variant(self) -> str:
        """The variant actually built: `variant` on weights, `scratch_variant` on a random base."""
        return self._variants["pretrained" if self.weights_path is not None else "scratch"]

    @property
    def train_scope(self) -> str:
        if self._scope != "auto":
            return self._scope
        return "lora" if self.weights_path is not None else "all"

    @property
    def run_note(self) -> str:
        """How the SAM weights run (generator, LoRA), appended to a zero-shot row's init."""
        if self.generator == "sam":
            return f" ({plain_sam.DESCRIPTION}, image squashed to {self.work_size} px)"
        if self.lora_checkpoint:
            return f" + LoRA {self.lora_checkpoint} (CellSeg1 generator at {self.image_size} px)"
        return f" (SAM at {self.image_size} px, untrained LoRA = plain SAM, CellSeg1 generator)"

    @property
    def model(self) -> nn.Module:
        """Built on first use from `weights_path` (+ `lora_path`): plain SAM for ``generator: sam``, else the
        LoRA SAM (`network.build_lora_sam`; a random base from a fixed seed, checked by its fingerprint)."""
        if self._model is None and self.generator == "sam":
            self._model = plain_sam.build_plain_sam(self.variant, self.weights_path, self.device)
        elif self._model is None:
            self._model, self.base_fingerprint = build_lora_sam(
                self.variant, self.image_size, self.weights_path, self.lora_rank, self.lora_dropout, self.lora_path,
                self.train_scope, self.device)
        return self._model

    # ------------------------------------------------------------------ training

    @classmethod
    def rehearsal_schedule(cls, schedule: dict[str, Any], steps: int) -> dict[str, Any]:
        """`schedule` cut to `steps` optimiser steps: every epoch takes at least one, `max_steps` stops there."""
        return {**schedule, "epochs": int(steps), "max_steps": int(steps)}

    @classmethod
    def schedule_size(cls, schedule: dict[str, Any], n_train: int) -> tuple[int, int]:
        """``(optimiser steps, tiles drawn)`` of `schedule` on `n_train` training images (`tiles.schedule_size`)."""
        full = cls.full_schedule(schedule)
        return tiling.schedule_size(n_train, **{k: full[k] for k in tiling.SCHEDULE_KEYS})

    def train(
        self, train_samples: Sequence[Sample], val_samples: Sequence[Sample], out_dir: Path, *, epochs: int = 300,
        learning_rate: float = 3e-3, weight_decay: float = 1e-2, batch_size: int = 4, grad_accumulation: int = 8,
        duplicate_data: int = 32, resize_size: int = 512, tile_size: int = 256, max_points: int = 30,
        neg_rate: float = 0.5, min_cell_area: int = 100, edge_distance: int = 20, pct_start: float = 0.3,
        augmentation: bool = True, crop_layers_grid: Sequence[int] = (0, 1, 2),
        threshold_grid: Sequence[float] = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95), dice_weight: float = 0.0,
        balanced_fraction: float = 0.0, max_steps: int | None = None,
    ) -> Path:
        """Fine-tune (LoRA) on point prompts from priority-resolved masks (`train.fit`); pick crop layers + cut.

        One epoch = one shuffled pass over every tile (duplicated up to `duplicate_data`); a step every
        `grad_accumulation` batches and at the epoch's end; `max_steps` stops there (rehearsals). Not in
        CellSeg1: ``dice_weight`` (a dice term) and ``balanced_fraction`` (class-balanced BCE first, what lets a
        random-init SAM learn, `loss.mask_bce`). Draws from the run's seed; returns ``out_dir/cellseg1.pt``.
        """
        return training.fit(
            self, train_samples, val_samples, out_dir, epochs=epochs, learning_rate=learning_rate,
            weight_decay=weight_decay, batch_size=batch_size, grad_accumulation=grad_accumulation,
            duplicate_data=duplicate_data, resize_size=resize_size, tile_size=tile_size, max_points=max_points,
            neg_rate=neg_rate, min_cell_area=min_cell_area, edge_distance=edge_distance, pct_start=pct_start,
            augmentation=augmentation, crop_layers_grid=crop_layers_grid, threshold_grid=threshold_grid,
            dice_weight=dice_weight, balanced_fraction=balanced_fraction, max_steps=max_steps)

    def load(self, checkpoint: Path) -> None:
        """Rebuild the base named in the checkpoint (must match this adapter's), load the trained tensors."""
        checkpoints.load(self, checkpoint)

    # ------------------------------------------------------------------ prediction

    @property
    def iou_thresh(self) -> float:
        """The predicted-IoU cut: `pred_iou_thresh`, else what `train` picked, else CellSeg1's 0.8."""
        given = self.pred_iou_thresh
        return float(given if given is not None else self.calibrated.get("pred_iou_thresh", select.DEFAULT_THRESH))

    @property
    def n_layers(self) -> int:
        """The crop layers: `crop_n_layers`, else what `train` picked, else CellSeg1's 1."""
        given = self.crop_n_layers
        return int(given if given is not None else self.calibrated.get("crop_n_layers", select.DEFAULT_LAYERS))

    def predict(self, image: np.ndarray) -> list[Instance]:
        """Masks on the image squashed to the work size (`amg`, `nms`), resized back (overlaps allowed)."""
        h, w = image.shape[:2]
        work, _ = tiling.squash(tiling.to_rgb_float(image), None, self.work_size)
        if self.generator == "sam":
            cands = [amg.Candidate(*rec) for rec in plain_sam.generate(self.model, work)]
        else:
            cands = nms.keep(amg.candidates(self.model, work, self.amg, self.iou_thresh, self.n_layers, self.device),
                             self.iou_thresh, self.amg.mask_nms_thresh)
        return amg.to_instances(cands, self.work_size, h, w, self.category)
