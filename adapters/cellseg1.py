"""CellSeg1 adapter: Segment Anything with LoRA, trained from few images, prompted by a point grid.

A rebuild of CellSeg1 (Zhou, Du, Xu 2024, arXiv 2412.01410; code hotaru1227/cellseg1 @ db3b336) on the PyPI
``segment-anything`` 1.0 package, because the authors' code hard-codes CUDA and vendors a modified SAM (see
shared/reference/models.md, C). The pieces live in `adapters._upstream.cellseg1`:

- ``sam``: SAM (ViT-B/L/H, or small random-init configs for CPU) at 512 px, 1024-px checkpoints resized as
  CellSeg1 does; LoRA rank 4 on q/v of every encoder block and every mask-decoder attention, the rest frozen.
- ``tiles`` + ``augment``: every training image squashed to ``resize_size``² (prediction squashes the same
  way), cut into 256-px tiles with 50 % overlap, duplicated up to 32; one epoch = one shuffled pass over them;
  CellSeg1's augmentation (brightness/contrast, flips, random resized crop, shift-scale-rotate) to the model
  size; one positive point per sampled cell + background points, from the priority-resolved label map so each
  prompt has one target. Loss: BCE on the positives' low-res logits + MSE of the IoU head (1 cell / 0
  background); AdamW + OneCycleLR as CellSeg1's ``cellseg1_train.py``.
- Prediction (here): a point grid over the image and over the crops of ``crop_n_layers``, stability /
  predicted-IoU thresholds, masks on inner crop edges dropped, mask-IoU NMS (not box NMS, which suppresses
  touching cells), large-mask filter, largest connected piece, masks resized back to full size.
  ``select``: `train` picks the crop layers and the predicted-IoU cut jointly on the validation split.
- Zero-shot: ``generator: sam`` runs plain SAM's own generator with SAM's defaults at 1024 px (``plain_sam``,
  the CellSeg1 paper's baseline); ``lora_checkpoint`` runs a released CellSeg1 LoRA (``released``).
- Deviations, on purpose: LoRA dropout on the LoRA input (CellSeg1: on the projection output); prompts drawn
  after augmentation (CellSeg1 moves pre-drawn keypoints); a partial accumulation window's loss is the mean of
  its batches; min_mask_region_area keeps the largest piece and drops smaller masks (SAM fills holes/islands).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from adapters import register
from adapters._upstream.cellseg1 import plain_sam
from adapters._upstream.cellseg1 import tiles as tiling
from adapters._upstream.cellseg1.augment import augment, resize
from adapters._upstream.cellseg1.released import load_released_lora, released_specs
from adapters._upstream.cellseg1.sam import (
    SAM_WEIGHTS,
    VARIANTS,
    add_lora,
    build_sam,
    fingerprint,
    load_sam_file,
)
from adapters._upstream.cellseg1.tiles import EpochPlan, cut_tiles, dataset_size, sample_prompts
from adapters.base import Adapter
from harness.errors import ConfigError, DataError, MissingWeightsError
from harness.io import atomic_path
from harness.weights import WeightSpec

if TYPE_CHECKING:
    import torch
    from torch import nn

    from harness.data import Instance, Sample

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "c6bench-cellseg1/2"  # /2: squashed resize, resize_size and crop_n_layers recorded
SAM_LICENCE = "Apache-2.0 (Meta, segment-anything)"
SCRATCH_SEED = 0  # random base models are rebuilt from this seed at load time (checked by a fingerprint)
GENERATORS = ("cellseg1", "sam")
DEFAULT_LAYERS, DEFAULT_THRESH = 1, 0.8  # CellSeg1's example_config.yaml, before validation picks


def _sam_spec(name: str, file: str, what: str) -> WeightSpec:
    return WeightSpec(
        name=name, file=file, url=f"https://dl.fbaipublicfiles.com/segment_anything/{file}", sha256=None,
        licence=SAM_LICENCE, description=f"Segment Anything {what} (1024 px; resized to 512 px at load)",
    )


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


@dataclass
class TileBatchItem:
    image: np.ndarray  # (S, S, 3) float 0..255
    points: np.ndarray  # (N, 2) x, y in model pixels
    masks: np.ndarray  # (N, S, S) bool target masks (empty for background points)
    positive: np.ndarray  # (N,) bool


@dataclass
class Candidate:
    """One generated mask in work-image coordinates, kept as a bbox crop; `layer` = its crop layer."""

    y0: int
    x0: int
    crop: np.ndarray
    iou: float
    stability: float
    layer: int = 0

    @property
    def score(self) -> float:
        return self.iou * self.stability

    @property
    def box(self) -> tuple[int, int, int, int]:
        return self.y0, self.x0, self.y0 + self.crop.shape[0], self.x0 + self.crop.shape[1]

    bbox = box  # the `metrics.matching.Masked` protocol


def mask_iou_nms(cands: list[Candidate], thresh: float) -> list[Candidate]:
    """Greedy NMS by mask IoU, highest score first (`metrics.matching.mask_nms`, shared with the harness)."""
    from metrics.matching import mask_nms

    return [cands[k] for k in mask_nms(cands, [c.score for c in cands], thresh)]


def largest_piece(crop: np.ndarray) -> np.ndarray:
    """Keep the largest 8-connected component of a boolean crop."""
    from scipy import ndimage

    lab, n = ndimage.label(crop, structure=np.ones((3, 3)))
    if n <= 1:
        return crop
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return lab == int(sizes.argmax())


# ============================================================================================= adapter


@register("cellseg1")
class CellSeg1Adapter(Adapter):
    """SAM + LoRA trained on few images, automatic mask generation with mask-IoU NMS (CellSeg1)."""

    description = "CellSeg1: SAM (ViT-B/L/H at 512 px) + LoRA rank 4, point-grid masks, mask-IoU NMS"
    multiclass = False
    needs_label_maps = True
    limits = {"image_size": ">= 16 and multiple of 16", "lora_rank": ">= 1", "lora_dropout": "in [0, 1)",
              "points_per_side": ">= 1", "points_per_batch": ">= 1", "crop_n_layers": ">= 0", "min_pixels": ">= 0",
              "epochs": ">= 1", "learning_rate": "> 0", "batch_size": ">= 1", "grad_accumulation": ">= 1",
              "duplicate_data": ">= 1", "threshold_grid": "non-empty and in [0, 1]", "crop_layers_grid": "non-empty and >= 0",
              "balanced_fraction": "in [0, 1]", "max_steps": ">= 1"}
    weights = (
        _sam_spec("sam_vit_b", "sam_vit_b_01ec64.pth", "ViT-B, 375,042,383 bytes"),
        _sam_spec("sam_vit_l", "sam_vit_l_0b3195.pth", "ViT-L, 1,249,524,607 bytes"),
        _sam_spec("sam_vit_h", "sam_vit_h_4b8939.pth", "ViT-H, 2,564,550,879 bytes"),
        *released_specs(),
    )

    def __init__(
        self,
        weights: str | None = None,
        device: str = "cpu",
        *,
        variant: str = "vit_b",
        image_size: int = 512,
        lora_rank: int = 4,
        lora_dropout: float = 0.1,
        scratch_variant: str | None = None,
        train_scope: str = "auto",
        generator: str = "cellseg1",
        lora_checkpoint: str | None = None,
        points_per_side: int = 32,
        points_per_batch: int = 64,
        crop_n_layers: int | None = None,
        crop_overlap_ratio: float = 512 / 1500,
        pred_iou_thresh: float | None = None,
        stability_score_thresh: float = 0.6,
        stability_score_offset: float = 0.8,
        mask_nms_thresh: float = 0.05,
        max_mask_region_area_ratio: float = 0.1,
        min_mask_region_area: int = 20,
        label_rule: str = "last",
        min_pixels: int = 10,
    ) -> None:
        """Args (beyond the harness's `weights`/`device`):
        variant: vit_b / vit_l / vit_h (SAM weights) or small / tiny (random init only, CPU profiles, tests).
        image_size: model input size (CellSeg1: 512); SAM checkpoints are resized to it.
        scratch_variant: the variant built when there are no weights (random init); None = `variant`.
        train_scope: ``lora`` (the method: only LoRA trains), ``all`` (every weight trains; the checkpoint
            then holds everything) or ``auto``: lora on SAM weights, all on a random base.
        generator: ``cellseg1`` (the method's generator, above) or ``sam``: plain SAM's own automatic mask
            generator with SAM's defaults at 1024 px — the CellSeg1 paper's zero-shot baseline (no LoRA, no
            training).
        lora_checkpoint: a released CellSeg1 LoRA (known name, e.g. ``cellseg1_cellpose_specialized``, or a
            path) applied on the SAM `weights`: zero-shot with the authors' model.
        crop_n_layers, pred_iou_thresh: crop layers of the point grid and the predicted-IoU ("cell
            probability") cut; None = picked on the validation split by `train` (CellSeg1's 1 and 0.8 before).
        """
        super().__init__(weights=weights, device=device)
        for v in (variant, scratch_variant or variant):
            if v not in VARIANTS:
                raise ConfigError(f"cellseg1: unknown variant {v!r}; choose one of {', '.join(VARIANTS)}")
        if train_scope not in ("auto", "lora", "all"):
            raise ConfigError(f"cellseg1: train_scope must be 'auto', 'lora' or 'all', not {train_scope!r}")
        if generator not in GENERATORS:
            raise ConfigError(f"cellseg1: generator must be one of {', '.join(GENERATORS)}, not {generator!r}")
        if generator == "sam" and lora_checkpoint is not None:
            raise ConfigError("cellseg1: generator 'sam' is plain SAM (no LoRA); drop lora_checkpoint or use "
                              "generator 'cellseg1'")
        if crop_n_layers is not None and not 0 <= int(crop_n_layers) <= 4:
            raise ConfigError(f"cellseg1: crop_n_layers must be 0..4 or null, not {crop_n_layers!r}")
        self._variants = {"pretrained": variant, "scratch": scratch_variant or variant}
        self._scope = train_scope
        self.generator = generator
        self.image_size = int(image_size)
        self.work_size = self.image_size  # squashed image size; the trained resize_size once trained/loaded
        self.lora_rank, self.lora_dropout = int(lora_rank), float(lora_dropout)
        self.points_per_side, self.points_per_batch = int(points_per_side), int(points_per_batch)
        self.crop_n_layers, self.crop_overlap_ratio = crop_n_layers, float(crop_overlap_ratio)
        self.pred_iou_thresh = pred_iou_thresh
        self.calibrated: dict[str, Any] = {}
        self.stability_score_thresh = stability_score_thresh
        self.stability_score_offset = stability_score_offset
        self.mask_nms_thresh = mask_nms_thresh
        self.max_mask_region_area_ratio = max_mask_region_area_ratio
        self.min_mask_region_area = min_mask_region_area
        self.label_rule, self.min_pixels = label_rule, min_pixels
        self.category = "cell"
        self.base_weights: str | None = None
        self.weights_path: Path | None = None
        if weights is not None:
            from harness.weights import resolve

            if weights in SAM_WEIGHTS and SAM_WEIGHTS[weights] != variant:
                raise ConfigError(f"cellseg1: weights {weights} are SAM {SAM_WEIGHTS[weights]} but variant is "
                                  f"{variant}; set params.variant: {SAM_WEIGHTS[weights]}")
            self.weights_path = resolve(weights)  # MissingWeightsError names the fetch command
            self.base_weights = str(weights)
        self.lora_checkpoint = lora_checkpoint
        self.lora_path = self._resolve_lora(lora_checkpoint)
        self._model: nn.Module | None = None

    def _resolve_lora(self, lora: str | None) -> Path | None:
        if lora is None:
            return None
        if self.weights_path is None:
            raise ConfigError(f"cellseg1: lora_checkpoint {lora} needs the SAM base it was trained on as weights "
                              "(CellSeg1's released files: sam_vit_h)")
        from harness.weights import resolve

        return resolve(lora)

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

    # ------------------------------------------------------------------ model construction

    def versions(self) -> dict[str, str]:
        from importlib.metadata import version

        return {"segment-anything": version("segment-anything"), "torch": version("torch")}

    @property
    def model(self) -> nn.Module:
        if self._model is None:
            self._model = self._build(self.weights_path)
        return self._model

    def _build(self, sam_path: Path | None) -> nn.Module:
        """Base SAM (checkpoint or seeded random init) on CPU → LoRA (+ a released one) → device."""
        import torch

        if self.generator == "sam":
            return plain_sam.build_plain_sam(self.variant, sam_path, self.device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(SCRATCH_SEED)
            sam = build_sam(self.variant, self.image_size)
        if sam_path is not None:
            load_sam_file(sam, sam_path, self.variant)
        self._base_fingerprint = fingerprint(sam)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(SCRATCH_SEED + 1)
            add_lora(sam, self.lora_rank, self.lora_dropout)
        if self.lora_path is not None:
            load_released_lora(sam, self.lora_path, self.variant, self.lora_rank)
        if self.train_scope == "all":
            for p in sam.parameters():
                p.requires_grad_(True)
        return sam.to(self.device).eval()

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """The tensors training changes: LoRA only (scope lora) or everything (scope all)."""
        names = {n for n, p in self.model.named_parameters() if p.requires_grad}
        return {n: t.detach().cpu().clone() for n, t in self.model.state_dict().items() if n in names}

    def parameter_counts(self) -> dict[str, int]:
        params = list(self.model.parameters())
        return {"trainable": sum(p.numel() for p in params if p.requires_grad),
                "total": sum(p.numel() for p in params)}

    # ------------------------------------------------------------------ training

    @classmethod
    def rehearsal_schedule(cls, schedule: dict[str, Any], steps: int) -> dict[str, Any]:
        """`schedule` cut to `steps` optimiser steps: every epoch takes at least one, `max_steps` stops there."""
        return {**schedule, "epochs": int(steps), "max_steps": int(steps)}

    @classmethod
    def schedule_size(cls, schedule: dict[str, Any], n_train: int) -> tuple[int, int]:
        """``(optimiser steps, tiles drawn)`` of `schedule` on `n_train` training images (`tiles.schedule_size`)."""
        import inspect

        defaults = {p.name: p.default for p in inspect.signature(cls.train).parameters.values()
                    if p.kind is p.KEYWORD_ONLY}
        full = {**defaults, **schedule}
        keys = ("epochs", "resize_size", "tile_size", "duplicate_data", "batch_size", "grad_accumulation",
                "max_steps")
        return tiling.schedule_size(n_train, **{k: full[k] for k in keys})

    def train(
        self,
        train_samples: Sequence[Sample],
        val_samples: Sequence[Sample],
        out_dir: Path,
        *,
        epochs: int = 300,
        learning_rate: float = 3e-3,
        weight_decay: float = 1e-2,
        batch_size: int = 4,
        grad_accumulation: int = 8,
        duplicate_data: int = 32,
        resize_size: int = 512,
        tile_size: int = 256,
        max_points: int = 30,
        neg_rate: float = 0.5,
        min_cell_area: int = 100,
        edge_distance: int = 20,
        pct_start: float = 0.3,
        augmentation: bool = True,
        crop_layers_grid: Sequence[int] = (0, 1, 2),
        threshold_grid: Sequence[float] = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95),
        dice_weight: float = 0.0,
        balanced_fraction: float = 0.0,
        max_steps: int | None = None,
        seed: int = 0,
    ) -> Path:
        """Fine-tune (LoRA) on point prompts from priority-resolved masks; pick crop layers + cut on validation.

        One epoch = one shuffled pass over every tile of the training images (duplicated up to
        `duplicate_data`); an optimiser step every `grad_accumulation` batches and at the epoch's end;
        `max_steps` stops after that many steps (rehearsals). ``dice_weight`` > 0 adds a dice term on the
        positives, ``balanced_fraction`` > 0 trains the first fraction of the batches with class-balanced BCE
        (neither in CellSeg1: what lets a random-init SAM learn at all, `mask_bce`).
        Returns ``out_dir/cellseg1.pt`` (trained tensors + base description + picked generator settings).
        """
        import torch
        from tqdm import tqdm

        from adapters._upstream.cellseg1 import select

        if self.generator == "sam":
            raise ConfigError("cellseg1: generator 'sam' is plain SAM's zero-shot baseline and is not trained; "
                              "use generator 'cellseg1' to fine-tune")
        if min(epochs, batch_size, grad_accumulation, tile_size) < 1 or duplicate_data < 0:
            raise ConfigError("cellseg1: epochs, batch_size, grad_accumulation, tile_size must be >= 1 and "
                              "duplicate_data >= 0")
        if tile_size > resize_size:
            raise ConfigError(f"cellseg1: tile_size {tile_size} is larger than resize_size {resize_size}")
        if max_steps is not None and max_steps < 1:
            raise ConfigError(f"cellseg1: max_steps must be >= 1 or null, not {max_steps}")
        if not 0.0 <= balanced_fraction <= 1.0:
            raise ConfigError(f"cellseg1: balanced_fraction must be in [0, 1], not {balanced_fraction}")
        if not train_samples:
            raise DataError("cellseg1: no training samples")
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        cats = {i.category for s in train_samples for i in s.instances}
        self.category = sorted(cats)[0] if len(cats) == 1 else self.category
        rng = np.random.default_rng(seed)
        torch.manual_seed(seed)
        tiles = self._make_tiles(train_samples, resize_size, tile_size)
        if not any(lab.any() for _, lab in tiles):
            raise DataError("cellseg1: the training samples have no annotated cells")
        plan = EpochPlan(dataset_size(len(tiles), duplicate_data), batch_size, grad_accumulation)
        steps, _ = tiling.schedule_size(len(train_samples), epochs=epochs, resize_size=resize_size, tile_size=tile_size,
                                 duplicate_data=duplicate_data, batch_size=batch_size,
                                 grad_accumulation=grad_accumulation, max_steps=max_steps)
        logger.info("cellseg1: %d tiles from %d image(s) → %d samples/epoch, %d batches, %d optimiser step(s) "
                    "per epoch; %d epochs → %d steps", len(tiles), len(train_samples), plan.samples, plan.batches,
                    plan.steps_per_epoch, epochs, steps)
        model = self.model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=learning_rate, weight_decay=weight_decay)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=learning_rate,
                                                    total_steps=plan.scheduler_steps(epochs), pct_start=pct_start)
        prompt_args = dict(max_points=max_points, neg_rate=neg_rate, min_cell_area=min_cell_area,
                           edge_distance=edge_distance)
        total_batches = (steps // plan.steps_per_epoch) * plan.batches + steps % plan.steps_per_epoch \
            * grad_accumulation
        step, done, losses = 0, 0, []
        bar = tqdm(total=total_batches, desc="cellseg1 train", unit="batch", leave=False)
        for _ in range(epochs):
            order = rng.permutation(plan.samples) % len(tiles)
            for b in range(plan.batches):
                items = [self._augment_tile(tiles[i], rng, prompt_args, augmentation)
                         for i in order[b * batch_size:(b + 1) * batch_size]]
                kind = "balanced_bce" if done < balanced_fraction * total_batches else "bce"
                loss = self._loss(items, dice_weight, kind)
                if loss is not None:
                    (loss / plan.window(b)).backward()
                    losses.append(loss.item())
                done += 1
                bar.update()
                if plan.steps_after(b):
                    opt.step()
                    opt.zero_grad(set_to_none=True)
                    sched.step()
                    step += 1
                    bar.set_postfix(loss=f"{np.mean(losses[-plan.window(b):] or [0.0]):.4f}")
                    if step == steps:
                        break
            if step == steps:
                break
        bar.close()
        model.eval()
        self.work_size = int(resize_size)
        layers = [self.crop_n_layers] if self.crop_n_layers is not None else list(crop_layers_grid)
        thresholds = [self.pred_iou_thresh] if self.pred_iou_thresh is not None else list(threshold_grid)
        picked = select.pick_generator_settings(self, val_samples, layers, thresholds) if val_samples and \
            (len(layers) > 1 or len(thresholds) > 1) else None
        self.calibrated = picked or {}
        path = out_dir / "cellseg1.pt"
        self.save(path, extra={"losses": losses, "optimizer_steps": step, "batches": done,
                               "tiles": len(tiles), "samples_per_epoch": plan.samples})
        return path

    def _make_tiles(self, samples: Sequence[Sample], resize_size: int,
                    tile_size: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Squash each image (and label map, nearest) to resize_size², cut every tile (50 % overlap)."""
        from harness.convert import label_map

        tiles = []
        for s in samples:
            labels, _ = label_map(s, rule=self.label_rule, min_pixels=self.min_pixels)
            image, labels = squash(to_rgb_float(s.load_image()), labels, resize_size)
            tiles += cut_tiles(image, labels, tile_size)
        return tiles

    def _augment_tile(self, tile: tuple[np.ndarray, np.ndarray], rng: np.random.Generator,
                      prompt_args: dict[str, Any], augmentation: bool = True) -> TileBatchItem:
        """CellSeg1's augmentation (or a plain resize) to the model size, then prompts from the label map."""
        image, labels = tile
        s = self.image_size
        if augmentation:
            image, labels = augment(image, labels, s, rng)
        else:
            image, labels = resize(np.ascontiguousarray(image), s, s), resize(np.ascontiguousarray(labels), s, s)
        points, ids, positive = sample_prompts(labels, rng, **prompt_args)
        masks = labels[None] == ids[:, None, None]
        masks[~positive] = False
        return TileBatchItem(image, points, masks, positive)

    def _embed(self, images: np.ndarray) -> torch.Tensor:
        """(B, S, S, 3) float 0..255 → image embeddings."""
        import torch

        x = torch.as_tensor(np.ascontiguousarray(images), dtype=torch.float32, device=self.device)
        x = (x.permute(0, 3, 1, 2) - self.model.pixel_mean) / self.model.pixel_std
        return self.model.image_encoder(x)

    def _decode(self, embedding: torch.Tensor, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One image embedding (1, C, h, w) + N points (N, 2) → low-res logits (N, h4, w4), iou (N,)."""
        import torch

        sam = self.model
        labels = torch.ones(points.shape[0], 1, dtype=torch.int64, device=points.device)
        sparse, dense = sam.prompt_encoder(points=(points[:, None, :], labels), boxes=None, masks=None)
        logits, iou = sam.mask_decoder(image_embeddings=embedding, image_pe=sam.prompt_encoder.get_dense_pe(),
                                       sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                       multimask_output=False)
        return logits[:, 0], iou[:, 0]

    def _loss(self, items: list[TileBatchItem], dice_weight: float = 0.0,
              mask_loss: str = "bce") -> torch.Tensor | None:
        """BCE on positives' low-res logits + MSE of the IoU head (1 cell / 0 background), batch mean;
        plus `dice_weight` x soft dice on the positives; ``balanced_bce`` see `mask_bce`."""
        import torch
        import torch.nn.functional as F

        from adapters._upstream.cellseg1.loss import mask_bce

        items = [it for it in items if len(it.points)]
        if not items:
            return None
        emb = self._embed(np.stack([it.image for it in items]))
        total = []
        for k, it in enumerate(items):
            logits, iou = self._decode(emb[k:k + 1], torch.as_tensor(it.points, device=self.device))
            pos = torch.as_tensor(it.positive, device=self.device)
            target = torch.as_tensor(it.masks, device=self.device, dtype=torch.float32)
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

    # ------------------------------------------------------------------ checkpoints

    def save(self, path: Path, extra: dict[str, Any] | None = None) -> None:
        """Trained tensors + what is needed to rebuild the base (small file; base weights not included)."""
        import torch

        self.model  # noqa: B018 - builds the model (and its base fingerprint) when not yet built
        blob = {
            "format": CHECKPOINT_FORMAT, "variant": self.variant, "image_size": self.image_size,
            "lora_rank": self.lora_rank, "train_scope": self.train_scope, "base_weights": self.base_weights,
            "lora_checkpoint": self.lora_checkpoint, "base_fingerprint": self._base_fingerprint,
            "trained": self.trainable_state(), "resize_size": self.work_size, "selection": self.calibrated,
            "category": self.category, **(extra or {}),
        }
        with atomic_path(path) as tmp:
            torch.save(blob, tmp)

    def load(self, checkpoint: Path) -> None:
        """Rebuild the base named in the checkpoint (must match this adapter's), load the trained tensors."""
        import torch

        from harness.weights import resolve

        path = Path(checkpoint)
        if not path.is_file():
            raise MissingWeightsError(f"checkpoint {path} does not exist")
        if self.generator == "sam":
            raise ConfigError(f"{path}: generator 'sam' runs plain SAM; load a CellSeg1 checkpoint with generator "
                              "'cellseg1'")
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user problem
            raise ConfigError(f"{path}: not a cellseg1 checkpoint (torch cannot read it: {type(exc).__name__}); "
                              "was it written by another adapter? Use the file cellseg1's train() returned") from exc
        if not isinstance(blob, dict) or blob.get("format") != CHECKPOINT_FORMAT:
            hint = " (a released CellSeg1 LoRA file: pass it as params.lora_checkpoint)" \
                if isinstance(blob, dict) and "w_a_000" in blob else ""
            raise ConfigError(f"{path}: not a cellseg1 checkpoint of this harness (expected format "
                              f"{CHECKPOINT_FORMAT}){hint}; use the file cellseg1's train() returned")
        # the base the checkpoint was trained on, whatever we were given
        self.base_weights = blob["base_weights"]
        self.weights_path = resolve(self.base_weights) if self.base_weights is not None else None
        for key in ("variant", "image_size", "lora_rank", "train_scope"):
            mine = getattr(self, key)
            if blob[key] != mine:
                raise ConfigError(f"{path}: checkpoint has {key}={blob[key]!r}, the adapter {mine!r}; "
                                  f"use the params the model was trained with")
        self.lora_checkpoint = blob["lora_checkpoint"]
        self.lora_path = self._resolve_lora(self.lora_checkpoint)
        self._model = self._build(self.weights_path)
        fp = blob["base_fingerprint"]
        if blob["train_scope"] == "lora" and not math.isclose(fp, self._base_fingerprint, rel_tol=1e-9,
                                                              abs_tol=1e-9):
            raise MissingWeightsError(f"{path}: the base model rebuilt here differs from the one trained on "
                                      f"(fingerprint); a random base needs the same torch version")
        missing = set(self.trainable_state()) - set(blob["trained"])
        if missing:
            raise MissingWeightsError(f"{path}: trained tensors missing: {sorted(missing)[:5]}")
        self._model.load_state_dict(blob["trained"], strict=False)
        self.work_size, self.calibrated = int(blob["resize_size"]), dict(blob["selection"])
        self.category = blob.get("category", self.category)

    # ------------------------------------------------------------------ prediction

    @property
    def iou_thresh(self) -> float:
        if self.pred_iou_thresh is not None:
            return float(self.pred_iou_thresh)
        return float(self.calibrated.get("pred_iou_thresh", DEFAULT_THRESH))

    @property
    def n_layers(self) -> int:
        if self.crop_n_layers is not None:
            return int(self.crop_n_layers)
        return int(self.calibrated.get("crop_n_layers", DEFAULT_LAYERS))

    def predict(self, image: np.ndarray) -> list[Instance]:
        """Masks on the image squashed to the work size, resized back to the image (overlaps allowed)."""
        h, w = image.shape[:2]
        rgb = to_rgb_float(image)
        if self.generator == "sam":
            work, _ = squash(rgb, None, self.work_size)
            cands = [Candidate(*rec) for rec in plain_sam.generate(self.model, work)]
            return self._to_instances(cands, h, w, self.category)
        return self._finish(self._candidates(rgb, self.iou_thresh, self.n_layers), self.iou_thresh, h, w,
                            self.category)

    def _finish(self, cands: list[Candidate], thresh: float, height: int, width: int,
                category: str) -> list[Instance]:
        """Threshold → mask-IoU NMS → Instances resized back to the image size."""
        return self._to_instances(mask_iou_nms([c for c in cands if c.iou >= thresh], self.mask_nms_thresh),
                                  height, width, category)

    def _to_instances(self, cands: list[Candidate], height: int, width: int, category: str) -> list[Instance]:
        from harness.data import Instance

        out = []
        sy, sx = height / self.work_size, width / self.work_size
        for c in cands:
            y0, x0, y1, x1 = c.box
            fy0, fx0 = int(round(y0 * sy)), int(round(x0 * sx))
            fy1, fx1 = max(fy0 + 1, int(round(y1 * sy))), max(fx0 + 1, int(round(x1 * sx)))
            crop = resize(c.crop, fy1 - fy0, fx1 - fx0)
            if crop.any():
                out.append(Instance.from_mask(category, fy0, fx0, crop, height, width, order=len(out),
                                              score=float(c.iou), source="cellseg1"))
        return out

    def _candidates(self, rgb: np.ndarray, iou_floor: float, n_layers: int) -> list[Candidate]:
        """Masks from the point grid over the work image and its `n_layers` crop layers, each crop resized to
        the model size. Kept: predicted IoU >= iou_floor, stability >= threshold, not touching an inner crop
        edge, area below the large-mask ratio and above min_mask_region_area (largest piece)."""
        import torch
        from segment_anything.utils.amg import build_all_layer_point_grids, generate_crop_boxes
        from tqdm import tqdm

        from adapters._upstream.cellseg1.loss import stability

        s, ws = self.image_size, self.work_size
        work, _ = squash(rgb, None, ws)
        boxes, layers = generate_crop_boxes((ws, ws), n_layers, self.crop_overlap_ratio)
        grids = build_all_layer_point_grids(self.points_per_side, n_layers, 1)
        max_area = self.max_mask_region_area_ratio * ws * ws
        out: list[Candidate] = []
        self.model.eval()
        with torch.inference_mode():
            for (cx0, cy0, cx1, cy1), layer in tqdm(list(zip(boxes, layers, strict=True)), desc="cellseg1 crops",
                                                    leave=False, disable=len(boxes) == 1):
                ch, cw = cy1 - cy0, cx1 - cx0
                emb = self._embed(resize(np.ascontiguousarray(work[cy0:cy1, cx0:cx1]), s, s)[None])
                pts_all = grids[layer] * np.array([s, s])  # grid in model pixels of the resized crop
                for b in range(0, len(pts_all), self.points_per_batch):
                    pts = torch.as_tensor(pts_all[b:b + self.points_per_batch], dtype=torch.float32,
                                          device=self.device)
                    logits, iou = self._decode(emb, pts)
                    logits = torch.nn.functional.interpolate(logits[:, None], size=(ch, cw), mode="bilinear",
                                                             align_corners=False)[:, 0]
                    stab = stability(logits, self.stability_score_offset)
                    keep = (iou >= iou_floor) & (stab >= self.stability_score_thresh)
                    for k in torch.nonzero(keep).flatten().tolist():
                        c = self._candidate(logits[k] > 0, (cy0, cx0, cy1, cx1), float(iou[k]), float(stab[k]),
                                            max_area, layer)
                        if c is not None:
                            out.append(c)
        return out

    def _candidate(self, mask: torch.Tensor, crop_box: tuple[int, int, int, int], iou: float, stab: float,
                   max_area: float, layer: int) -> Candidate | None:
        """A thresholded mask in crop pixels → Candidate in work-image pixels, or None when filtered out."""
        from harness.data import tighten

        m = mask.cpu().numpy()
        if not m.any():
            return None
        ys, xs = np.nonzero(m.any(axis=1))[0], np.nonzero(m.any(axis=0))[0]
        y0, y1, x0, x1 = ys[0], ys[-1] + 1, xs[0], xs[-1] + 1
        cy0, cx0, cy1, cx1 = crop_box
        ws = self.work_size
        # drop masks touching an edge of a crop that is not an image edge (cut-off cells)
        if (y0 == 0 and cy0 > 0) or (x0 == 0 and cx0 > 0) or (y1 == m.shape[0] and cy1 < ws) or \
                (x1 == m.shape[1] and cx1 < ws):
            return None
        crop = largest_piece(m[y0:y1, x0:x1])
        area = int(crop.sum())
        if area < self.min_mask_region_area or area >= max_area:
            return None
        ty, tx, crop = tighten(cy0 + int(y0), cx0 + int(x0), crop)
        return Candidate(ty, tx, crop, iou, stab, layer)
