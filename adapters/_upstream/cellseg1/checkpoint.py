"""The CellSeg1 adapter's checkpoint: the trained tensors and what rebuilds the base, not the base itself.

A checkpoint holds the tensors training changed (LoRA only, or everything for a random base), the base's
description (variant, image size, LoRA rank, train scope, base weights name, released LoRA, a fingerprint of
the base's values) and what `train` picked (resize size, crop layers + cut). Loading rebuilds the named base,
checks it against the fingerprint and the adapter's params, then loads the tensors; a file of another kind
(another adapter's, a released CellSeg1 LoRA) is a `ConfigError` that says what to use instead.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapters._upstream.cellseg1.released import resolve_lora
from harness.errors import ConfigError, MissingWeightsError

if TYPE_CHECKING:
    import torch
    from torch import nn

logger = logging.getLogger(__name__)

FORMAT = "c6bench-cellseg1/2"  # /2: squashed resize, resize_size and crop_n_layers recorded
#: Adapter params a checkpoint must share with the adapter that loads it.
SHAPE_KEYS = ("variant", "image_size", "lora_rank", "train_scope")


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The tensors training changes: LoRA only (scope lora) or everything (scope all)."""
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    return {n: t.detach().cpu().clone() for n, t in model.state_dict().items() if n in names}


def save(adapter: Any, path: Path, extra: dict[str, Any] | None = None) -> None:
    """Write `adapter`'s (a `CellSeg1Adapter`) trained tensors + base description atomically."""
    adapter.model  # noqa: B018 - builds the model (and its base fingerprint) when not yet built
    blob = {
        "format": FORMAT, "variant": adapter.variant, "image_size": adapter.image_size,
        "lora_rank": adapter.lora_rank, "train_scope": adapter.train_scope, "base_weights": adapter.base_weights,
        "lora_checkpoint": adapter.lora_checkpoint, "base_fingerprint": adapter.base_fingerprint,
        "trained": trainable_state(adapter.model), "resize_size": adapter.work_size,
        "selection": adapter.calibrated, "category": adapter.category, **(extra or {}),
    }
    adapter.save(blob, path)  # TorchAdapter.save: torch.save through harness.io.atomic_path


def read(path: Path) -> dict[str, Any]:
    """The checkpoint's contents; anything that is not one fails naming the file and what to use."""
    import torch

    if not path.is_file():
        raise MissingWeightsError(f"checkpoint {path} does not exist")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user problem
        raise ConfigError(f"{path}: not a cellseg1 checkpoint (torch cannot read it: {type(exc).__name__}); "
                          "was it written by another adapter? Use the file cellseg1's train() returned") from exc
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        hint = " (a released CellSeg1 LoRA file: pass it as params.lora_checkpoint)" \
            if isinstance(blob, dict) and "w_a_000" in blob else ""
        raise ConfigError(f"{path}: not a cellseg1 checkpoint of this harness (expected format "
                          f"{FORMAT}){hint}; use the file cellseg1's train() returned")
    return blob


def load(adapter: Any, path: Path) -> None:
    """Rebuild the base named in the checkpoint (it must match `adapter`'s params), load the trained tensors."""
    from harness.weights import resolve

    path = Path(path)
    if adapter.generator == "sam" and path.is_file():
        raise ConfigError(f"{path}: generator 'sam' runs plain SAM; load a CellSeg1 checkpoint with generator "
                          "'cellseg1'")
    blob = read(path)
    # the base the checkpoint was trained on, whatever we were given
    adapter.base_weights = blob["base_weights"]
    adapter.weights_path = resolve(adapter.base_weights) if adapter.base_weights is not None else None
    for key in SHAPE_KEYS:
        mine = getattr(adapter, key)
        if blob[key] != mine:
            raise ConfigError(f"{path}: checkpoint has {key}={blob[key]!r}, the adapter {mine!r}; "
                              f"use the params the model was trained with")
    adapter.lora_checkpoint = blob["lora_checkpoint"]
    adapter.lora_path = resolve_lora(adapter.lora_checkpoint, adapter.weights_path)
    adapter._model = None  # rebuilt from the base just named
    adapter.model  # noqa: B018 - builds it (and its base fingerprint)
    fp = blob["base_fingerprint"]
    if blob["train_scope"] == "lora" and not math.isclose(fp, adapter.base_fingerprint, rel_tol=1e-9, abs_tol=1e-9):
        raise MissingWeightsError(f"{path}: the base model rebuilt here differs from the one trained on "
                                  f"(fingerprint); a random base needs the same torch version")
    missing = set(trainable_state(adapter.model)) - set(blob["trained"])
    if missing:
        raise MissingWeightsError(f"{path}: trained tensors missing: {sorted(missing)[:5]}")
    adapter.model.load_state_dict(blob["trained"], strict=False)
    adapter.work_size, adapter.calibrated = int(blob["resize_size"]), dict(blob["selection"])
    adapter.category = blob.get("category", adapter.category)
