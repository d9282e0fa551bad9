"""The authors' released CellSeg1 LoRA files (``checkpoints/*.pth`` of hotaru1227/cellseg1), converted on load.

Their layout is what ``peft/sam_lora_image_encoder_mask_decoder.py :: LoRA_Sam.save_lora_parameters`` writes,
a flat ``torch.save`` dict:

- ``w_a_###`` / ``w_b_###``, ``### = 000 … 2·depth-1``: encoder block ``### // 2``, its q update (even) then its
  v update (odd); A is ``(rank, C)``, B ``(C, rank)`` (``nn.Linear.weight`` of ``linear_a_q`` etc.);
- ``sa_*``, ``cti_*``, ``cit_*`` (``_a_###`` / ``_b_###``, ``### = 000 … 3``): mask-decoder layer ``### // 2``,
  self-attention / token→image / image→token cross-attention, q (even) then v (odd);
- ``fati_qa``, ``fati_qb``, ``fati_va``, ``fati_vb``: the final token→image attention;
- every ``prompt_encoder.*`` tensor and every ``mask_decoder.*`` tensor outside ``mask_decoder.transformer``,
  under SAM's own names (CellSeg1 freezes them, so they equal the base SAM's unless a freeze flag was off).

`load_released_lora` maps each onto this adapter's module names (`sam.add_lora`), after
checking the key set and every shape against the model: the variant and rank are read from the file, so a
ViT-H file on a ViT-B model (or any other file) is a `ConfigError` that says what to set. The files carry no
image size; CellSeg1 trains them at 512 px (``sam_image_size``), which is what the adapter must run.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapters._upstream.cellseg1.sam import DECODER_ATTNS, VARIANTS
from adapters.base import WeightSpec
from harness.errors import ConfigError

if TYPE_CHECKING:
    import torch
    from torch import nn

logger = logging.getLogger(__name__)

_REPO_RAW = "https://raw.githubusercontent.com/hotaru1227/cellseg1/main/checkpoints"
_LICENCE = "Apache-2.0 (hotaru1227/cellseg1); trained on public data of the named dataset"
#: name → (file in the authors' checkpoints/, dataset, README mAP@0.5, git blob sha1 of the file @ db3b336).
#: The git blob ids are upstream's only published hash (``git hash-object``); no sha256 is published.
RELEASED: dict[str, tuple[str, str, float, str]] = {
    "cellseg1_cellpose_specialized": ("cellpose_specialized_12.pth", "Cellpose specialized (CPS)", 0.916739,
                                      "a9e5556e287b33f680b9d55d24b191dbb60254db"),
    "cellseg1_cellseg_blood": ("cellseg_blood_117.pth", "NeurIPS CellSeg blood (CSB)", 0.940669,
                               "c1b64e832010de4ff6d2d623220ef98ae4be5700"),
    "cellseg1_deepbacs_rod_brightfield": ("deepbacs_rod_brightfield_9.pth", "DeepBacs E. coli brightfield (ECB)",
                                          0.860465, "924ff6f7d414010e400bfee4a7bc251ab6bf23f7"),
    "cellseg1_deepbacs_rod_fluorescence": ("deepbacs_rod_fluorescence_75.pth",
                                           "DeepBacs B. subtilis fluorescence (BSF)", 0.821372,
                                           "5ffa4faca226855afd5c230a3d5ececbcff60b05"),
    "cellseg1_dsb2018_stardist": ("dsb2018_stardist_435.pth", "DSB 2018 (StarDist subset, DSB)", 0.872526,
                                  "efac61c067b029803343237700851bd53fa5b0c6"),
}
_TAGS = dict(zip(DECODER_ATTNS, ("sa", "cti", "cit"), strict=True))


def released_specs() -> tuple[WeightSpec, ...]:
    """One `WeightSpec` per released LoRA file (a LoRA needs its base: SAM ViT-H, `sam_vit_h`)."""
    return tuple(
        WeightSpec(name=name, file=f"cellseg1/{file}", url=f"{_REPO_RAW}/{file}", sha256=None, licence=_LICENCE,
                   description=f"CellSeg1 LoRA trained on one {dataset} image (authors' README mAP@0.5 "
                               f"{ap:.3f}); for params.lora_checkpoint on SAM ViT-H (sam_vit_h) at 512 px")
        for name, (file, dataset, ap, _blob) in RELEASED.items()
    )


def key_map(model: nn.Module) -> dict[str, str]:
    """This adapter's state-dict name → the released file's key, for every tensor the file holds."""
    out: dict[str, str] = {}
    for i, _ in enumerate(model.image_encoder.blocks):
        pre = f"image_encoder.blocks.{i}.attn.qkv"
        for j, part in enumerate(("q", "v")):
            out[f"{pre}.a_{part}.weight"] = f"w_a_{2 * i + j:03d}"
            out[f"{pre}.b_{part}.weight"] = f"w_b_{2 * i + j:03d}"
    for layer, _ in enumerate(model.mask_decoder.transformer.layers):
        for attn, tag in _TAGS.items():
            pre = f"mask_decoder.transformer.layers.{layer}.{attn}"
            for j, proj in enumerate(("q_proj", "v_proj")):
                out[f"{pre}.{proj}.a.weight"] = f"{tag}_a_{2 * layer + j:03d}"
                out[f"{pre}.{proj}.b.weight"] = f"{tag}_b_{2 * layer + j:03d}"
    final = "mask_decoder.transformer.final_attn_token_to_image"
    for part in ("q", "v"):
        out[f"{final}.{part}_proj.a.weight"] = f"fati_{part}a"
        out[f"{final}.{part}_proj.b.weight"] = f"fati_{part}b"
    for key in model.state_dict():
        if key.startswith("prompt_encoder.") or (key.startswith("mask_decoder.") and "transformer" not in key):
            out[key] = key
    return out


def file_variant(state: dict[str, Any]) -> tuple[str | None, int, int]:
    """``(variant or None, encoder depth, rank)`` of a released file, read from its ``w_a_###`` tensors."""
    n = sum(1 for k in state if k.startswith("w_a_"))
    width, rank = tuple(state["w_a_000"].shape)[::-1]
    found = [name for name, v in VARIANTS.items() if v["embed_dim"] == width and 2 * v["depth"] == n]
    return (found[0] if found else None), n // 2, rank


def read_released(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a released LoRA file; anything else is a `ConfigError` naming the file."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user problem
        raise ConfigError(f"{path}: not a CellSeg1 LoRA file (torch cannot read it: {type(exc).__name__})") from exc
    if not isinstance(state, dict) or "w_a_000" not in state or "fati_qa" not in state:
        head = ", ".join(list(state)[:4]) if isinstance(state, dict) else type(state).__name__
        hint = (" — it is a checkpoint of this harness: use it as a fine-tuned checkpoint (load), not as "
                "lora_checkpoint" if isinstance(state, dict) and "format" in state else "")
        raise ConfigError(f"{path}: not a CellSeg1 LoRA file (no w_a_000 / fati_qa keys; it has {head}){hint}")
    return state


def load_released_lora(model: nn.Module, path: Path, variant: str, rank: int) -> None:
    """Convert a released file onto `model` (SAM + `add_lora`, built as `variant`, LoRA `rank`) in place."""
    import torch

    state = read_released(path)
    found, depth, file_rank = file_variant(state)
    if found is None:
        raise ConfigError(f"{path}: a LoRA for an encoder of {depth} blocks x {state['w_a_000'].shape[1]} "
                          f"channels, which matches no SAM variant ({', '.join(VARIANTS)})")
    if found != variant:
        raise ConfigError(f"{path}: a LoRA for SAM {found}, the model is SAM {variant}; set params.variant: "
                          f"{found} and the matching SAM weights (e.g. sam_{found})")
    if file_rank != rank:
        raise ConfigError(f"{path}: LoRA rank {file_rank}, the adapter has lora_rank {rank}; set params.lora_rank: "
                          f"{file_rank}")
    mapping = key_map(model)
    missing = sorted(set(mapping.values()) - set(state))
    unexpected = sorted(set(state) - set(mapping.values()))
    if missing or unexpected:
        raise ConfigError(f"{path}: not CellSeg1's LoRA layout for SAM {variant}: missing {missing[:6]}, "
                          f"unexpected {unexpected[:6]}")
    target = model.state_dict()
    converted = {}
    for ours, theirs in mapping.items():
        tensor = state[theirs]
        if tuple(tensor.shape) != tuple(target[ours].shape):
            raise ConfigError(f"{path}: {theirs} has shape {tuple(tensor.shape)}, {ours} needs "
                              f"{tuple(target[ours].shape)}")
        converted[ours] = tensor.to(target[ours].dtype)
    with torch.no_grad():
        model.load_state_dict(converted, strict=False)
    logger.info("cellseg1: released LoRA %s loaded (SAM %s, rank %d, %d tensors)", path.name, variant, rank,
                len(converted))


def resolve_lora(lora: str | None, base: Path | None) -> Path | None:
    """The local file of a released LoRA (a known name or a path); it needs the SAM `base` it was trained on."""
    if lora is None:
        return None
    if base is None:
        raise ConfigError(f"cellseg1: lora_checkpoint {lora} needs the SAM base it was trained on as weights "
                          "(CellSeg1's released files: sam_vit_h)")
    from harness.weights import resolve

    return resolve(lora)
