"""MEDIAR's image normalisation and training augmentations (MONAI transforms as MEDIAR configures them).

Follows MEDIAR's ``train_tools/data_utils/transforms.py`` (``train_transforms``) and its ``custom/`` transforms
(``IntensityDiversification``), re-implemented in numpy/scipy/torch without MONAI: zoom, pad, random crop, flip,
rot90, cell-wise intensity diversification, noise, contrast, smoothing, histogram shift, sharpening.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from harness.errors import DataError


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
