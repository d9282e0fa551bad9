"""CellSeg1's training augmentation, rebuilt on OpenCV with the same parameters.

CellSeg1 (``sampler.py :: create_collate_fn``, albumentations 1.3.1, its pinned version) composes, per tile:
``RandomBrightnessContrast(0.1, 0.1, p=0.5)`` → ``Flip(p=0.75)`` → ``RandomResizedCrop(size, scale=(0.3, 1),
ratio=(0.75, 1.3333), p=0.5)`` → ``ShiftScaleRotate(shift 0.0625, scale_limit (-0.5, 0.5), rotate 45°, p=0.8,
constant border)`` → ``Resize(size)``. Each step below follows albumentations 1.3.1's function of the same name
(sampling and geometry); images are bilinear, label maps nearest, borders filled with 0 (background).

Differences, on purpose: images are float 0..255 (CellSeg1 uint8 through a LUT, i.e. floored); prompts are
sampled from the augmented label map (CellSeg1 samples them first and moves the keypoints), so a prompt never
lands off its cell; random numbers come from one numpy Generator (CellSeg1: Python's ``random``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AugmentParams:
    """CellSeg1's ``example_config.yaml`` values (``# data augment``) and albumentations' defaults."""

    bright_limit: float = 0.1
    contrast_limit: float = 0.1
    bright_prob: float = 0.5
    flip_prob: float = 0.75
    crop_prob: float = 0.5
    crop_scale: tuple[float, float] = (0.3, 1.0)
    crop_ratio: tuple[float, float] = (0.75, 1.3333)
    rotate_prob: float = 0.8
    scale_limit: tuple[float, float] = (-0.5, 0.5)
    shift_limit: float = 0.0625  # albumentations' default, CellSeg1 does not set it
    rotate_limit: float = 45.0  # likewise


UPSTREAM = AugmentParams()


def resize(img: np.ndarray, height: int, width: int, nearest: bool = False) -> np.ndarray:
    """cv2 resize that keeps label maps (int32 / bool) exact: nearest for them, bilinear for images."""
    import cv2

    if img.dtype == np.int32:
        out = cv2.resize(img.astype(np.float32), (width, height), interpolation=cv2.INTER_NEAREST)
        return out.astype(np.int32)
    if img.dtype == bool:
        return cv2.resize(img.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST).astype(bool)
    return cv2.resize(img, (width, height), interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR)


def shift_scale_rotate(img: np.ndarray, angle: float, scale: float, dx: float, dy: float,
                       nearest: bool = False) -> np.ndarray:
    """albumentations 1.3.1 ``F.shift_scale_rotate``: rotate by `angle` degrees and scale about the centre
    ``(w/2, h/2)``, then shift by ``(dx·w, dy·h)``; the frame keeps its size, uncovered pixels become 0."""
    import cv2

    h, w = img.shape[:2]
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
    matrix[0, 2] += dx * w
    matrix[1, 2] += dy * h
    flags = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    src = img.astype(np.float32) if img.dtype == np.int32 else img
    out = cv2.warpAffine(np.ascontiguousarray(src), matrix, (w, h), flags=flags, borderMode=cv2.BORDER_CONSTANT,
                         borderValue=0)
    return out.astype(np.int32) if img.dtype == np.int32 else out


def random_resized_crop_box(height: int, width: int, rng: np.random.Generator, scale: tuple[float, float],
                            ratio: tuple[float, float]) -> tuple[int, int, int, int]:
    """albumentations 1.3.1 ``RandomResizedCrop`` box ``(y, x, h, w)``: area fraction in `scale`, log-uniform
    aspect in `ratio`, ten tries, then the central crop clamped to `ratio`."""
    area = height * width
    for _ in range(10):
        target = rng.uniform(*scale) * area
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w


def augment(image: np.ndarray, labels: np.ndarray, size: int, rng: np.random.Generator,
            params: AugmentParams = UPSTREAM) -> tuple[np.ndarray, np.ndarray]:
    """One training tile (float HxWx3 0..255, int32 label map) → augmented ``(size, size)`` pair, aligned."""
    p = params
    if rng.random() < p.bright_prob:  # RandomBrightnessContrast, brightness_by_max
        alpha = 1.0 + rng.uniform(-p.contrast_limit, p.contrast_limit)
        beta = rng.uniform(-p.bright_limit, p.bright_limit)
        image = np.clip(image * alpha + beta * 255.0, 0.0, 255.0).astype(np.float32)
    if rng.random() < p.flip_prob:  # Flip: d in {-1, 0, 1} = both axes, vertical, horizontal (cv2.flip codes)
        d = int(rng.integers(-1, 2))
        axes = {-1: (0, 1), 0: (0,), 1: (1,)}[d]
        image, labels = np.flip(image, axes), np.flip(labels, axes)
    if rng.random() < p.crop_prob:
        y, x, h, w = random_resized_crop_box(*labels.shape, rng, p.crop_scale, p.crop_ratio)
        image = resize(np.ascontiguousarray(image[y:y + h, x:x + w]), size, size)
        labels = resize(np.ascontiguousarray(labels[y:y + h, x:x + w]), size, size)
    if rng.random() < p.rotate_prob:
        angle = rng.uniform(-p.rotate_limit, p.rotate_limit)
        scale = rng.uniform(1.0 + p.scale_limit[0], 1.0 + p.scale_limit[1])  # albumentations biases by 1
        dx, dy = rng.uniform(-p.shift_limit, p.shift_limit), rng.uniform(-p.shift_limit, p.shift_limit)
        image = shift_scale_rotate(image, angle, scale, dx, dy)
        labels = shift_scale_rotate(labels, angle, scale, dx, dy, nearest=True)
    image = resize(np.ascontiguousarray(image, dtype=np.float32), size, size)
    labels = resize(np.ascontiguousarray(labels), size, size)
    return image, labels
