"""CellSeg1 adapter: Segment Anything with LoRA, trained from few images, prompted by a point grid.

A rebuild of CellSeg1 (Zhou, Du, Xu 2024, arXiv 2412.01410) on the PyPI ``segment-anything`` 1.0 package,
because the authors' code hard-codes CUDA and vendors a modified SAM (see shared/reference/models.md, C):

- SAM (ViT-B/L/H, or small random-init configs for CPU) built at 512 px instead of 1024: when a 1024-px SAM
  checkpoint is loaded, ``pos_embed`` and the relative-position tables of the global-attention blocks are
  bilinearly resized (windowed blocks keep their 14-px window tables).
- LoRA rank 4 on q and v of every encoder block's fused ``qkv`` Linear and on ``q_proj``/``v_proj`` of every
  mask-decoder attention; everything else is frozen. A small module of our own instead of ``peft``: peft
  can only adapt the fused qkv as a whole (q, k and v), while the method adapts q and v only; one mechanism
  for both places keeps the checkpoint layout ours and avoids importing transformers.
- Training as the method: resized images cut into overlapping tiles, one positive point per cell (inner part
  of the cell) plus background points, prompts sampled from the priority-resolved label map so each prompt has
  one target; BCE on the positives' low-res logits + MSE of the IoU head (1 for cells, 0 for background);
  AdamW + OneCycleLR. The checkpoint holds only the trained tensors + the base-model description.
- Prediction: automatic mask generation with a point grid over the image and the crops of ``crop_n_layers``,
  stability / predicted-IoU thresholds, masks on crop edges dropped, mask-IoU NMS (not box NMS, which would
  suppress touching cells), large-mask filter, largest connected piece, masks resized back to full size.
  `train` picks the predicted-IoU threshold on the validation samples by F1@0.5 (the paper did).
- Zero-shot (SAM weights, no `load`): the same generator on plain SAM (LoRA updates are zero until trained),
  at `image_size`; the paper's baseline ran SAM's own generator at 1024 px with SAM's defaults.
- Deviations from CellSeg1, on purpose: LoRA dropout on the LoRA input (CellSeg1: on the whole qkv output);
  augmentation = random zoom + flips + brightness/contrast (no rotation/shift); min_mask_region_area keeps the
  largest piece and drops smaller masks instead of SAM's hole/island filling.
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
from adapters.base import Adapter
from harness.errors import ConfigError, DataError, MissingWeightsError
from harness.io import atomic_path
from harness.weights import WeightSpec

if TYPE_CHECKING:
    import torch
    from torch import nn

    from harness.data import Instance, Sample

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "c6bench-cellseg1/1"
SAM_LICENCE = "Apache-2.0 (Meta, segment-anything)"

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
SCRATCH_SEED = 0  # random base models are rebuilt from this seed at load time (checked by a fingerprint)


def _sam_spec(name: str, file: str, what: str) -> WeightSpec:
    return WeightSpec(
        name=name, file=file, url=f"https://dl.fbaipublicfiles.com/segment_anything/{file}", sha256=None,
        licence=SAM_LICENCE, description=f"Segment Anything {what} (1024 px; resized to 512 px at load)",
    )


# ============================================================================================= model


def _lora_pair(in_features: int, out_features: int, rank: int) -> tuple[nn.Linear, nn.Linear]:
    """A (kaiming-uniform) and B (zeros) of one low-rank update: B A x is zero until trained."""
    from torch import nn

    a = nn.Linear(in_features, rank, bias=False)
    b = nn.Linear(rank, out_features, bias=False)
    nn.init.kaiming_uniform_(a.weight, a=math.sqrt(5))
    nn.init.zeros_(b.weight)
    return a, b


def _lora_modules() -> tuple[type, type]:
    """The two LoRA wrappers, defined lazily so importing this adapter does not import torch."""
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
    from functools import partial

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
        transformer=TwoWayTransformer(depth=2, embedding_dim=v["prompt_dim"], mlp_dim=v["mlp"], num_heads=8
                                      if v["prompt_dim"] >= 128 else 2),
        transformer_dim=v["prompt_dim"], iou_head_depth=3, iou_head_hidden_dim=min(256, v["prompt_dim"] * 2),
    )
    return Sam(image_encoder=encoder, prompt_encoder=prompt, mask_decoder=decoder,
               pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375])


def resize_sam_state(state: dict[str, Any], model: nn.Module) -> dict[str, Any]:
    """Fit a SAM state dict made at another image size: resize pos_embed and global-attention rel_pos tables.

    Bilinear interpolation, as SAMed/CellSeg1 do for 1024 → 512; every other shape must already match.
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
                                     align_corners=False).permute(0, 2, 3, 1).to(value.dtype)
        elif key.endswith(("attn.rel_pos_h", "attn.rel_pos_w")) and value.shape[1] == want[1]:  # (2S-1, dim)
            out[key] = F.interpolate(value[None, None].float(), size=tuple(want), mode="bilinear",
                                     align_corners=False)[0, 0].to(value.dtype)
        else:
            raise MissingWeightsError(f"SAM checkpoint tensor {key} has shape {tuple(value.shape)}, the "
                                      f"model "
                                      f"needs {tuple(want)}: wrong variant for this checkpoint?")
    return out


def add_lora(sam: nn.Module, rank: int, dropout: float) -> None:
    """Freeze `sam` and wrap every encoder qkv and every decoder q_proj/v_proj with LoRA (in place)."""
    lora_qkv, lora_linear = _lora_modules()
    for p in sam.parameters():
        p.requires_grad_(False)
    for block in sam.image_encoder.blocks:
        block.attn.qkv = lora_qkv(block.attn.qkv, rank, dropout)
    transformer = sam.mask_decoder.transformer
    attns = [getattr(layer, n) for layer in transformer.layers
             for n in ("self_attn", "cross_attn_token_to_image", "cross_attn_image_to_token")]
    for attn in [*attns, transformer.final_attn_token_to_image]:
        attn.q_proj = lora_linear(attn.q_proj, rank, dropout)
        attn.v_proj = lora_linear(attn.v_proj, rank, dropout)


def is_lora_key(name: str) -> bool:
    """Parameter names created by `add_lora`."""
    leaf = name.rsplit(".", 2)[-2] if name.count(".") >= 1 else name
    return leaf in ("a_q", "b_q", "a_v", "b_v", "a", "b")


def _fingerprint(model: nn.Module) -> float:
    """Sum of a few frozen tensors: proves a random base rebuilt from the seed is the one trained on."""
    keys = ("image_encoder.patch_embed.proj.weight", "mask_decoder.iou_token.weight")
    state = model.state_dict()
    return float(sum(state[k].double().sum().item() for k in keys))


# ============================================================================================= images


def to_rgb_float(image: np.ndarray) -> np.ndarray:
    """Any grayscale/RGB image → float32 HxWx3 in 0..255 (per-image min-max, as CellSeg1's reader)."""
    img = np.asarray(image, dtype=np.float32)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    lo, hi = img.min(axis=(0, 1), keepdims=True), img.max(axis=(0, 1), keepdims=True)
    return (img - lo) / np.maximum(hi - lo, 1e-6) * 255.0


def _resize(img: np.ndarray, height: int, width: int, nearest: bool = False) -> np.ndarray:
    import cv2

    interp = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    if img.dtype == np.int32:
        out = cv2.resize(img.astype(np.float32), (width, height), interpolation=cv2.INTER_NEAREST)
        return out.astype(np.int32)
    if img.dtype == bool:
        return cv2.resize(img.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST).astype(bool)
    return cv2.resize(img, (width, height), interpolation=interp)


def label_map_of(sample: Sample, rule: str, min_pixels: int) -> np.ndarray:
    """Priority-resolved label map (harness.convert), so each prompt has exactly one target."""
    from harness.convert import label_map

    labels, _ = label_map(sample, rule=rule, min_pixels=min_pixels)
    return labels


def tile_starts(size: int, tile: int, overlap: float) -> list[int]:
    """Start offsets of tiles of `tile` px covering `size` px with at least `overlap` fractional overlap."""
    if size <= tile:
        return [0]
    n = math.ceil((size - tile) / (tile * (1 - overlap))) + 1
    return [round(i * (size - tile) / (n - 1)) for i in range(n)]


# ============================================================================================= prompts


@dataclass
class TileBatchItem:
    image: np.ndarray  # (S, S, 3) float 0..255
    points: np.ndarray  # (N, 2) x, y in model pixels
    masks: np.ndarray  # (N, S, S) bool target masks (empty for background points)
    positive: np.ndarray  # (N,) bool


def sample_prompts(labels: np.ndarray, rng: np.random.Generator, max_points: int, neg_rate: float,
                   min_cell_area: int, edge_distance: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positive points (one per cell, inner 20 % by distance transform) + background points.

    Returns points (N, 2) as (x, y), label ids (0 = background), positive flags.
    """
    import cv2
    from scipy import ndimage

    h, w = labels.shape
    pts: list[tuple[float, float]] = []
    ids: list[int] = []
    slices = ndimage.find_objects(labels)
    cells = [k + 1 for k, sl in enumerate(slices) if sl is not None]
    rng.shuffle(cells)
    for k in cells:
        if len(ids) >= max_points:
            break
        sl = slices[k - 1]
        cell = labels[sl] == k
        area = int(cell.sum())
        y0, x0 = sl[0].start, sl[1].start
        cy, cx = y0 + cell.shape[0] / 2, x0 + cell.shape[1] / 2
        if area <= min_cell_area or min(cy, cx, h - cy, w - cx) < edge_distance:
            continue
        dist = cv2.distanceTransform(np.pad(cell, 1).astype(np.uint8), cv2.DIST_L2, 3)[1:-1, 1:-1]
        ys, xs = np.nonzero(dist >= 0.8 * dist.max())
        i = rng.integers(len(ys))
        pts.append((x0 + xs[i], y0 + ys[i]))  # pixel indices: SAM's prompt encoder adds the 0.5
        ids.append(k)
    n_neg = int(round(neg_rate * max(len(ids), 1)))
    bys, bxs = np.nonzero(labels == 0)
    if len(bys):
        for i in rng.integers(len(bys), size=n_neg):
            pts.append((bxs[i], bys[i]))
            ids.append(0)
    points = np.asarray(pts, np.float32).reshape(-1, 2)
    id_arr = np.asarray(ids, np.int64)
    return points, id_arr, id_arr > 0


# ========================================================================================= mask generation


@dataclass
class Candidate:
    """One generated mask in work-image coordinates, kept as a bbox crop."""

    y0: int
    x0: int
    crop: np.ndarray
    iou: float
    stability: float

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
    weights = (
        _sam_spec("sam_vit_b", "sam_vit_b_01ec64.pth", "ViT-B, 375,042,383 bytes"),
        _sam_spec("sam_vit_l", "sam_vit_l_0b3195.pth", "ViT-L, 1,249,524,607 bytes"),
        _sam_spec("sam_vit_h", "sam_vit_h_4b8939.pth", "ViT-H, 2,564,550,879 bytes"),
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
        points_per_side: int = 32,
        points_per_batch: int = 64,
        crop_n_layers: int = 1,
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
            Lets a CPU profile use SAM ViT-B when its weights are cached and a small net when they are not.
        train_scope: ``lora`` (the method: only LoRA trains), ``all`` (every weight trains; the checkpoint
            then holds everything) or ``auto``: lora on SAM weights, all on a random base (frozen random
            features would make LoRA meaningless).
        pred_iou_thresh: predicted-IoU ("cell probability") cut; None = the value picked on the validation
            split by `train` (0.8, CellSeg1's default, before training).
        """
        super().__init__(weights=weights, device=device)
        for v in (variant, scratch_variant or variant):
            if v not in VARIANTS:
                raise ConfigError(f"cellseg1: unknown variant {v!r}; choose one of {', '.join(VARIANTS)}")
        if train_scope not in ("auto", "lora", "all"):
            raise ConfigError(f"cellseg1: train_scope must be 'auto', 'lora' or 'all', not {train_scope!r}")
        self._variants = {"pretrained": variant, "scratch": scratch_variant or variant}
        self._scope = train_scope
        self.image_size = int(image_size)
        self.lora_rank, self.lora_dropout = int(lora_rank), float(lora_dropout)
        self.points_per_side, self.points_per_batch = int(points_per_side), int(points_per_batch)
        self.crop_n_layers, self.crop_overlap_ratio = int(crop_n_layers), float(crop_overlap_ratio)
        self.pred_iou_thresh = pred_iou_thresh
        self.calibrated_thresh: float | None = None
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
                raise ConfigError(f"cellseg1: weights {weights} are SAM {SAM_WEIGHTS[weights]} but variant "
                                  f"is "
                                  f"{variant}; set params.variant: {SAM_WEIGHTS[weights]}")
            self.weights_path = resolve(weights)  # MissingWeightsError names the fetch command
            self.base_weights = str(weights)
        self._model: nn.Module | None = None

    @property
    def variant(self) -> str:
        """The variant actually built: `variant` on weights, `scratch_variant` on a random base."""
        return self._variants["pretrained" if self.weights_path is not None else "scratch"]

    @property
    def train_scope(self) -> str:
        if self._scope != "auto":
            return self._scope
        return "lora" if self.weights_path is not None else "all"

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
        """Base SAM (checkpoint or seeded random init) on CPU → LoRA → device."""
        import torch

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(SCRATCH_SEED)
            sam = build_sam(self.variant, self.image_size)
        if sam_path is not None:
            state = torch.load(sam_path, map_location="cpu", weights_only=True)
            if not isinstance(state, dict) or "image_encoder.pos_embed" not in state:
                raise MissingWeightsError(f"{sam_path} is not a SAM state dict (no image_encoder.pos_embed)")
            missing, unexpected = sam.load_state_dict(resize_sam_state(state, sam), strict=False)
            if missing or unexpected:
                raise MissingWeightsError(f"{sam_path}: missing {missing[:5]} unexpected {unexpected[:5]} "
                                          f"keys "
                                          f"for SAM {self.variant}")
        self._base_fingerprint = _fingerprint(sam)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(SCRATCH_SEED + 1)
            add_lora(sam, self.lora_rank, self.lora_dropout)
        if self.train_scope == "all":
            for p in sam.parameters():
                p.requires_grad_(True)
        return sam.to(self.device).eval()

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """The tensors training changes: LoRA only (scope lora) or everything (scope all)."""
        names = {n for n, p in self.model.named_parameters() if p.requires_grad}
        return {n: t.detach().cpu().clone() for n, t in self.model.state_dict().items() if n in names}

    def _fingerprint_now(self) -> float:
        self.model  # noqa: B018 - builds the model (and its base fingerprint) when not yet built
        return self._base_fingerprint

    def parameter_counts(self) -> dict[str, int]:
        params = list(self.model.parameters())
        return {"trainable": sum(p.numel() for p in params if p.requires_grad),
                "total": sum(p.numel() for p in params)}

    # ------------------------------------------------------------------ training

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
        samples_per_epoch: int = 32,
        resize_size: int = 512,
        tile_size: int = 256,
        max_points: int = 30,
        neg_rate: float = 0.5,
        min_cell_area: int = 100,
        edge_distance: int = 20,
        pct_start: float = 0.3,
        threshold_grid: Sequence[float] = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95),
        dice_weight: float = 0.0,
        balanced_fraction: float = 0.0,
        seed: int = 0,
    ) -> Path:
        """Fine-tune (LoRA) on point prompts from priority-resolved masks; pick pred_iou_thresh on validation.

        One epoch = `samples_per_epoch` random tiles (CellSeg1's duplicate_data); one optimiser step every
        `grad_accumulation` batches. ``dice_weight`` > 0 adds a dice term on the positives (not in
        CellSeg1). ``balanced_fraction`` > 0 (not in CellSeg1) trains the first fraction of the batches with
        class-balanced BCE, then CellSeg1's plain BCE: what lets a random-init SAM learn at all (`mask_bce`).
        Returns ``out_dir/cellseg1.pt`` (trained tensors + base description).
        """
        import torch
        from tqdm import tqdm

        if epochs < 1 or batch_size < 1 or grad_accumulation < 1 or samples_per_epoch < 1:
            raise ConfigError("cellseg1: epochs, batch_size, grad_accumulation, samples_per_epoch must be "
                              ">= 1")
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
        if not tiles:
            raise DataError("cellseg1: the training samples have no annotated cells")
        model = self.model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        batches_per_epoch = math.ceil(samples_per_epoch / batch_size)
        steps = max(1, math.ceil(epochs * batches_per_epoch / grad_accumulation))
        opt = torch.optim.AdamW(params, lr=learning_rate, weight_decay=weight_decay)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=learning_rate, total_steps=steps,
                                                    pct_start=pct_start)
        prompt_args = dict(max_points=max_points, neg_rate=neg_rate, min_cell_area=min_cell_area,
                           edge_distance=edge_distance)
        step, losses = 0, []
        bar = tqdm(range(epochs * batches_per_epoch), desc="cellseg1 train", unit="batch", leave=False)
        for i in bar:
            items = [self._augment_tile(tiles[rng.integers(len(tiles))], rng, prompt_args)
                     for _ in range(batch_size)]
            balanced = i < balanced_fraction * epochs * batches_per_epoch
            loss = self._loss(items, dice_weight, "balanced_bce" if balanced else "bce")
            if loss is None:
                continue
            (loss / grad_accumulation).backward()
            losses.append(loss.item())
            if (i + 1) % grad_accumulation == 0 and step < steps:
                opt.step()
                opt.zero_grad(set_to_none=True)
                sched.step()
                step += 1
                bar.set_postfix(loss=f"{np.mean(losses[-grad_accumulation:]):.4f}")
        if step == 0:  # fewer batches than one accumulation window: still take the one step
            opt.step()
            opt.zero_grad(set_to_none=True)
        model.eval()
        self.calibrated_thresh = self._pick_threshold(val_samples, threshold_grid) if val_samples else None
        path = out_dir / "cellseg1.pt"
        self.save(path, extra={"losses": losses, "optimizer_steps": step})
        return path

    def _make_tiles(self, samples: Sequence[Sample], resize_size: int,
                    tile_size: int) -> list[tuple[Any, Any]]:
        """Resize each image (and label map, nearest) to resize_size, cut tiles with 50 % overlap."""
        tiles = []
        for s in samples:
            image = to_rgb_float(s.load_image())
            labels = label_map_of(s, self.label_rule, self.min_pixels)
            scale = resize_size / max(s.height, s.width)
            h, w = max(1, round(s.height * scale)), max(1, round(s.width * scale))
            image, labels = _resize(image, h, w), _resize(labels, h, w, nearest=True)
            t = min(tile_size, h, w)
            for y in tile_starts(h, t, 0.5):
                for x in tile_starts(w, t, 0.5):
                    lab = labels[y:y + t, x:x + t]
                    if lab.any():
                        tiles.append((image[y:y + t, x:x + t], lab))
        return tiles

    def _augment_tile(self, tile: tuple[np.ndarray, np.ndarray], rng: np.random.Generator,
                      prompt_args: dict[str, Any]) -> TileBatchItem:
        """Random zoom (crop 55-100 % of the tile side, like CellSeg1's RandomResizedCrop), flips,
        brightness/contrast, resize to the model size, then prompts from the label map."""
        image, labels = tile
        side = min(labels.shape)
        c = max(8, round(side * rng.uniform(0.55, 1.0)))
        y, x = rng.integers(labels.shape[0] - c + 1), rng.integers(labels.shape[1] - c + 1)
        image, labels = image[y:y + c, x:x + c], labels[y:y + c, x:x + c]
        if rng.random() < 0.5:
            image, labels = image[:, ::-1], labels[:, ::-1]
        if rng.random() < 0.5:
            image, labels = image[::-1], labels[::-1]
        image = np.clip(image * rng.uniform(0.8, 1.2) + rng.uniform(-25, 25), 0, 255).astype(np.float32)
        s = self.image_size
        image = _resize(np.ascontiguousarray(image), s, s)
        labels = _resize(np.ascontiguousarray(labels), s, s, nearest=True)
        points, ids, positive = sample_prompts(labels, rng, **prompt_args)
        masks = labels[None] == ids[:, None, None]
        masks[~positive] = False
        return TileBatchItem(image, points, masks, positive)

    def _embed(self, images: np.ndarray) -> torch.Tensor:
        """(B, S, S, 3) float 0..255 → image embeddings."""
        import torch

        x = torch.as_tensor(np.ascontiguousarray(images), dtype=torch.float32, device=self.device)
        x = x.permute(0, 3, 1, 2)
        x = (x - self.model.pixel_mean) / self.model.pixel_std
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
        plus `dice_weight` x soft dice on the positives when asked. ``mask_loss="balanced_bce"`` weights
        each mask's cell and background pixels to half the loss each (see `mask_bce`)."""
        import torch
        import torch.nn.functional as F

        items = [it for it in items if len(it.points)]
        if not items:
            return None
        emb = self._embed(np.stack([it.image for it in items]))
        total = []
        for k, it in enumerate(items):
            pts = torch.as_tensor(it.points, device=self.device)
            logits, iou = self._decode(emb[k:k + 1], pts)
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

    def _pick_threshold(self, val_samples: Sequence[Sample], grid: Sequence[float]) -> float | None:
        """The predicted-IoU cut with the best F1@0.5 on the validation samples (ties → the higher cut);
        None (→ the default 0.8) when no cut finds a single cell."""
        from harness.data import Sample as SampleT
        from harness.evaluate import evaluate

        floor = min(grid)
        cands = [(s, self._candidates(to_rgb_float(s.load_image()), floor)) for s in val_samples]
        cats = sorted({i.category for s in val_samples for i in s.instances}) or [self.category]
        best, best_f1 = float(max(grid)), -1.0
        for t in sorted(grid, reverse=True):
            preds = [SampleT(s.image_path, s.height, s.width,
                             tuple(self._finish(c, t, s.height, s.width, cats[0])),
                             image_id=s.image_id, file_name=s.file_name) for s, c in cands]
            ev = evaluate(val_samples, preds, targets={"t": cats}).to_dict()
            f1 = ev["targets"]["t"]["pooled"]["0.5"]["f1"]
            logger.info("cellseg1: pred_iou_thresh %.2f → validation F1@0.5 %.4f", t, f1)
            if f1 > best_f1:
                best, best_f1 = float(t), f1
        if best_f1 <= 0:
            logger.warning("cellseg1: no predicted-IoU threshold in %s matches any validation cell; "
                           "keeping the default 0.8", list(grid))
            return None
        return best

    # ------------------------------------------------------------------ checkpoints

    def save(self, path: Path, extra: dict[str, Any] | None = None) -> None:
        """Trained tensors + what is needed to rebuild the base (small file; base weights not included)."""
        import torch

        blob = {
            "format": CHECKPOINT_FORMAT, "variant": self.variant, "image_size": self.image_size,
            "lora_rank": self.lora_rank, "train_scope": self.train_scope, "base_weights": self.base_weights,
            "base_fingerprint": self._fingerprint_now(),
            "trained": self.trainable_state(), "pred_iou_thresh": self.calibrated_thresh,
            "category": self.category, **(extra or {}),
        }
        with atomic_path(path) as tmp:
            torch.save(blob, tmp)

    def load(self, checkpoint: Path) -> None:
        """Rebuild the base named in the checkpoint (must match this adapter's), load the trained tensors."""
        import torch

        path = Path(checkpoint)
        if not path.is_file():
            raise MissingWeightsError(f"checkpoint {path} does not exist")
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user problem
            raise ConfigError(f"{path}: not a cellseg1 checkpoint (torch cannot read it: {type(exc).__name__}); "
                              "was it written by another adapter? Use the file cellseg1's train() returned") from exc
        if not isinstance(blob, dict) or blob.get("format") != CHECKPOINT_FORMAT:
            raise ConfigError(f"{path}: not a cellseg1 checkpoint of this harness (expected format "
                              f"{CHECKPOINT_FORMAT}); use the file cellseg1's train() returned")
        if blob["base_weights"] is not None:  # the base the checkpoint was trained on, whatever we were given
            from harness.weights import resolve

            self.weights_path, self.base_weights = resolve(blob["base_weights"]), blob["base_weights"]
        else:
            self.weights_path, self.base_weights = None, None
        for key in ("variant", "image_size", "lora_rank", "train_scope"):
            mine = getattr(self, key)
            if blob[key] != mine:
                raise ConfigError(f"{path}: checkpoint has {key}={blob[key]!r}, the adapter {mine!r}; "
                                  f"use the params the model was trained with")
        self._model = self._build(self.weights_path)
        fingerprint = blob["base_fingerprint"]
        if blob["train_scope"] == "lora" and fingerprint is not None and \
                not math.isclose(fingerprint, self._base_fingerprint, rel_tol=1e-9, abs_tol=1e-9):
            raise MissingWeightsError(f"{path}: the base model rebuilt here differs from the one trained on "
                                      f"(fingerprint); a random base needs the same torch version")
        missing = set(self.trainable_state()) - set(blob["trained"])
        if missing:
            raise MissingWeightsError(f"{path}: trained tensors missing: {sorted(missing)[:5]}")
        self._model.load_state_dict(blob["trained"], strict=False)
        self.calibrated_thresh = blob.get("pred_iou_thresh")
        self.category = blob.get("category", self.category)

    # ------------------------------------------------------------------ prediction

    @property
    def iou_thresh(self) -> float:
        if self.pred_iou_thresh is not None:
            return float(self.pred_iou_thresh)
        return float(self.calibrated_thresh) if self.calibrated_thresh is not None else 0.8

    def predict(self, image: np.ndarray) -> list[Instance]:
        """Point-grid mask generation on the image resized to the model size, masks back at full size."""
        h, w = image.shape[:2]
        cands = self._candidates(to_rgb_float(image), self.iou_thresh)
        return self._finish(cands, self.iou_thresh, h, w, self.category)

    def _finish(self, cands: list[Candidate], thresh: float, height: int, width: int,
                category: str) -> list[Instance]:
        """Threshold → mask-IoU NMS → large-mask filter → Instances resized back to the image size."""
        from harness.data import Instance

        s = self.image_size
        kept = mask_iou_nms([c for c in cands if c.iou >= thresh], self.mask_nms_thresh)
        out = []
        sy, sx = height / s, width / s
        for c in kept:
            y0, x0, y1, x1 = c.box
            fy0, fx0 = int(round(y0 * sy)), int(round(x0 * sx))
            fy1, fx1 = max(fy0 + 1, int(round(y1 * sy))), max(fx0 + 1, int(round(x1 * sx)))
            crop = _resize(c.crop, fy1 - fy0, fx1 - fx0, nearest=True)
            if crop.any():
                out.append(Instance.from_mask(category, fy0, fx0, crop, height, width, order=len(out),
                                              score=float(c.iou), source="cellseg1"))
        return out

    def _candidates(self, rgb: np.ndarray, iou_floor: float) -> list[Candidate]:
        """Masks from the point grid over the full image and the crop layers (work size = image_size).

        Kept: predicted IoU >= iou_floor, stability >= threshold, not touching an inner crop edge, area below
        the large-mask ratio and above min_mask_region_area (largest piece). NMS happens in `_finish`.
        """
        import torch
        from segment_anything.utils.amg import build_all_layer_point_grids, generate_crop_boxes
        from tqdm import tqdm

        s = self.image_size
        work = _resize(rgb, s, s)
        boxes, layers = generate_crop_boxes((s, s), self.crop_n_layers, self.crop_overlap_ratio)
        grids = build_all_layer_point_grids(self.points_per_side, self.crop_n_layers, 1)
        max_area = self.max_mask_region_area_ratio * s * s
        out: list[Candidate] = []
        model = self.model.eval()
        with torch.inference_mode():
            crops = list(zip(boxes, layers, strict=True))
            for (cx0, cy0, cx1, cy1), layer in tqdm(crops, desc="cellseg1 crops", leave=False,
                                                    disable=len(boxes) == 1):
                ch, cw = cy1 - cy0, cx1 - cx0
                emb = self._embed(_resize(np.ascontiguousarray(work[cy0:cy1, cx0:cx1]), s, s)[None])
                pts_all = grids[layer] * np.array([s, s])  # grid in model pixels of the resized crop
                for b in range(0, len(pts_all), self.points_per_batch):
                    pts = torch.as_tensor(pts_all[b:b + self.points_per_batch], dtype=torch.float32,
                                          device=self.device)
                    logits, iou = self._decode(emb, pts)
                    logits = torch.nn.functional.interpolate(logits[:, None], size=(ch, cw), mode="bilinear",
                                                             align_corners=False)[:, 0]
                    stab = _stability(logits, self.stability_score_offset)
                    keep = (iou >= iou_floor) & (stab >= self.stability_score_thresh)
                    for k in torch.nonzero(keep).flatten().tolist():
                        c = self._candidate(logits[k] > 0, cy0, cx0, (cy0, cx0, cy1, cx1), float(iou[k]),
                                            float(stab[k]), max_area)
                        if c is not None:
                            out.append(c)
        return out

    def _candidate(self, mask: torch.Tensor, oy: int, ox: int, crop_box: tuple[int, int, int, int],
                   iou: float, stab: float, max_area: float) -> Candidate | None:
        """A thresholded mask in crop pixels → Candidate in work-image pixels, or None when filtered out."""
        m = mask.cpu().numpy()
        if not m.any():
            return None
        ys, xs = np.nonzero(m.any(axis=1))[0], np.nonzero(m.any(axis=0))[0]
        y0, y1, x0, x1 = ys[0], ys[-1] + 1, xs[0], xs[-1] + 1
        s = self.image_size
        cy0, cx0, cy1, cx1 = crop_box
        # drop masks touching an edge of a crop that is not an image edge (cut-off cells)
        if (y0 == 0 and cy0 > 0) or (x0 == 0 and cx0 > 0) or (y1 == m.shape[0] and cy1 < s) or \
                (x1 == m.shape[1] and cx1 < s):
            return None
        crop = largest_piece(m[y0:y1, x0:x1])
        area = int(crop.sum())
        if area < self.min_mask_region_area or area >= max_area:
            return None
        from harness.data import tighten

        ty, tx, crop = tighten(oy + int(y0), ox + int(x0), crop)
        return Candidate(ty, tx, crop, iou, stab)


MASK_LOSSES = ("bce", "balanced_bce")


def mask_bce(logits: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    """Pixel BCE of (N, h, w) mask logits against 0/1 targets, mean over pixels and masks.

    ``bce`` is CellSeg1's loss. ``balanced_bce`` (not in CellSeg1) gives each mask's cell pixels and its
    background pixels half of the weight each: a cell covers ~2 % of a tile, so under plain BCE a
    randomly initialised SAM settles on all-background masks for every prompt (measured: constant logits
    near -4 after training) and never starts to follow the prompt; pretrained SAM does not need it.
    """
    import torch
    import torch.nn.functional as F

    if kind == "bce":
        return F.binary_cross_entropy_with_logits(logits, target)
    if kind != "balanced_bce":
        raise ConfigError(f"cellseg1: mask_loss must be one of {', '.join(MASK_LOSSES)}, not {kind!r}")
    fg = target.flatten(1).mean(1).clamp(1e-4, 1 - 1e-4)[:, None, None]
    weight = torch.where(target > 0, 0.5 / fg, 0.5 / (1 - fg))
    return F.binary_cross_entropy_with_logits(logits, target, weight=weight)


def _stability(logits: torch.Tensor, offset: float) -> torch.Tensor:
    """SAM's stability score: IoU of the masks thresholded at +offset and -offset (logit 0 = mask)."""
    inter = (logits > offset).flatten(1).sum(-1).float()
    union = (logits > -offset).flatten(1).sum(-1).float()
    return inter / union.clamp(min=1)
