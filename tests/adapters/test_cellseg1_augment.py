"""CellSeg1's augmentation rebuilt on OpenCV: albumentations 1.3.1's geometry, parameters, and alignment of image
and label map under every transform."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("cv2")

from adapters._upstream.cellseg1.augment import (  # noqa: E402
    UPSTREAM,
    augment,
    random_resized_crop_box,
    shift_scale_rotate,
)


def test_shift_scale_rotate_geometry_by_hand() -> None:
    """albumentations 1.3.1 rotates about (w/2, h/2), not the pixel centre (w-1)/2: cv2's matrix for +90° is
    x' = y, y' = 4 - x on a 4×4 image, so the result is np.rot90 moved down one row (top row 0)."""
    a = np.arange(16, dtype=np.float32).reshape(4, 4)
    expected = np.zeros_like(a)
    expected[1:] = np.rot90(a)[:-1]
    assert np.array_equal(shift_scale_rotate(a, 90.0, 1.0, 0.0, 0.0), expected)
    # scale 2 about (2, 2): output pixel (r, c) reads input ((r - 2) / 2 + 2, (c - 2) / 2 + 2); on a ramp
    # a[r, c] = c bilinear is exact: c / 2 + 1. A shift dx 0.25 moves a 4-px-wide label map one pixel right.
    ramp = np.tile(np.arange(4, dtype=np.float32), (4, 1))
    assert np.allclose(shift_scale_rotate(ramp, 0.0, 2.0, 0.0, 0.0), np.tile([1.0, 1.5, 2.0, 2.5], (4, 1)))
    labels = np.zeros((4, 4), np.int32)
    labels[2, 2] = 7
    shifted = shift_scale_rotate(labels, 0.0, 1.0, 0.25, 0.0, nearest=True)
    assert list(zip(*np.nonzero(shifted), strict=True)) == [(2, 3)]


def test_random_resized_crop_box_stays_in_cellseg1s_ranges() -> None:
    rng = np.random.default_rng(0)
    for _ in range(500):
        y, x, h, w = random_resized_crop_box(256, 256, rng, UPSTREAM.crop_scale, UPSTREAM.crop_ratio)
        assert 0 <= y <= 256 - h and 0 <= x <= 256 - w
        assert 0.3 * 0.99 <= h * w / 256**2 <= 1.0
        assert 0.75 * 0.97 <= w / h <= 1.3333 * 1.03  # rounding to whole pixels
    # no box fits a 10:1 strip in ten tries: the central crop clamped to the largest ratio (1.3333)
    assert random_resized_crop_box(3, 300, np.random.default_rng(1), (0.99, 1.0), (0.75, 1.3333)) == (0, 148, 3, 4)


def test_image_and_labels_stay_aligned_under_every_augmentation() -> None:
    """Cells are 200 in the image and >0 in the label map; after 200 random augmentations the pixels well inside
    a labelled cell (3 px in) are bright and those well inside the background dark, in every output."""
    from scipy import ndimage

    yy, xx = np.mgrid[:256, :256]
    labels = np.zeros((256, 256), np.int32)
    for k, (cy, cx) in enumerate([(60, 60), (60, 180), (150, 110), (200, 40), (210, 200)], 1):
        labels[(yy - cy) ** 2 + ((xx - cx) / 1.6) ** 2 <= 30**2] = k  # elongated: rotation shows
    image = np.repeat((labels > 0).astype(np.float32)[..., None] * 200.0, 3, axis=-1)
    rng = np.random.default_rng(0)
    moved = 0
    for _ in range(200):
        img, lab = augment(image, labels, 128, rng)
        assert img.shape == (128, 128, 3) and lab.shape == (128, 128) and lab.dtype == np.int32
        inside = ndimage.binary_erosion(lab > 0, structure=np.ones((3, 3)), iterations=3)
        outside = ndimage.binary_erosion(lab == 0, structure=np.ones((3, 3)), iterations=3)
        # brightness/contrast: alpha 0.9..1.1, beta ±25.5 → cells 154.5..245.5, background 0..25.5
        assert img[inside].min() >= 150 and img[outside].max() <= 26
        assert set(np.unique(lab)) <= set(range(6))
        moved += not np.array_equal(lab, labels[::2, ::2])
    assert moved > 150  # nearly every draw changes the geometry (flip 0.75, crop 0.5, rotate 0.8)


def test_augment_draws_cellseg1s_probabilities(monkeypatch: pytest.MonkeyPatch) -> None:
    """Over many tiles: shift-scale-rotate in 80 % and random resized crops in 50 %, as CellSeg1 configures."""
    import adapters._upstream.cellseg1.augment as aug

    calls = {"ssr": 0, "rrc": 0}
    real_ssr, real_box = aug.shift_scale_rotate, aug.random_resized_crop_box

    def ssr(*args, **kwargs):
        calls["ssr"] += not kwargs  # the image call (the label map's passes nearest=True)
        return real_ssr(*args, **kwargs)

    def box(*args):
        calls["rrc"] += 1
        return real_box(*args)

    monkeypatch.setattr(aug, "shift_scale_rotate", ssr)
    monkeypatch.setattr(aug, "random_resized_crop_box", box)
    rng = np.random.default_rng(3)
    image, labels = np.zeros((32, 32, 3), np.float32), np.zeros((32, 32), np.int32)
    for _ in range(2000):
        aug.augment(image, labels, 32, rng)
    assert math.isclose(calls["ssr"] / 2000, 0.8, abs_tol=0.03)
    assert math.isclose(calls["rrc"] / 2000, 0.5, abs_tol=0.03)
