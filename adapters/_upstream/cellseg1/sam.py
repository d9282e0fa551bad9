"""SAM at CellSeg1's image size with LoRA on q/v of every attention (the network of CellSeg1).

Built from the PyPI ``segment-anything`` modules (their key names equal those of CellSeg1's vendored copy),
because SAM's builders are fixed at 1024 px and CellSeg1 runs at 512. A 1024-px checkpoint is fitted to the
smaller size as CellSeg1 does (``segment_anything/build_sam.py :: load_from``, from SAMed): bilinear
interpolation with ``align_corners=True`` of ``pos_embed`` and of the relative-position tables of the
global-attention blocks (windowed blocks keep their 14-px tables).

LoRA as CellSeg1's ``peft/sam_lora_image_encoder_mask_decoder.py``: rank-r A (kaiming-uniform) and B (zeros)
on the q and v slices of each encoder block's fused ``qkv`` and on ``q_proj``/``v_proj`` of every mask-decoder
attention, no scaling; the base is frozen. One deviation: dropout acts on the LoRA input (CellSeg1: on the
whole projection output); at inference both are the identity.
"""

from __future__ import annotations

import logging
import math
from functools import partial
from typing import TYPE_CHECKING, Any

from adapters.base import WeightSpec
from harness.errors import ConfigError, MissingWeightsError

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn

logger = logging.getLogger(__name__)

# encoder hyper-parameters: embed_dim, depth, heads, global-attention blocks, window, prompt dim, decoder mlp
VARIANTS: dict[str, dict[str, Any]] = {
    "vit_b": dict(embed_dim=768, depth=12, heads=12, global_attn=(2, 5, 8, 11), window=14, prompt_dim=256,
                  mlp=2048),
    "vit_l": dict(embed_dim=1024, depth=24, heads=16, global_attn=(5, 11, 17, 23), window=14, prompt_dim=256,
                  mlp=2048),
    "vit_h": dict(embed_dim=1280, depth=32, heads=16, global_attn=(7, 15, 23, 31), window=14, prompt_dim=256,
                  mlp=2048),
    # small random-init configs (no published weights): CPU profiles and tests
    "small": dict(embed_dim=192, depth=4, heads=3, global_attn=(1, 3), window=8, prompt_dim=128, mlp=512),
    "tiny": dict(embed_dim=64, depth=2, heads=2, global_attn=(1,), window=4, prompt_dim=32, mlp=64),
}
SAM_WEIGHTS = {"sam_vit_b": "vit_b", "sam_vit_l": "vit_l", "sam_vit_h": "vit_h"}
SAM_LICENCE = "Apache-2.0 (Meta, segment-anything)"
SCRATCH_SEED = 0  # random base models are rebuilt from this seed at load time (checked by a fingerprint)
LORA_LEAVES = ("a_q", "b_q", "a_v", "b_v", "a", "b")
DECODER_ATTNS = ("self_attn", "cross_attn_token_to_image", "cross_attn_image_to_token")


def sam_specs() -> tuple[WeightSpec, ...]:
    """Meta's released SAM checkpoints (1024 px; resized to the model size at load)."""
    files = (("sam_vit_b", "sam_vit_b_01ec64.pth", "ViT-B, 375,042,383 bytes"),
             ("sam_vit_l", "sam_vit_l_0b3195.pth", "ViT-L, 1,249,524,607 bytes"),
             ("sam_vit_h", "sam_vit_h_4b8939.pth", "ViT-H, 2,564,550,879 bytes"))
    return tuple(WeightSpec(name=name, file=file, url=f"https://dl.fbaipublicfiles.com/segment_anything/{file}",
                            sha256=None, licence=SAM_LICENCE,
                            description=f"Segment Anything {what} (1024 px; resized to 512 px at load)")
                 for name, file, what in files)


def check_variants(variant: str, scratch_variant: str | None, weights: str | None) -> None:
    """Known variants, and SAM weights of the variant that is built on them (a `ConfigError` otherwise)."""
    for v in (variant, scratch_variant or variant):
        if v not in VARIANTS:
            raise ConfigError(f"cellseg1: unknown variant {v!r}; choose one of {', '.join(VARIANTS)}")
    if weights in SAM_WEIGHTS and SAM_WEIGHTS[weights] != variant:
        raise ConfigError(f"cellseg1: weights {weights} are SAM {SAM_WEIGHTS[weights]} but variant is "
                          f"{variant}; set params.variant: {SAM_WEIGHTS[weights]}")


def _lora_pair(in_features: int, out_features: int, rank: int) -> tuple[nn.Linear, nn.Linear]:
    """A (kaiming-uniform) and B (zeros) of one low-rank update: B A x is zero until trained."""
    from torch import nn

    a = nn.Linear(in_features, rank, bias=False)
    b = nn.Linear(rank, out_features, bias=False)
    nn.init.kaiming_uniform_(a.weight, a=math.sqrt(5))
    nn.init.zeros_(b.weight)
    return a, b


def _lora_modules() -> tuple[type, type]:
    """The two LoRA wrappers, defined lazily so importing the adapter does not import torch."""
    import torch
    from torch import nn

    class LoRAQKV(nn.Module):
        """SAM's fused qkv Linear plus low-rank updates of the q and v outputs (k untouched), as CellSeg1."""

        def __init__(self, qkv: nn.Linear, rank: int, dropout: float) -> None:
            super().__init__()
            self.qkv = qkv
            self.dim = qkv.in_features
            self.a_q, self.b_q = _lora_pair(self.dim, self.dim, rank)
            self.a_v, self.b_v = _lora_pair(self.dim, self.dim, rank)
            self.drop = nn.Dropout(dropout)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            q, k, v = self.qkv(x).split(self.dim, dim=-1)
            h = self.drop(x)
            return torch.cat([q + self.b_q(self.a_q(h)), k, v + self.b_v(self.a_v(h))], dim=-1)

    class LoRALinear(nn.Module):
        """A frozen Linear plus B A x (mask-decoder q_proj / v_proj)."""

        def __init__(self, base: nn.Linear, rank: int, dropout: float) -> None:
            super().__init__()
            self.base = base
            self.a, self.b = _lora_pair(base.in_features, base.out_features, rank)
            self.drop = nn.Dropout(dropout)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.base(x) + self.b(self.a(self.drop(x)))

    return LoRAQKV, LoRALinear


def build_sam(variant: str, image_size: int) -> nn.Module:
    """A segment_anything `Sam` of `variant` at `image_size` px (the builders are fixed at 1024)."""
    import torch
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    if variant not in VARIANTS:
        raise ConfigError(f"cellseg1: unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    if image_size % 16:
        raise ConfigError(f"cellseg1: image_size {image_size} must be a multiple of the 16-px patch")
    v = VARIANTS[variant]
    grid = image_size // 16
    encoder = ImageEncoderViT(
        depth=v["depth"], embed_dim=v["embed_dim"], img_size=image_size, mlp_ratio=4,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=v["heads"], patch_size=16, qkv_bias=True,
        use_rel_pos=True, global_attn_indexes=v["global_attn"], window_size=v["window"],
        out_chans=v["prompt_dim"],
    )
    prompt = PromptEncoder(embed_dim=v["prompt_dim"], image_embedding_size=(grid, grid),
                           input_image_size=(image_size, image_size), mask_in_chans=16)
    decoder = MaskDecoder(
        num_multimask_outputs=3,
        transformer=TwoWayTransformer(depth=2, embedding_dim=v["prompt_dim"], mlp_dim=v["mlp"],
                                      num_heads=8 if v["prompt_dim"] >= 128 else 2),
        transformer_dim=v["prompt_dim"], iou_head_depth=3, iou_head_hidden_dim=min(256, v["prompt_dim"] * 2),
    )
    return Sam(image_encoder=encoder, prompt_encoder=prompt, mask_decoder=decoder,
               pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375])


def resize_sam_state(state: dict[str, Any], model: nn.Module) -> dict[str, Any]:
    """Fit a SAM state dict made at another image size: resize pos_embed and global-attention rel_pos tables.

    Bilinear with ``align_corners=True``, exactly as CellSeg1's ``load_from`` (1024 → 512: the corner tokens
    keep their values, token i of 32 takes 64-grid position i·63/31); every other shape must already match.
    """
    import torch.nn.functional as F

    target = model.state_dict()
    out = dict(state)
    for key, value in state.items():
        if key not in target or target[key].shape == value.shape:
            continue
        want = target[key].shape
        if key == "image_encoder.pos_embed":  # (1, H, W, C)
            out[key] = F.interpolate(value.permute(0, 3, 1, 2).float(), size=want[1:3], mode="bilinear",
                                     align_corners=True).permute(0, 2, 3, 1).to(value.dtype)
        elif key.endswith(("attn.rel_pos_h", "attn.rel_pos_w")) and value.shape[1] == want[1]:  # (2S-1, dim)
            out[key] = F.interpolate(value[None, None].float(), size=tuple(want), mode="bilinear",
                                     align_corners=True)[0, 0].to(value.dtype)
        else:
            raise MissingWeightsError(f"SAM checkpoint tensor {key} has shape {tuple(value.shape)}, the model "
                                      f"needs {tuple(want)}: wrong variant for this checkpoint?")
    return out


def load_sam_file(sam: nn.Module, path: Any, variant: str) -> None:
    """Load a SAM state-dict file into `sam` (resized to its image size); a foreign file fails naming it."""
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or "image_encoder.pos_embed" not in state:
        raise MissingWeightsError(f"{path} is not a SAM state dict (no image_encoder.pos_embed)")
    missing, unexpected = sam.load_state_dict(resize_sam_state(state, sam), strict=False)
    if missing or unexpected:
        raise MissingWeightsError(f"{path}: missing {missing[:5]} unexpected {unexpected[:5]} keys for SAM "
                                  f"{variant}")


def add_lora(sam: nn.Module, rank: int, dropout: float) -> None:
    """Freeze `sam` and wrap every encoder qkv and every decoder q_proj/v_proj with LoRA (in place)."""
    lora_qkv, lora_linear = _lora_modules()
    for p in sam.parameters():
        p.requires_grad_(False)
    for block in sam.image_encoder.blocks:
        block.attn.qkv = lora_qkv(block.attn.qkv, rank, dropout)
    for attn in decoder_attentions(sam):
        attn.q_proj = lora_linear(attn.q_proj, rank, dropout)
        attn.v_proj = lora_linear(attn.v_proj, rank, dropout)


def decoder_attentions(sam: nn.Module) -> list[nn.Module]:
    """The mask-decoder attentions CellSeg1 adapts, in its order: per layer self, token→image, image→token;
    then the final token→image attention."""
    transformer = sam.mask_decoder.transformer
    return [*(getattr(layer, n) for layer in transformer.layers for n in DECODER_ATTNS),
            transformer.final_attn_token_to_image]


def is_lora_key(name: str) -> bool:
    """Parameter names created by `add_lora`."""
    leaf = name.rsplit(".", 2)[-2] if name.count(".") >= 1 else name
    return leaf in LORA_LEAVES


def fingerprint(model: nn.Module) -> float:
    """Sum of a few frozen tensors: proves a random base rebuilt from the seed is the one trained on."""
    keys = ("image_encoder.patch_embed.proj.weight", "mask_decoder.iou_token.weight")
    state = model.state_dict()
    return float(sum(state[k].double().sum().item() for k in keys))


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """Trainable and total parameters."""
    params = list(model.parameters())
    return {"trainable": sum(p.numel() for p in params if p.requires_grad), "total": sum(p.numel() for p in params)}


def embed(sam: nn.Module, images: np.ndarray, device: str) -> torch.Tensor:
    """(B, S, S, 3) float 0..255 → image embeddings."""
    import numpy as np
    import torch

    x = torch.as_tensor(np.ascontiguousarray(images), dtype=torch.float32, device=device)
    x = (x.permute(0, 3, 1, 2) - sam.pixel_mean) / sam.pixel_std
    return sam.image_encoder(x)


def decode(sam: nn.Module, embedding: torch.Tensor, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One image embedding (1, C, h, w) + N points (N, 2) → low-res logits (N, h4, w4), iou (N,)."""
    import torch

    labels = torch.ones(points.shape[0], 1, dtype=torch.int64, device=points.device)
    sparse, dense = sam.prompt_encoder(points=(points[:, None, :], labels), boxes=None, masks=None)
    logits, iou = sam.mask_decoder(image_embeddings=embedding, image_pe=sam.prompt_encoder.get_dense_pe(),
                                   sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                   multimask_output=False)
    return logits[:, 0], iou[:, 0]
