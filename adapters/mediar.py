"""MEDIAR-Former (Lee et al. 2022, NeurIPS 2022 cell segmentation winner), rebuilt on segmentation-models-pytorch.

MEDIAR is a script folder, not a package, so the network is rebuilt here from its description (no MEDIAR code is
used): an smp ``MAnet`` with a SegFormer ``mit_b*`` encoder, decoder channels (1024, 512, 256, 128, 64), a
256-channel position-attention block, every ReLU of encoder and decoder swapped for Mish, smp's segmentation head
removed and two "deep" heads added (``cellprob_head``: 1 channel, ``gradflow_head``: 2 channels). The output is
cellpose's layout: (dY, dX, cell-probability logit). Attribute names follow MEDIAR's ``MEDIARFormer(MAnet)``, so
its released checkpoints load with *strict* key matching (MEDIAR itself loads with ``strict=False``, which hides
mismatches). Checked when this was written: the state-dict layout (names and shapes, mit_b0 and mit_b5) equals the
one smp 0.3.3 — MEDIAR's pin — produces, and a mit_b0 state dict saved under smp 0.3.3 gives bit-identical
outputs here. smp >= 0.5 calls the decoder with a list (``decoder(features)``; MEDIAR's ``decoder(*features)``
fails there).

Training (MEDIAR's fine-tuning recipe): priority-resolved label maps (`harness.convert.label_map`), random crops
with MEDIAR's augmentations (zoom, flip, rot90, cell-wise intensity diversification, noise, contrast, smoothing,
histogram shift, sharpening), cellpose flow targets recomputed for every augmented crop
(``cellpose.dynamics.masks_to_flows``), loss ``BCE(cellprob) + 0.5 * MSE(flows, 5 * target flows)``, AdamW +
cosine schedule stepped per epoch. Every epoch writes ``last.pt`` (weights, optimizer, scheduler, RNG states); a
later call with the same configuration continues from it. ``train`` returns ``model.pth``: a plain state dict in
MEDIAR's key layout, which MEDIAR's own code loads as well.

Prediction (MEDIAR's ``Predictor``): MEDIAR's normalisation (non-zero 0-99.5 percentiles → 8 bit → [0, 1]),
sliding windows (512 px, overlap 0.6, Gaussian importance weighting) over the full-resolution image, optional
flip TTA, and with `load_ensemble` the average of several networks (MEDIAR's ``EnsemblePredictor``: each with
TTA, then ``(a + b) / 2``; the harness plans it from a list of weights in the model YAML), then
``cellpose.dynamics.compute_masks`` turns flows + probability into a label map.
Each instance's score is its mean cell probability.
"""

from __future__ import annotations

import functools
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from adapters import register
from adapters.base import WeightSpec
from adapters.torch_base import TorchAdapter
from harness.errors import ConfigError, DataError
from harness.io import write_json

if TYPE_CHECKING:
    from harness.data import Instance, Sample

logger = logging.getLogger(__name__)

# Direct-download form of the Google Drive files behind MEDIAR's README link (folder
# 1RgMxHIT7WsKNjir3wXSl7BrzlpS05S18); file ids and MD5s as used by annolid's MEDIAR wrapper
# (healthonrails/annolid, annolid/utils/weights.py, which verifies them). MEDIAR publishes none: these md5s are checked.
_DRIVE = "https://drive.usercontent.google.com/download?export=download&confirm=t&id="
_LICENCE = ("MEDIAR code MIT; weights have no separate licence and were pre-trained on CC-BY-NC data (Cellpose, "
            "LIVECell): research/non-commercial; the mit encoder (SegFormer) is under the NVIDIA Source Code "
            "License (non-commercial)")
FROM_PHASE1 = WeightSpec(
    name="from_phase1", file="mediar/from_phase1.pth", url=f"{_DRIVE}168MtudjTMLoq9YGTyoD2Rjl_d3Gy6c_L", sha256=None,
    licence=_LICENCE, md5="e0ccb052828a9f05e21b2143939583c5",
    description="MEDIAR-Former mit_b5 challenge model fine-tuned from pre-training phase 1",
)
FROM_PHASE2 = WeightSpec(
    name="from_phase2", file="mediar/from_phase2.pth", url=f"{_DRIVE}1JJ2-QKTCk-G7sp5ddkqcifMxgnyOrXjx", sha256=None,
    licence=_LICENCE, md5="a595336926767afdf1ffb1baffd5ab7f",
    description="MEDIAR-Former mit_b5 challenge model fine-tuned from pre-training phase 2",
)

ENCODERS = tuple(f"mit_b{i}" for i in range(6))
DECODER_CHANNELS = (1024, 512, 256, 128, 64)
PAB_CHANNELS = 256
LABEL_RULES = ("last", "first", "smallest")
#: Keys every MEDIAR-Former state dict has (a cheap check before a file is accepted; the full check is strict).
_SIGNATURE_KEYS = ("encoder.patch_embed1.proj.weight", "cellprob_head.3.weight", "gradflow_head.3.weight")
_CATEGORY = "cell"
_STRIDE = 32  # the mit encoder's output stride: network inputs must be multiples of it


# --------------------------------------------------------------------------------------------- network


@functools.cache
def _network_class() -> type:
    """Define the network class on first use (keeps torch and smp out of the adapter's import)."""
    import segmentation_models_pytorch as smp
    import torch
    from torch import nn

    def deep_head(in_channels: int, out_channels: int) -> nn.Sequential:
        # MEDIAR's DeepSegmentationHead; the two Identity slots (upsampling, activation) keep its indices 0, 2, 3.
        return nn.Sequential(
            nn.Conv2d(in_channels, in_channels // 2, kernel_size=3, padding=1),
            nn.Mish(inplace=True),
            nn.BatchNorm2d(in_channels // 2),
            nn.Conv2d(in_channels // 2, out_channels, kernel_size=3, padding=1),
            nn.Identity(),
            nn.Identity(),
        )

    def relu_to_mish(module: nn.Module) -> None:
        for name, child in module.named_children():
            if isinstance(child, nn.ReLU):
                setattr(module, name, nn.Mish(inplace=True))
            else:
                relu_to_mish(child)

    class MediarFormer(smp.MAnet):
        """MA-Net + mit encoder + Mish + cell-probability and flow heads; output (dY, dX, logit)."""

        def __init__(self, encoder_name: str = "mit_b5") -> None:
            super().__init__(encoder_name=encoder_name, encoder_weights=None, decoder_channels=DECODER_CHANNELS,
                             decoder_pab_channels=PAB_CHANNELS, in_channels=3, classes=3)
            self.encoder_name = encoder_name
            self.segmentation_head = None
            relu_to_mish(self.encoder)
            relu_to_mish(self.decoder)
            self.cellprob_head = deep_head(DECODER_CHANNELS[-1], 1)
            self.gradflow_head = deep_head(DECODER_CHANNELS[-1], 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.check_input_shape(x)
            decoded = self.decoder(self.encoder(x))
            return torch.cat([self.gradflow_head(decoded), self.cellprob_head(decoded)], dim=1)

    return MediarFormer


def build_network(encoder: str = "mit_b5") -> Any:
    """A randomly initialised MEDIAR-Former; never downloads (``encoder_weights=None``, hub offline)."""
    if encoder not in ENCODERS:
        raise ConfigError(f"model 'mediar': encoder {encoder!r} is not one of {', '.join(ENCODERS)}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # an accidental hub call fails fast instead of downloading
    return _network_class()(encoder)


def read_state_dict(path: Path) -> dict[str, Any]:
    """The state dict in a file: a plain one (MEDIAR's files, `train`'s model.pth) or our ``last.pt``."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: MEDIAR checkpoint not found")
    try:
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # files in torch's legacy (non-zip) format cannot be memory-mapped
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user problem
        raise ConfigError(
            f"{path}: not a MEDIAR checkpoint (torch cannot read it as a plain state dict: {type(exc).__name__}); "
            "a Google Drive download that saved an HTML page instead of the file fails like this — fetch it again"
        ) from exc
    if isinstance(state, dict) and isinstance(state.get("model"), dict) and "optimizer" in state:
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"{path}: not a MEDIAR checkpoint (holds a {type(state).__name__}, not a state dict)")
    return state


def encoder_of(state: dict[str, Any]) -> str | None:
    """Which mit encoder a MEDIAR-Former state dict was built with (embedding width + blocks per stage)."""
    from segmentation_models_pytorch.encoders.mix_transformer import mix_transformer_encoders

    embed = state.get("encoder.patch_embed1.proj.weight")
    if embed is None:
        return None
    depths = [len({key.split(".")[2] for key in state if key.startswith(f"encoder.block{stage}.")})
              for stage in range(1, 5)]
    for name, entry in mix_transformer_encoders.items():
        params = entry["params"]
        if name in ENCODERS and params["embed_dims"][0] == embed.shape[0] and list(params["depths"]) == depths:
            return name
    return None


def check_mediar_file(path: Path, encoder: str) -> None:
    """Cheap check that `path` holds a MEDIAR-Former state dict for `encoder` (strict check when loaded)."""
    state = read_state_dict(path)
    missing = [key for key in _SIGNATURE_KEYS if key not in state]
    if missing:
        raise ConfigError(
            f"{path}: not a MEDIAR-Former checkpoint (state dict lacks {', '.join(missing)}; it has e.g. "
            f"{', '.join(list(state)[:3]) or 'no keys'}); was it written by another adapter?"
        )
    found = encoder_of(state)
    if found != encoder:
        raise ConfigError(f"{path}: a MEDIAR-Former with a {found or 'non-mit'} encoder, but params.encoder is "
                          f"{encoder}; set encoder: {found} to use it (MEDIAR's released weights are mit_b5)")


def load_strict(net: Any, state: dict[str, Any], source: str) -> None:
    """Load `state` into `net` with strict key *and* shape matching; a mismatch raises naming the keys."""
    expected = net.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
                  if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or mismatched:
        def listing(what: str, items: list[str]) -> str:
            more = f", ... ({len(items) - 8} more)" if len(items) > 8 else ""
            return f"{len(items)} {what} ({', '.join(items[:8])}{more})" if items else ""

        parts = [p for p in (listing("missing key(s)", missing), listing("unexpected key(s)", unexpected),
                             listing("shape mismatch(es)", mismatched)) if p]
        hint = ""
        if unexpected and all(k.startswith("module.") for k in unexpected):
            hint = "; its keys carry a 'module.' prefix (saved from DataParallel): strip it"
        elif mismatched:
            hint = f"; was it trained with another encoder than {net.encoder_name} (params.encoder)?"
        raise ConfigError(f"{source}: does not match MEDIAR-Former ({net.encoder_name}): {'; '.join(parts)}{hint}")
    net.load_state_dict(state, strict=True)


# --------------------------------------------------------------------------------------------- images


def mediar_uint8(image: np.ndarray) -> tuple[np.ndarray, float]:
    """MEDIAR's normalisation up to its 8-bit step: non-zero 0-99.5 percentiles → uint8, minimum subtracted.

    Returns ``(pixels, span)``: uint8 ``(C, H, W)`` (C = 1 for grayscale, 3 for RGB) such that ``pixels / span``
    is MEDIAR's [0, 1] input (its ScaleIntensity step). Kept in 8 bit to hold training images compactly.
    """
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[:, :, None]
    elif image.ndim != 3 or image.shape[2] != 3:
        raise DataError(f"MEDIAR expects a 2-D grayscale or H x W x 3 image, got shape {image.shape}")
    image = image.astype(np.float32, copy=False)
    values = image[image != 0]
    if values.size == 0:
        return np.zeros((image.shape[2], *image.shape[:2]), dtype=np.uint8), 1.0
    low, high = (float(v) for v in np.percentile(values, [0.0, 99.5]))
    if high <= low:
        scaled = (image > low).astype(np.float32) * np.float32(255.0)
    else:
        scaled = (np.clip(image, low, high) - np.float32(low)) * np.float32(255.0 / (high - low))
    as_uint8 = scaled.astype(np.uint8)  # skimage.exposure.rescale_intensity(out_range="uint8") truncates too
    low8 = int(as_uint8.min())
    span = float(int(as_uint8.max()) - low8)
    pixels = np.ascontiguousarray((as_uint8 - np.uint8(low8)).transpose(2, 0, 1))
    return pixels, (span if span > 0 else 1.0)


def mediar_normalize(image: np.ndarray) -> np.ndarray:
    """MEDIAR's network input: float32 (3, H, W) in [0, 1] (grayscale repeated to 3 channels)."""
    pixels, span = mediar_uint8(image)
    unit = pixels.astype(np.float32) / np.float32(span)
    return np.ascontiguousarray(np.broadcast_to(unit, (3, *unit.shape[1:])))


def flow_targets(labels: np.ndarray, device: Any) -> np.ndarray:
    """Cellpose flows (dY, dX), float32 (2, H, W), of a label map; renumbers a *copy* (cellpose works in place)."""
    import fastremap
    from cellpose import dynamics

    if not labels.any():
        return np.zeros((2, *labels.shape), dtype=np.float32)
    renumbered, _ = fastremap.renumber(np.array(labels, dtype=np.int32, copy=True), in_place=True)
    return dynamics.masks_to_flows(renumbered.astype(np.int64), device=device).astype(np.float32)


# --------------------------------------------------------------------------------------------- augmentation


class TrainImage(NamedTuple):
    """A training image in MEDIAR's 8-bit normalisation with its priority-resolved label map."""

    pixels: np.ndarray  # uint8 (C, H, W)
    span: float  # pixels / span = MEDIAR's [0, 1] input
    labels: np.ndarray  # int32 (H, W)


def _zoom(image: np.ndarray, labels: np.ndarray, factor: float) -> tuple[np.ndarray, np.ndarray]:
    """MONAI RandZoom(keep_size=False) as MEDIAR uses it: area interpolation for images, nearest for labels."""
    import torch
    import torch.nn.functional as F

    size = (max(1, round(labels.shape[0] * factor)), max(1, round(labels.shape[1] * factor)))
    img = F.interpolate(torch.from_numpy(np.ascontiguousarray(image))[None], size=size, mode="area")[0].numpy()
    lab = F.interpolate(torch.from_numpy(labels.astype(np.float32))[None, None], size=size, mode="nearest")
    return img, lab[0, 0].numpy().astype(np.int32)


def scaled_size(shape: tuple[int, int], scale: float) -> tuple[int, int]:
    """(height, width) of an image resized by `scale` (at least 1 pixel each)."""
    return max(1, round(shape[0] * scale)), max(1, round(shape[1] * scale))


def rescale_train_image(item: TrainImage, scale: float) -> TrainImage:
    """`item` resized by `scale` (area averaging for the 8-bit pixels, nearest for labels); 1.0 returns it."""
    if scale == 1.0:
        return item
    import torch
    import torch.nn.functional as F

    size = scaled_size(item.labels.shape, scale)
    pixels = F.interpolate(torch.from_numpy(item.pixels.astype(np.float32))[None], size=size, mode="area")[0]
    labels = F.interpolate(torch.from_numpy(item.labels.astype(np.float32))[None, None], size=size, mode="nearest")
    return TrainImage(np.ascontiguousarray(np.rint(pixels.numpy()).astype(np.uint8)), item.span,
                      labels[0, 0].numpy().astype(np.int32))


def _pad_to(image: np.ndarray, labels: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Zero-pad symmetrically so that both sides are at least `size` (MONAI SpatialPad)."""
    dy, dx = max(size - labels.shape[0], 0), max(size - labels.shape[1], 0)
    if not (dy or dx):
        return image, labels
    pads = ((dy // 2, dy - dy // 2), (dx // 2, dx - dx // 2))
    return np.pad(image, ((0, 0), *pads)), np.pad(labels, pads)


def _gaussian(image: np.ndarray, sigma: tuple[float, float]) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(image, sigma=(0.0, *sigma))


def _intensity(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """MEDIAR's intensity augmentations, each with probability 0.25 (MONAI defaults where MEDIAR sets none)."""
    if rng.random() < 0.25:  # RandGaussianNoise(std=0.1)
        image = image + rng.normal(0.0, rng.uniform(0.0, 0.1), size=image.shape).astype(np.float32)
    if rng.random() < 0.25:  # RandAdjustContrast(gamma=(1, 2))
        low, span = float(image.min()), float(image.max() - image.min())
        image = ((image - low) / (span + 1e-7)) ** rng.uniform(1.0, 2.0) * span + low
    if rng.random() < 0.25:  # RandGaussianSmooth(sigma_x=(1, 2))
        image = _gaussian(image, (rng.uniform(1.0, 2.0), rng.uniform(0.25, 1.5)))
    if rng.random() < 0.25:  # RandHistogramShift(num_control_points=3)
        reference = np.linspace(float(image.min()), float(image.max()), 3)
        floating = reference.copy()
        floating[1] = rng.uniform(floating[0], floating[2])
        image = np.interp(image, reference, floating)
    if rng.random() < 0.25:  # RandGaussianSharpen()
        sigma1 = (rng.uniform(0.5, 1.0), rng.uniform(0.5, 1.0))
        sigma2 = (rng.uniform(0.5, sigma1[0]), rng.uniform(0.5, sigma1[1]))
        blurred = _gaussian(image, sigma1)
        image = blurred + rng.uniform(10.0, 30.0) * (blurred - _gaussian(blurred, sigma2))
    return image.astype(np.float32, copy=False)


def augmented_crop(
    item: TrainImage, size: int, rng: np.random.Generator, augment: bool = True, zoom_prob: float = 0.5,
    zoom_range: tuple[float, float] = (0.25, 1.5),
) -> tuple[np.ndarray, np.ndarray]:
    """One training crop, float32 (3, size, size) + int32 labels, in MEDIAR's transform order.

    MEDIAR zooms the whole image, pads it to `size` and crops; here the region a crop can come from
    (``size / zoom`` pixels) is cut first and only that is zoomed — the same crops, without resizing a
    2592 x 1944 image for every one.
    """
    factor = rng.uniform(*zoom_range) if augment and rng.random() < zoom_prob else 1.0
    height, width = item.labels.shape
    need_h, need_w = min(math.ceil(size / factor), height), min(math.ceil(size / factor), width)
    y0, x0 = int(rng.integers(0, height - need_h + 1)), int(rng.integers(0, width - need_w + 1))
    image = item.pixels[:, y0 : y0 + need_h, x0 : x0 + need_w].astype(np.float32) / np.float32(item.span)
    labels = item.labels[y0 : y0 + need_h, x0 : x0 + need_w]
    if factor != 1.0:
        image, labels = _zoom(image, labels, factor)
    image, labels = _pad_to(image, labels, size)
    y0, x0 = int(rng.integers(0, labels.shape[0] - size + 1)), int(rng.integers(0, labels.shape[1] - size + 1))
    image, labels = image[:, y0 : y0 + size, x0 : x0 + size], labels[y0 : y0 + size, x0 : x0 + size]
    if augment:
        if rng.random() < 0.5:  # RandAxisFlip
            axis = int(rng.integers(0, 2))
            image, labels = np.flip(image, axis=axis + 1), np.flip(labels, axis=axis)
        if rng.random() < 0.5:  # RandRotate90 (k = 1..3)
            k = int(rng.integers(1, 4))
            image, labels = np.rot90(image, k, axes=(1, 2)), np.rot90(labels, k)
        image = np.array(image, dtype=np.float32)
        ids = np.unique(labels)
        ids = ids[ids > 0]
        if ids.size:  # IntensityDiversification: 40% of the cells scaled by 1 + U(0, 0.7)
            chosen = rng.choice(ids, size=int(ids.size * 0.4), replace=False)
            image[:, np.isin(labels, chosen)] *= np.float32(1.0 + rng.uniform(0.0, 0.7))
        image = _intensity(image, rng)
    image = np.broadcast_to(image, (3, size, size))
    return np.ascontiguousarray(image, dtype=np.float32), np.ascontiguousarray(labels, dtype=np.int32)


def centre_crop(item: TrainImage, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A fixed, unaugmented crop (3, size, size) from the image centre (zero-padded when smaller)."""
    image, labels = _pad_to(item.pixels.astype(np.float32) / np.float32(item.span), item.labels, size)
    y0, x0 = (labels.shape[0] - size) // 2, (labels.shape[1] - size) // 2
    image = np.broadcast_to(image[:, y0 : y0 + size, x0 : x0 + size], (3, size, size))
    return np.ascontiguousarray(image, dtype=np.float32), np.ascontiguousarray(labels[y0 : y0 + size, x0 : x0 + size])


def mediar_loss(output: Any, cells: Any, flows: Any) -> Any:
    """MEDIAR's criterion: BCE on the probability logit + 0.5 * MSE between flows and 5x the target flows."""
    import torch.nn.functional as F

    output = output.float()
    return F.binary_cross_entropy_with_logits(output[:, 2], cells) + 0.5 * F.mse_loss(output[:, :2], 5.0 * flows)


# --------------------------------------------------------------------------------------------- inference


def window_starts(length: int, window: int, overlap: float) -> list[int]:
    """Window origins covering ``[0, length)`` with stride ``int(window * (1 - overlap))``, as MONAI's."""
    if length <= window:
        return [0]
    step = max(1, int(window * (1.0 - overlap)))
    return [*range(0, length - window, step), length - window]


@functools.cache
def importance_map(window: int, sigma_scale: float = 0.125) -> np.ndarray:
    """Gaussian window weights (MONAI ``mode="gaussian"``: sigma = 0.125 x window, peak 1)."""
    centre, sigma = (window - 1) / 2.0, sigma_scale * window
    profile = np.exp(-0.5 * ((np.arange(window) - centre) / sigma) ** 2)
    weights = np.outer(profile, profile)
    return (weights / weights.max()).astype(np.float32)  # corners ~1e-7: small, never zero


def sliding_window(net: Any, image: Any, window: int, overlap: float, batch: int) -> Any:
    """Network output (3, H, W) for a (3, H, W) tensor: zero-padded to >= window, Gaussian-weighted windows."""
    import torch
    import torch.nn.functional as F

    _, height, width = image.shape
    dy, dx = max(window - height, 0), max(window - width, 0)
    padded = F.pad(image, (dx // 2, dx - dx // 2, dy // 2, dy - dy // 2)) if dy or dx else image
    full_h, full_w = padded.shape[1:]
    origins = [(y, x) for y in window_starts(full_h, window, overlap) for x in window_starts(full_w, window, overlap)]
    weight = torch.from_numpy(importance_map(window)).to(image.device)
    total = torch.zeros((3, full_h, full_w), dtype=torch.float32, device=image.device)
    norm = torch.zeros((full_h, full_w), dtype=torch.float32, device=image.device)
    for first in range(0, len(origins), batch):
        chunk = origins[first : first + batch]
        outputs = net(torch.stack([padded[:, y : y + window, x : x + window] for y, x in chunk])).float()
        for (y, x), out in zip(chunk, outputs):
            total[:, y : y + window, x : x + window] += out * weight
            norm[y : y + window, x : x + window] += weight
    total /= norm
    return total[:, dy // 2 : dy // 2 + height, dx // 2 : dx // 2 + width]


def flip_tta(net: Any, image: Any, window: int, overlap: float, batch: int) -> Any:
    """Mean of the plain, horizontally and vertically flipped passes, flows sign-corrected (MEDIAR's TTA)."""
    plain = sliding_window(net, image, window, overlap, batch)
    hflip = sliding_window(net, image.flip(2), window, overlap, batch).flip(2)
    vflip = sliding_window(net, image.flip(1), window, overlap, batch).flip(1)
    hflip[1] = -hflip[1]  # a horizontal flip reverses dX
    vflip[0] = -vflip[0]  # a vertical flip reverses dY
    return (plain + hflip + vflip) / 3.0


def instances_from_labels(labels: np.ndarray, probability: np.ndarray) -> list[Instance]:
    """One scored `Instance` per label via bounding-box crops (score = mean cell probability inside it)."""
    from scipy import ndimage

    from harness.convert import instances_from_label_map

    ids = np.unique(labels)
    ids = ids[ids > 0]
    means = ndimage.mean(probability, labels=labels, index=ids) if ids.size else []
    return instances_from_label_map(labels, _CATEGORY, {int(k): float(v) for k, v in zip(ids, means, strict=True)})


# --------------------------------------------------------------------------------------------- adapter


@register("mediar")
class MediarAdapter(TorchAdapter):
    """MEDIAR-Former: MA-Net + SegFormer encoder predicting cellpose flows; one model per target."""

    description = "MEDIAR-Former (MA-Net + mit_b5; released from_phase1/from_phase2 weights; cellpose flows)"
    multiclass = False
    needs_label_maps = True
    predict_params = frozenset({"window", "overlap", "window_batch", "tta", "cellprob_threshold", "flow_threshold",
                                "niter", "min_size"})
    limits = {"window": ">= 32 and multiple of 32", "overlap": "in [0, 1)", "window_batch": ">= 1", "niter": ">= 1",
              "cellprob_threshold": "in (0, 1)", "min_size": ">= 0", "min_pixels": ">= 0", "scale": "in (0, 4]",
              "epochs": ">= 1", "learning_rate": "> 0", "weight_decay": ">= 0", "batch_size": ">= 1",
              "crop_size": ">= 32 and multiple of 32", "crops_per_epoch": ">= 1", "t_max": ">= 1", "eta_min": ">= 0",
              "zoom_prob": "in [0, 1]"}
    weights = (FROM_PHASE1, FROM_PHASE2)
    supports_ensemble = True
    packages = ("torch", "segmentation-models-pytorch", "timm", "cellpose")

    def __init__(
        self,
        weights: str | None = None,
        device: str = "cpu",
        encoder: str = "mit_b5",
        window: int = 512,
        overlap: float = 0.6,
        window_batch: int = 4,
        tta: bool = False,
        cellprob_threshold: float = 0.5,
        flow_threshold: float = 0.4,
        niter: int = 200,
        min_size: int = 16,
        label_rule: str = "last",
        min_pixels: int = 10,
        scale: float = 1.0,
    ) -> None:
        """Args (the schema of ``params`` in ``configs/models/mediar.yaml``):
        weights: ``from_phase1``, ``from_phase2``, a MEDIAR-Former state-dict file, or None (random init).
        device: ``cpu`` or ``cuda[:N]``.
        encoder: ``mit_b0`` ... ``mit_b5`` (MEDIAR and its released weights: mit_b5).
        window, overlap, window_batch: sliding-window inference (MEDIAR: 512, 0.6, 4 windows per batch).
        tta: average the plain, horizontally and vertically flipped passes (MEDIAR's ``use_tta``).
        cellprob_threshold: cell probability (after the sigmoid) above which pixels follow flows (MEDIAR: 0.5).
        flow_threshold, niter: cellpose's flow-error filter and number of dynamics steps (MEDIAR: 0.4, 200).
        min_size: masks below this many pixels are removed and holes filled (MEDIAR removes < 16 px).
        label_rule, min_pixels: how overlapping annotations are flattened for training
            (`harness.convert.label_map`).
        scale: images (and training label maps) are resized by this factor before the network, and its output
            is resized back to full resolution before the dynamics. MEDIAR works at native resolution (1.0);
            the quick CPU profile halves the pixels per cell to learn in minutes.
        """
        super().__init__(weights=weights, device=device)
        if encoder not in ENCODERS:
            raise ConfigError(f"model 'mediar': encoder {encoder!r} is not one of {', '.join(ENCODERS)}")
        if window < _STRIDE or window % _STRIDE:
            raise ConfigError(f"model 'mediar': window must be a positive multiple of {_STRIDE} pixels, got {window}")
        if not 0.0 <= overlap < 1.0:
            raise ConfigError(f"model 'mediar': overlap must be in [0, 1), got {overlap!r}")
        if not 0.0 < cellprob_threshold < 1.0:
            raise ConfigError(
                f"model 'mediar': cellprob_threshold is a probability in (0, 1), got {cellprob_threshold!r}")
        if label_rule not in LABEL_RULES:
            raise ConfigError(f"model 'mediar': label_rule {label_rule!r} is not one of {', '.join(LABEL_RULES)}")
        if not 0.0 < scale <= 4.0:
            raise ConfigError(f"model 'mediar': scale must be in (0, 4], got {scale!r}")
        if window_batch < 1 or niter < 1 or min_size < 0 or min_pixels < 0:
            raise ConfigError("model 'mediar': window_batch and niter must be >= 1, min_size and min_pixels >= 0")
        self.encoder = encoder
        self.window = int(window)
        self.overlap = float(overlap)
        self.window_batch = int(window_batch)
        self.tta = bool(tta)
        self.cellprob_threshold = float(cellprob_threshold)
        self.flow_threshold = float(flow_threshold)
        self.niter = int(niter)
        self.min_size = int(min_size)
        self.label_rule = label_rule
        self.min_pixels = int(min_pixels)
        self.scale = float(scale)
        if self.weights_path is not None:
            check_mediar_file(self.weights_path, encoder)
        self.ensemble_paths: list[Path] = []  # set by `load_ensemble`: the networks averaged at prediction
        self._nets: list[Any] | None = None

    # ------------------------------------------------------------------ networks

    def _network_from(self, path: Path | None) -> Any:
        net = build_network(self.encoder)
        if path is not None:
            load_strict(net, read_state_dict(path), str(path))
        return net.to(self.torch_device())

    def networks(self) -> list[Any]:
        """The network(s) that predict: the construction weights' one, or those given to `load_ensemble`."""
        if self._nets is None:
            self._nets = [self._network_from(self.weights_path)]
            logger.info("MEDIAR-Former %s on %s from %s", self.encoder, self.device,
                        self.weights_path or "random init")
        return self._nets

    def load(self, checkpoint: Path) -> None:
        """Predict with a MEDIAR-Former state dict (from `train`, or a released one) from now on, alone."""
        self.load_ensemble([checkpoint])

    def load_ensemble(self, checkpoints: Sequence[Path]) -> None:
        """Predict with the average output of several state dicts (MEDIAR's EnsemblePredictor: TTA per network)."""
        if not checkpoints:
            raise ConfigError("model 'mediar': load_ensemble needs at least one checkpoint")
        paths = [Path(c).expanduser().resolve() for c in checkpoints]
        nets = [self._network_from(path) for path in paths]  # every file loads before anything is swapped in
        self.weights_path, self._nets = paths[0], nets
        self.ensemble_paths = paths if len(paths) > 1 else []
        if len(paths) > 1:
            logger.info("MEDIAR-Former %s: ensemble of %d networks (%s)%s", self.encoder, len(paths),
                        " + ".join(str(p) for p in paths), " with flip TTA each" if self.tta else "")

    # ------------------------------------------------------------------ train

    @classmethod
    def rehearsal_schedule(cls, schedule: dict[str, Any], steps: int) -> dict[str, Any]:
        """`steps` epochs of one optimiser step (``crops_per_epoch = batch_size`` on a one-image split); the cosine
        keeps its configured period, so the rehearsal's LRs are the real schedule's first ones."""
        full = cls.full_schedule(schedule)
        return {**schedule, "epochs": steps, "crops_per_epoch": int(full["batch_size"]),
                "t_max": full["t_max"] or full["epochs"]}

    @classmethod
    def schedule_size(cls, schedule: dict[str, Any], n_train: int) -> tuple[int, int]:
        """An epoch draws ``max(n_train, crops_per_epoch)`` crops in batches of ``batch_size``."""
        full = cls.full_schedule(schedule)
        crops = max(n_train, full["crops_per_epoch"])
        return full["epochs"] * math.ceil(crops / full["batch_size"]), full["epochs"] * crops

    def train(
        self,
        train_samples: Sequence[Sample],
        val_samples: Sequence[Sample],
        out_dir: Path,
        *,
        epochs: int = 100,
        learning_rate: float = 2e-5,
        weight_decay: float = 0.01,
        batch_size: int = 8,
        crop_size: int = 512,
        crops_per_epoch: int = 50,
        t_max: int | None = None,
        eta_min: float = 1e-7,
        augment: bool = True,
        zoom_prob: float = 0.5,
        amp: bool = True,
    ) -> Path:
        """Fine-tune (or train from random init); returns ``out_dir/model.pth`` (MEDIAR's state-dict layout).

        An epoch draws ``max(len(train_samples), crops_per_epoch)`` random crops, every image equally often
        (MEDIAR repeats each small data group to 50 samples per epoch). The cosine schedule has
        ``T_max = t_max or epochs`` and steps once per epoch; ``weight_decay`` 0.01 is AdamW's default, which
        MEDIAR keeps. ``amp`` = bfloat16 autocast, on CUDA only. Validation samples give a validation loss per
        epoch (fixed centre crops, no augmentation), recorded in ``history.json``; the last epoch is returned.
        Crops and initialisation are drawn from the run's seed (``self.seed``, set by the harness).
        """
        import torch
        from tqdm import tqdm

        if epochs < 1 or batch_size < 1 or crops_per_epoch < 1:
            raise ConfigError("mediar training: epochs, batch_size and crops_per_epoch must be >= 1")
        if crop_size < _STRIDE or crop_size % _STRIDE:
            raise ConfigError(f"mediar training: crop_size must be a positive multiple of {_STRIDE}, got {crop_size}")
        out_dir = Path(out_dir).resolve()
        out_dir.mkdir(parents=True, exist_ok=True)
        device = self.torch_device()
        config = {
            "encoder": self.encoder, "init": str(self.weights_path) if self.weights_path else None,
            "label_rule": self.label_rule, "min_pixels": self.min_pixels, "scale": self.scale,
            "train": [s.name for s in train_samples], "valid": [s.name for s in val_samples],
            "epochs": epochs, "learning_rate": learning_rate, "weight_decay": weight_decay, "batch_size": batch_size,
            "crop_size": crop_size, "crops_per_epoch": crops_per_epoch, "t_max": t_max, "eta_min": eta_min,
            "augment": augment, "zoom_prob": zoom_prob, "amp": amp, "seed": self.seed,
        }
        train_set = self._training_set(train_samples, "train")
        if not any(item.labels.any() for item in train_set):
            raise DataError(f"mediar train: none of the {len(train_samples)} training image(s) has an instance of "
                            "this target; check the target's categories")
        val_batches = [self._batch([centre_crop(item, crop_size)], device)
                       for item in self._training_set(val_samples, "validation")]

        rng = self.seed_everything()
        net = self._network_from(self.weights_path)
        optimizer = torch.optim.AdamW(net.parameters(), lr=learning_rate, weight_decay=weight_decay)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=t_max or epochs, eta_min=eta_min)
        history: list[dict[str, float]] = []
        start = self._resume(out_dir / "last.pt", config, net, optimizer, scheduler, rng, history)
        use_amp = bool(amp) and device.type == "cuda"
        n_crops = max(len(train_set), crops_per_epoch)
        bar = tqdm(range(start, epochs), desc=f"mediar train ({self.encoder})", unit="epoch", initial=start,
                   total=epochs)
        for epoch in bar:
            net.train()
            order = np.concatenate([rng.permutation(len(train_set)) for _ in range(-(-n_crops // len(train_set)))])
            losses = []
            for first in range(0, n_crops, batch_size):
                crops = [augmented_crop(train_set[i], crop_size, rng, augment, zoom_prob)
                         for i in order[first : min(first + batch_size, n_crops)]]
                images, cells, flows = self._batch(crops, device)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                    loss = mediar_loss(net(images), cells, flows)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                losses.append(float(loss.detach()))
            scheduler.step()
            record = {"epoch": epoch + 1, "loss": float(np.mean(losses)), "lr": float(optimizer.param_groups[0]["lr"])}
            if val_batches:
                record["val_loss"] = self._validation_loss(net, val_batches)
            history.append(record)
            bar.set_postfix({k: f"{v:.4g}" for k, v in record.items() if k != "epoch"})
            self.save({"model": net.state_dict(), "optimizer": optimizer.state_dict(),
                          "scheduler": scheduler.state_dict(), "epoch": epoch + 1, "config": config,
                          "history": history, "numpy_rng": rng.bit_generator.state,
                          "torch_rng": torch.get_rng_state()}, out_dir / "last.pt")
        bar.close()

        checkpoint = out_dir / "model.pth"
        self.save(net.state_dict(), checkpoint)
        write_json(out_dir / "history.json", history, indent=1)
        logger.info("mediar: %d epoch(s), last train loss %.4f; model saved to %s", len(history),
                    history[-1]["loss"], checkpoint)
        self.load(checkpoint)  # predict exactly as a fresh adapter that loads the file does
        return checkpoint

    def _resume(self, path: Path, config: dict[str, Any], net: Any, optimizer: Any, scheduler: Any,
                rng: np.random.Generator, history: list[dict[str, float]]) -> int:
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

    def _training_set(self, samples: Sequence[Sample], what: str) -> list[TrainImage]:
        """Images in MEDIAR's normalisation (whole image, as MEDIAR) and priority-resolved int32 label maps."""
        from tqdm import tqdm

        from harness.convert import label_map

        out = []
        for sample in tqdm(samples, desc=f"mediar {what} label maps", unit="img"):
            labels, resolution = label_map(sample, rule=self.label_rule, min_pixels=self.min_pixels)
            if resolution.dropped:
                logger.info("%s: %d instance(s) dropped while flattening overlaps (rule %s)", sample.name,
                            len(resolution.dropped), self.label_rule)
            pixels, span = mediar_uint8(sample.load_image())
            out.append(rescale_train_image(TrainImage(pixels, span, np.asarray(labels, dtype=np.int32)), self.scale))
        return out

    @staticmethod
    def _batch(crops: list[tuple[np.ndarray, np.ndarray]], device: Any) -> tuple[Any, Any, Any]:
        """Tensors (images, cell masks, flow targets) for crops; flows are computed per (augmented) crop."""
        import torch

        images = torch.from_numpy(np.stack([image for image, _ in crops])).to(device)
        cells = torch.from_numpy(np.stack([labels > 0 for _, labels in crops]).astype(np.float32)).to(device)
        flows = torch.from_numpy(np.stack([flow_targets(labels, device) for _, labels in crops])).to(device)
        return images, cells, flows

    @staticmethod
    def _validation_loss(net: Any, batches: list[tuple[Any, Any, Any]]) -> float:
        import torch

        net.eval()
        with torch.no_grad():
            return float(np.mean([float(mediar_loss(net(images), cells, flows)) for images, cells, flows in batches]))

    # ------------------------------------------------------------------ predict

    def predict(self, image: np.ndarray) -> list[Instance]:
        """Instances with mean-probability scores, from flows + probability via cellpose's dynamics."""
        output = self.raw_output(image)
        labels = self.masks_from_output(output)
        probability = 1.0 / (1.0 + np.exp(-output[2].astype(np.float64)))
        return instances_from_labels(labels, probability)

    def raw_output(self, image: np.ndarray) -> np.ndarray:
        """The (ensemble-, TTA-) averaged network output (dY, dX, logit) at full resolution, float32 (3, H, W)."""
        import torch
        import torch.nn.functional as F

        x = torch.from_numpy(mediar_normalize(image)).to(self.torch_device())
        height, width = x.shape[1:]
        if self.scale != 1.0:  # the same resizing as the training images (`rescale_train_image`)
            x = F.interpolate(x[None], size=scaled_size((height, width), self.scale), mode="area")[0]
        run = flip_tta if self.tta else sliding_window
        with torch.inference_mode():
            outputs = []
            for net in self.networks():
                net.eval()
                outputs.append(run(net, x, self.window, self.overlap, self.window_batch))
            mean = torch.stack(outputs).mean(dim=0)
            if self.scale != 1.0:  # flows are unit-length x 5 at any size: only their grid changes
                mean = F.interpolate(mean[None], size=(height, width), mode="bilinear", align_corners=False)[0]
        return mean.cpu().numpy().astype(np.float32)

    def masks_from_output(self, output: np.ndarray) -> np.ndarray:
        """Label map from (dY, dX, logit) with cellpose 3's dynamics (flows are 5x unit vectors, as trained)."""
        from cellpose import dynamics

        logit_threshold = math.log(self.cellprob_threshold / (1.0 - self.cellprob_threshold))
        masks = dynamics.compute_masks(
            output[:2], output[2], niter=self.niter, cellprob_threshold=logit_threshold,
            flow_threshold=self.flow_threshold, min_size=self.min_size, device=self.torch_device(),
        )
        return np.asarray(masks, dtype=np.int32)
