"""Cellpose-SAM networks for `adapters.cellpose_sam`: read a cpsam file, build cellpose 4's ``CPSAM`` for it.

``CPSAM`` (cellpose 4, ``cellpose/vit.py``) is SAM's ViT image encoder with 8-px tokens, position embeddings
cut to a 256-px tile, global attention in every block and a 1×1 readout to 3 × 8 × 8 outputs per token
(flows + cell probability) turned back into pixels by a fixed transposed convolution (``W2``). The released
``cpsam`` uses SAM's ViT-L encoder (24 blocks, width 1024, 16 heads: 305 M parameters, 1.2 GB). The same
class with a smaller SAM encoder (`ENCODERS`: ``small`` = 4 blocks, width 256, 8 heads; ``tiny`` = 1 block,
width 64) is what the quick profile and the tests train on a CPU.

cellpose 4 loads weights with ``strict=False``, so a file with missing or renamed keys would silently keep
random values; every file is checked here against the network's own keys and shapes first, and its encoder
size is read from the tensor shapes, so any CPSAM file — released, fine-tuned, or small — loads into the
network it was saved from. Only called inside cellpose_sam's environment (cellpose 4 imported).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import ConfigError

logger = logging.getLogger(__name__)

#: SAM builds its encoder for 1024-px inputs with 16-px patches: a 64 × 64 token grid; windowed blocks use 14.
_GRID, _WINDOW = 1024 // 16, 14


@dataclass(frozen=True)
class Encoder:
    """The SAM ViT image encoder inside CPSAM (what differs between the released model and a small one)."""

    width: int
    depth: int
    heads: int
    global_blocks: tuple[int, ...]  # SAM's global-attention blocks (CPSAM makes every block global anyway)
    patch: int = 8  # token size in pixels (CPSAM's ps): a 256-px tile is a (256 / patch)² token grid

    def describe(self) -> str:
        return (f"SAM ViT encoder, {self.depth} blocks, width {self.width}, {self.heads} heads, "
                f"{self.patch}-px tokens")


VIT_L = Encoder(width=1024, depth=24, heads=16, global_blocks=(5, 11, 17, 23))  # released cpsam: SAM vit_l
ENCODERS = {
    "vit_l": VIT_L,
    "small": Encoder(width=256, depth=4, heads=8, global_blocks=(1, 3)),  # 4.2 M parameters: quick profile
    "tiny": Encoder(width=64, depth=1, heads=2, global_blocks=(0,)),  # 0.8 M: seconds per image, smoke tests
}


def read(path: Path) -> tuple[dict[str, Any], Encoder]:
    """The state dict of a CPSAM file (``module.`` prefixes dropped) and the encoder it was saved from."""
    import torch

    try:
        try:  # memory-mapped: the shapes are read without loading 1.2 GB
            state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:  # a legacy (non-zip) torch file cannot be mapped
            if "mmap" not in str(exc):
                raise
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user problem
        raise ConfigError(f"{path}: not a Cellpose-SAM checkpoint (torch cannot read it as a plain state "
                          f"dict: {type(exc).__name__}); use cpsam or a file that cellpose_sam's train() "
                          "wrote") from exc
    if not isinstance(state, dict):
        raise ConfigError(f"{path}: not a Cellpose-SAM checkpoint (holds a {type(state).__name__})")
    state = {(k[7:] if str(k).startswith("module.") else k): v for k, v in state.items()}
    if "W2" not in state:
        if "output.2.weight" in state or any(str(k).startswith("downsample.") for k in state):
            raise ConfigError(f"{path}: a Cellpose 3 file (cyto3 / nuclei style); run it with the cellpose "
                              "model")
        keys = ", ".join(list(map(str, state))[:3]) or "none"
        raise ConfigError(f"{path}: not a Cellpose-SAM checkpoint (no W2 readout; keys e.g. {keys}); was it "
                          "written by another adapter?")
    if "encoder.cls_token" in state:
        raise ConfigError(f"{path}: a Cellpose DINO model (cpdino); only SAM-encoder models (cpsam) are "
                          "supported")
    try:
        width = int(state["encoder.patch_embed.proj.weight"].shape[0])
        depth = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("encoder.blocks."))
        rel = [state[f"encoder.blocks.{i}.attn.rel_pos_h"].shape for i in range(depth)]
    except (KeyError, ValueError) as exc:
        raise ConfigError(f"{path}: a Cellpose-SAM file without a complete SAM encoder (missing {exc})"
                          ) from exc
    heads = width // int(rel[0][1])
    globals_ = tuple(i for i, s in enumerate(rel) if s[0] == 2 * _GRID - 1)
    encoder = Encoder(width, depth, heads, globals_, patch=int(state["W2"].shape[-1]))
    return state, encoder


def build(encoder: Encoder, dtype: Any) -> Any:
    """cellpose 4's ``CPSAM`` with `encoder` (random values): its own constructor, given that SAM encoder."""
    from functools import partial
    from types import SimpleNamespace

    import torch
    from cellpose import vit
    from segment_anything.modeling import ImageEncoderViT

    if encoder == VIT_L:
        return vit.CPSAM(dtype=dtype)

    def sam_encoder(_checkpoint: Any) -> SimpleNamespace:  # what sam_model_registry["vit_l"] builds, resized
        return SimpleNamespace(image_encoder=ImageEncoderViT(
            depth=encoder.depth, embed_dim=encoder.width, img_size=1024, mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=encoder.heads, patch_size=16,
            qkv_bias=True, use_rel_pos=True, global_attn_indexes=encoder.global_blocks, window_size=_WINDOW,
            out_chans=256))

    registry = vit.sam_model_registry
    vit.sam_model_registry = {"vit_l": sam_encoder}  # CPSAM.__init__ asks the registry for its encoder
    try:
        return vit.CPSAM(ps=encoder.patch, dtype=dtype)
    finally:
        vit.sam_model_registry = registry


def check_keys(path: Path, state: dict[str, Any], net: Any) -> None:
    """The file must hold exactly the network's tensors, in its shapes (cellpose loads non-strictly)."""
    own = net.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    wrong = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or wrong:
        groups = (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
        parts = [f"{label} {', '.join(keys[:4])}{' …' if len(keys) > 4 else ''}"
                 for label, keys in groups if keys]
        raise ConfigError(f"{path}: does not match the Cellpose-SAM network it describes "
                          f"({'; '.join(parts)})")


def load(path: Path, device: Any, bfloat16: bool) -> tuple[Any, Encoder]:
    """A ready ``CellposeModel`` for a CPSAM file, and the encoder it has.

    The released architecture goes through cellpose's own ``CellposeModel(pretrained_model=path)``; any other
    encoder size is built with `build` and loaded strictly.
    """
    import torch
    from cellpose import models

    state, encoder = read(path)
    dtype = torch.bfloat16 if bfloat16 else torch.float32
    if encoder == VIT_L:
        model = models.CellposeModel(gpu=device.type == "cuda", device=device, pretrained_model=str(path),
                                     use_bfloat16=bfloat16)
        check_keys(path, state, model.net)
        return model, encoder
    net = build(encoder, torch.float32)
    check_keys(path, state, net)
    net.load_state_dict(state, strict=True)
    net = net.to(device)
    if bfloat16:
        net.dtype = dtype
    return wrap(net, device, str(path)), encoder


def scratch(encoder: Encoder, device: Any, bfloat16: bool) -> Any:
    """A ready ``CellposeModel`` around a CPSAM of `encoder` with random values (float32 built, then cast)."""
    import torch

    net = build(encoder, torch.float32).to(device)
    if bfloat16:
        net.dtype = torch.bfloat16
    return wrap(net, device, None)


def wrap(net: Any, device: Any, source: str | None) -> Any:
    """A ``CellposeModel`` around a network built here (cellpose's constructor insists on loading a file).

    Sets exactly the attributes ``CellposeModel.__init__`` sets (cellpose 4.2: device, gpu, pretrained_model,
    backbone, net); ``eval`` uses nothing else.
    """
    from cellpose import models

    model = object.__new__(models.CellposeModel)
    model.device, model.gpu, model.pretrained_model = device, device.type == "cuda", source
    model.backbone, model.net = net.backbone, net
    return model
