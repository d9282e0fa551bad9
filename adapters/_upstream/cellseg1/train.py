"""CellSeg1's training loop (``cellseg1_train.py``): LoRA SAM on point prompts from squashed 256-px tiles.

Every training image (and its priority-resolved label map) is squashed to ``resize_size``², cut into tiles
(`tiles`), duplicated up to ``duplicate_data``; one epoch = one shuffled pass over them in batches; each tile
gets CellSeg1's augmentation (`augment`) to the model size, then prompts (`prompts`); the loss (`loss`) is BCE
on the positives' low-res logits + MSE of the IoU head; AdamW + OneCycleLR, an optimiser step every
``grad_accumulation`` batches and at the epoch's end. Then `select` picks the generator settings on the
validation split. `adapter` is a `CellSeg1Adapter`: the loop trains its model and records what it picked.

Deviation, on purpose: a partial accumulation window (the epoch's last) contributes the mean of its batches'
losses (each batch loss divided by the window's length), not a sum scaled for a full window.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from adapters._upstream.cellseg1 import loss as losses_mod
from adapters._upstream.cellseg1 import tiles as tiling
from adapters._upstream.cellseg1.augment import augment, resize
from adapters._upstream.cellseg1.prompts import sample_prompts
from harness.errors import ConfigError, DataError

if TYPE_CHECKING:
    from harness.records import Sample

logger = logging.getLogger(__name__)


@dataclass
class TileBatchItem:
    image: np.ndarray  # (S, S, 3) float 0..255
    points: np.ndarray  # (N, 2) x, y in model pixels
    masks: np.ndarray  # (N, S, S) bool target masks (empty for background points)
    positive: np.ndarray  # (N,) bool


def augment_tile(tile: tuple[np.ndarray, np.ndarray], size: int, rng: np.random.Generator,
                 prompt_args: dict[str, Any], augmentation: bool = True) -> TileBatchItem:
    """CellSeg1's augmentation (or a plain resize) to the model size, then prompts from the label map."""
    image, labels = tile
    if augmentation:
        image, labels = augment(image, labels, size, rng)
    else:
        image, labels = resize(np.ascontiguousarray(image), size, size), resize(np.ascontiguousarray(labels), size,
                                                                                  size)
    points, ids, positive = sample_prompts(labels, rng, **prompt_args)
    masks = labels[None] == ids[:, None, None]
    masks[~positive] = False
    return TileBatchItem(image, points, masks, positive)


def check_schedule(*, epochs: int, batch_size: int, grad_accumulation: int, tile_size: int, duplicate_data: int,
                   resize_size: int, max_steps: int | None, balanced_fraction: float) -> None:
    """The schedule's values, checked before any work (a `ConfigError` naming the key)."""
    if min(epochs, batch_size, grad_accumulation, tile_size) < 1 or duplicate_data < 0:
        raise ConfigError("cellseg1: epochs, batch_size, grad_accumulation, tile_size must be >= 1 and "
                          "duplicate_data >= 0")
    if tile_size > resize_size:
        raise ConfigError(f"cellseg1: tile_size {tile_size} is larger than resize_size {resize_size}")
    if max_steps is not None and max_steps < 1:
        raise ConfigError(f"cellseg1: max_steps must be >= 1 or null, not {max_steps}")
    if not 0.0 <= balanced_fraction <= 1.0:
        raise ConfigError(f"cellseg1: balanced_fraction must be in [0, 1], not {balanced_fraction}")


def fit(adapter: Any, train_samples: Sequence[Sample], val_samples: Sequence[Sample], out_dir: Path, *,
        epochs: int, learning_rate: float, weight_decay: float, batch_size: int, grad_accumulation: int,
        duplicate_data: int, resize_size: int, tile_size: int, max_points: int, neg_rate: float, min_cell_area: int,
        edge_distance: int, pct_start: float, augmentation: bool, crop_layers_grid: Sequence[int],
        threshold_grid: Sequence[float], dice_weight: float, balanced_fraction: float,
        max_steps: int | None) -> Path:
    """Train `adapter`'s model as above, pick its generator settings, save; returns ``out_dir/cellseg1.pt``."""
    import torch
    from tqdm import tqdm

    from adapters._upstream.cellseg1 import checkpoint, select

    if adapter.generator == "sam":
        raise ConfigError("cellseg1: generator 'sam' is plain SAM's zero-shot baseline and is not trained; "
                          "use generator 'cellseg1' to fine-tune")
    check_schedule(epochs=epochs, batch_size=batch_size, grad_accumulation=grad_accumulation, tile_size=tile_size,
                   duplicate_data=duplicate_data, resize_size=resize_size, max_steps=max_steps,
                   balanced_fraction=balanced_fraction)
    if not train_samples:
        raise DataError("cellseg1: no training samples")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cats = {i.category for s in train_samples for i in s.instances}
    adapter.category = sorted(cats)[0] if len(cats) == 1 else adapter.category
    rng = adapter.seed_everything()
    tiles = tiling.make_tiles(train_samples, resize_size, tile_size)
    if not any(lab.any() for _, lab in tiles):
        raise DataError("cellseg1: the training samples have no annotated cells")
    plan = tiling.EpochPlan(tiling.dataset_size(len(tiles), duplicate_data), batch_size, grad_accumulation)
    steps, _ = tiling.schedule_size(len(train_samples), epochs=epochs, resize_size=resize_size, tile_size=tile_size,
                                    duplicate_data=duplicate_data, batch_size=batch_size,
                                    grad_accumulation=grad_accumulation, max_steps=max_steps)
    logger.info("cellseg1: %d tiles from %d image(s) → %d samples/epoch, %d batches, %d optimiser step(s) "
                "per epoch; %d epochs → %d steps", len(tiles), len(train_samples), plan.samples, plan.batches,
                plan.steps_per_epoch, epochs, steps)
    model = adapter.model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=learning_rate, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=learning_rate, total_steps=plan.scheduler_steps(epochs),
                                                pct_start=pct_start)
    prompt_args = dict(max_points=max_points, neg_rate=neg_rate, min_cell_area=min_cell_area,
                       edge_distance=edge_distance)
    total_batches = (steps // plan.steps_per_epoch) * plan.batches + steps % plan.steps_per_epoch * grad_accumulation
    step, done, losses = 0, 0, []
    bar = tqdm(total=total_batches, desc="cellseg1 train", unit="batch", leave=False)
    for _ in range(epochs):
        order = rng.permutation(plan.samples) % len(tiles)
        for b in range(plan.batches):
            items = [augment_tile(tiles[i], adapter.image_size, rng, prompt_args, augmentation)
                     for i in order[b * batch_size:(b + 1) * batch_size]]
            kind = "balanced_bce" if done < balanced_fraction * total_batches else "bce"
            loss = losses_mod.prompt_loss(model, items, adapter.device, dice_weight, kind)
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
    adapter.work_size = int(resize_size)
    layers = [adapter.crop_n_layers] if adapter.crop_n_layers is not None else list(crop_layers_grid)
    thresholds = [adapter.pred_iou_thresh] if adapter.pred_iou_thresh is not None else list(threshold_grid)
    picked = select.pick_generator_settings(adapter, val_samples, layers, thresholds) if val_samples and \
        (len(layers) > 1 or len(thresholds) > 1) else None
    adapter.calibrated = picked or {}
    path = out_dir / "cellseg1.pt"
    checkpoint.save(adapter, path, extra={"losses": losses, "optimizer_steps": step, "batches": done,
                                          "tiles": len(tiles), "samples_per_epoch": plan.samples})
    return path
