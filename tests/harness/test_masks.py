"""harness.masks and harness.records: the one rasteriser (pixel-centre rule, equal to scikit-image), RLE decoding
equal to pycocotools, instances tightened to their crop."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from harness.coco import load_coco
from harness.masks import rasterize_polygons, rle_counts, rle_to_crop, tighten
from harness.records import Instance

H, W = 20, 30

# --------------------------------------------------------------------------------------------- raster


def test_rasterizer_pixel_centre_rule() -> None:
    # square with corners on pixel corners: exactly the 4x3 pixels whose centres are inside
    y0, x0, crop = rasterize_polygons([np.array([[2, 5], [6, 5], [6, 8], [2, 8]])], H, W)
    assert (y0, x0, crop.shape, int(crop.sum())) == (5, 2, (3, 4), 12)
    # triangles x + y < s: a centre (c+.5, r+.5) is inside when c + r + 1 < s -> 6 pixels for 3.8, 10 for 4.2
    _, _, tri = rasterize_polygons([np.array([[0, 0], [3.8, 0], [0, 3.8]])], H, W)
    assert int(tri.sum()) == 6
    _, _, tri = rasterize_polygons([np.array([[0, 0], [4.2, 0], [0, 4.2]])], H, W)
    assert int(tri.sum()) == 10
    # parts are unioned, a part past the border is clipped to the image
    _, _, both = rasterize_polygons(
        [np.array([[0, 0], [2, 0], [2, 2], [0, 2]]), np.array([[28, 18], [31, 18], [31, 21], [28, 21]])], H, W
    )
    assert int(both.sum()) == 4 + 4 and both.shape == (H, W)


def _skimage_reference(parts: list[np.ndarray], height: int, width: int) -> tuple[int, int, np.ndarray]:
    """The rule as `skimage.draw.polygon` applies it (point test per pixel), for the equality check."""
    import math

    from skimage.draw import polygon as draw_polygon

    xs = np.concatenate([p[:, 0] for p in parts])
    ys = np.concatenate([p[:, 1] for p in parts])
    r0, r1 = max(0, math.floor(ys.min())), min(height, math.ceil(ys.max()))
    c0, c1 = max(0, math.floor(xs.min())), min(width, math.ceil(xs.max()))
    if r1 <= r0 or c1 <= c0:
        return 0, 0, np.zeros((0, 0), dtype=bool)
    crop = np.zeros((r1 - r0, c1 - c0), dtype=bool)
    for part in parts:
        rr, cc = draw_polygon(part[:, 1] - 0.5 - r0, part[:, 0] - 0.5 - c0, shape=crop.shape)
        crop[rr, cc] = True
    return tighten(r0, c0, crop)


@pytest.mark.parametrize("grid", [None, 1.0, 0.5])
def test_scanline_rasteriser_equals_skimage(grid: float | None) -> None:
    """Random (self-intersecting, clipped, multi-part) polygons with float, integer and half-integer vertices:
    on-grid vertices put pixel centres exactly on edges and vertices, the boundary cases."""
    rng = np.random.default_rng(7)
    for _ in range(400):
        h, w = (int(v) for v in rng.integers(1, 30, 2))
        parts = []
        for _ in range(int(rng.integers(1, 3))):
            pts = rng.uniform([-4, -4], [w + 4, h + 4], size=(int(rng.integers(3, 12)), 2))
            parts.append(np.round(pts / grid) * grid if grid else pts)
        ours = rasterize_polygons(parts, h, w)
        ref = _skimage_reference(parts, h, w)
        assert ours[:2] == ref[:2] and np.array_equal(ours[2], ref[2])


def test_scanline_rasteriser_equals_skimage_on_sample(sample_dir: Path) -> None:
    for split in ("train", "valid", "test"):
        samples, _ = load_coco(sample_dir / "spec" / split / "annotations.coco.json")
        for sample in samples:
            for inst in sample.instances:
                ours = rasterize_polygons(inst.polygons, sample.height, sample.width)
                ref = _skimage_reference(list(inst.polygons), sample.height, sample.width)
                assert ours[:2] == ref[:2] and np.array_equal(ours[2], ref[2]), inst.source


def test_tighten_empty() -> None:
    assert tighten(3, 4, np.zeros((2, 2), bool))[2].shape == (0, 0)


@pytest.mark.parametrize("seed", range(6))
def test_rle_to_crop_equals_pycocotools(seed: int) -> None:
    rng = np.random.default_rng(seed)
    h, w = int(rng.integers(5, 90)), int(rng.integers(5, 90))
    mask = np.zeros((h, w), np.uint8)
    for _ in range(3):  # random blobs plus speckle, sometimes touching the borders
        cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(1, 12)
        yy, xx = np.ogrid[:h, :w]
        mask[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 1
    mask |= (rng.random((h, w)) < 0.02).astype(np.uint8)
    encoded = mask_utils.encode(np.asfortranarray(mask))
    full = mask_utils.decode(encoded).astype(bool)
    expected = tighten(0, 0, full)
    for counts in (encoded["counts"], encoded["counts"].decode(), _uncompressed(full)):
        y0, x0, crop = rle_to_crop({"size": [h, w], "counts": counts}, h, w)
        assert (y0, x0) == expected[:2] and np.array_equal(crop, expected[2])


def _uncompressed(mask: np.ndarray) -> list[int]:
    flat = mask.ravel(order="F").astype(np.int8)
    edges = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], edges, [flat.size]])
    runs = np.diff(bounds).tolist()
    return ([0] + runs) if flat[0] else runs


def test_rle_counts_large_values_and_empty_mask() -> None:
    big = np.zeros((1944, 2592), np.uint8, order="F")
    big[1000:1003, 2000:2002] = 1
    encoded = mask_utils.encode(big)
    assert rle_counts(encoded["counts"]).sum() == 1944 * 2592
    y0, x0, crop = rle_to_crop(encoded, 1944, 2592)
    assert (y0, x0, crop.shape, int(crop.sum())) == (1000, 2000, (3, 2), 6)
    empty = mask_utils.encode(np.zeros((4, 5), np.uint8, order="F"))
    assert rle_to_crop(empty, 4, 5)[2].shape == (0, 0)


def test_instance_from_mask_is_tightened() -> None:
    crop = np.zeros((5, 5), bool)
    crop[2:4, 1:2] = True
    inst = Instance.from_mask("cell", 10, 20, crop, H * 3, W * 3)
    assert inst.bbox == (12, 21, 14, 22) and inst.area == 2
