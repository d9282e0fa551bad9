"""MEDIAR's fine-tuning recipe: flow targets, loss, and the epoch loop with an exact resume.

Follows MEDIAR's ``train_tools/`` trainer for the MEDIAR-Former (``core/MEDIAR/Trainer.py``): random crops with the
augmentations of `augment`, cellpose flow targets recomputed for every augmented crop
(``cellpose.dynamics.masks_to_flows``), loss ``BCE(cellprob) + 0.5 * MSE(flows, 5 * target flows)``, AdamW + a
cosine schedule stepped per epoch. Every epoch writes ``last.pt`` (weights, optimizer, scheduler, RNG states); a
later call with the same configuration continues from it and ends with the same weights as an uninterrupted run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from adapters._upstream.mediar.augment import (
    TrainImage,
    augmented_crop,
    centre_crop,
    mediar_uint8,
    rescale_train_image,
)
from adapters._upstream.mediar.network import load_strict
from harness.errors import ConfigError

if TYPE_CHECKING:
    from harness.records import Sample

logger = logging.getLogger(__name__)


def flow_targets(labels: np.ndarray, device: Any) -> np.ndarray:
    """Cellpose flows (dY, dX), float32 (2, H, W), of a label map; renumbers a *copy* (cellpose works in place)."""
    import fastremap
    from cellpose import dynamics

    if not labels.any():
        return np.zeros((2, *labels.shape), dtype=np.float32)
    renumbered, _ = fastremap.renumber(np.array(labels, dtype=np.int32, copy=True), in_place=True)
    return dynamics.masks_to_flows(renumbered.astype(np.int64), device=device).astype(np.float32)


def mediar_loss(output: Any, cells: Any, flows: Any) -> Any:
    """MEDIAR's criterion: BCE on the probability logit + 0.5 * MSE between flows and 5x the target flows."""
    import torch.nn.functional as F

    output = output.float()
    return F.binary_cross_entropy_with_logits(output[:, 2], cells) + 0.5 * F.mse_loss(output[:, :2], 5.0 * flows)

def train_image(image: np.ndarray, labels: np.ndarray, scale: float) -> TrainImage:
    """A training image in MEDIAR's normalisation (whole image, as MEDIAR) with its int32 label map, resized."""
    pixels, span = mediar_uint8(image)
    return rescale_train_image(TrainImage(pixels, span, np.asarray(labels, dtype=np.int32)), scale)


def training_set(samples: Sequence[Sample], what: str, scale: float) -> list[TrainImage]:
    """Images in MEDIAR's normalisation with int32 label maps of the (flattened: disjoint) samples."""
    from tqdm import tqdm

    from harness.flatten import label_image

    return [train_image(sample.load_image(), label_image(sample), scale)
            for sample in tqdm(samples, desc=f"mediar {what} images", unit="img")]


def batch_tensors(crops: list[tuple[np.ndarray, np.ndarray]], device: Any) -> tuple[Any, Any, Any]:
    """Tensors (images, cell masks, flow targets) for crops; flows are computed per (augmented) crop."""
    import torch

    images = torch.from_numpy(np.stack([image for image, _ in crops])).to(device)
    cells = torch.from_numpy(np.stack([labels > 0 for _, labels in crops]).astype(np.float32)).to(device)
    flows = torch.from_numpy(np.stack([flow_targets(labels, device) for _, labels in crops])).to(device)
    return images, cells, flows


def validation_loss(net: Any, batches: list[tuple[Any, Any, Any]]) -> float:
    import torch

    net.eval()
    with torch.no_grad():
        return float(np.mean([float(mediar_loss(net(images), cells, flows)) for images, cells, flows in batches]))


def fit(net: Any, train_set: Sequence[TrainImage], val_set: Sequence[TrainImage], out_dir: Path, *,
        config: dict[str, Any], rng: np.random.Generator, device: Any, save: Callable[[Any, Path], Any],
        desc: str) -> list[dict[str, float]]:
    """Train `net` in place on `config`'s schedule (its keys are `MediarAdapter.train`'s); returns the history.

    An epoch draws ``max(len(train_set), crops_per_epoch)`` random crops, every image equally often (MEDIAR repeats
    each small data group to 50 samples per epoch). ``T_max = t_max or epochs``; ``amp`` = bfloat16 autocast, on
    CUDA only. Validation images give a loss per epoch (fixed centre crops, no augmentation).
    """
    import torch
    from tqdm import tqdm

    epochs, batch_size, crop_size = config["epochs"], config["batch_size"], config["crop_size"]
    val_batches = [batch_tensors([centre_crop(item, crop_size)], device) for item in val_set]
    optimizer = torch.optim.AdamW(net.parameters(), lr=config["learning_rate"], weight_decay=config["weight_decay"])
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config["t_max"] or epochs,
                                                           eta_min=config["eta_min"])
    history: list[dict[str, float]] = []
    start = resume(out_dir / "last.pt", config, net, optimizer, scheduler, rng, history)
    use_amp = bool(config["amp"]) and device.type == "cuda"
    n_crops = max(len(train_set), config["crops_per_epoch"])
    bar = tqdm(range(start, epochs), desc=desc, unit="epoch", initial=start, total=epochs)
    for epoch in bar:
        net.train()
        order = np.concatenate([rng.permutation(len(train_set)) for _ in range(-(-n_crops // len(train_set)))])
        losses = []
        for first in range(0, n_crops, batch_size):
            crops = [augmented_crop(train_set[i], crop_size, rng, config["augment"], config["zoom_prob"])
                     for i in order[first : min(first + batch_size, n_crops)]]
            images, cells, flows = batch_tensors(crops, device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                loss = mediar_loss(net(images), cells, flows)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
        scheduler.step()
        record = {"epoch": epoch + 1, "loss": float(np.mean(losses)), "lr": float(optimizer.param_groups[0]["lr"])}
        if val_batches:
            record["val_loss"] = validation_loss(net, val_batches)
        history.append(record)
        bar.set_postfix({k: f"{v:.4g}" for k, v in record.items() if k != "epoch"})
        save({"model": net.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
              "epoch": epoch + 1, "config": config, "history": history, "numpy_rng": rng.bit_generator.state,
              "torch_rng": torch.get_rng_state()}, out_dir / "last.pt")
    bar.close()
    return history


def resume(path: Path, config: dict[str, Any], net: Any, optimizer: Any, scheduler: Any, rng: np.random.Generator,
           history: list[dict[str, float]]) -> int:
    """Continue from ``last.pt`` when it was written with the same configuration; returns the next epoch."""
    import torch

    if not path.is_file():
        return 0
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    saved = state.get("config") or {}
    if saved != config:
        changed = sorted(k for k in set(config) | set(saved) if saved.get(k) != config.get(k))
        raise ConfigError(f"{path}: holds a MEDIAR training with another configuration (differs in "
                          f"{', '.join(changed)}); use a new output folder or delete this one")
    load_strict(net, state["model"], str(path))
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    rng.bit_generator.state = state["numpy_rng"]
    torch.set_rng_state(state["torch_rng"])
    history.extend(state["history"])
    logger.info("mediar: resuming %s after epoch %d of %d", path.parent, state["epoch"], config["epochs"])
    return int(state["epoch"])
