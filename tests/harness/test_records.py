"""Records: `Sample.crop` / `Instance.cut` cut image and instances consistently (exact pixels, order kept)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from harness.errors import DataError
from harness.records import Instance, Sample

H, W = 12, 16


def _mask(instance: Instance, height: int, width: int) -> np.ndarray:
    """Full-image mask of an instance (tests only)."""
    full = np.zeros((height, width), dtype=bool)
    y0, x0, y1, x1 = instance.bbox
    full[y0:y1, x0:x1] = instance.crop
    return full


@pytest.fixture
def sample(tmp_path: Path) -> Sample:
    image = np.arange(H * W, dtype=np.uint16).reshape(H, W)
    tifffile.imwrite(tmp_path / "a.tif", image)
    square = Instance("cells", H, W, order=0, polygons=(np.array([[2, 2], [8, 2], [8, 6], [2, 6]], float),),
                      source="a.json: annotation id 1")
    blob = np.zeros((3, 5), dtype=bool)
    blob[1, :] = True
    blob[:, 2] = True
    plus = Instance.from_mask("soma", 7, 10, blob, H, W, order=1, score=0.75, source="a.json: annotation id 2")
    corner = Instance.from_mask("cells", 0, 14, np.ones((2, 2), bool), H, W, order=2)
    return Sample(tmp_path / "a.tif", H, W, (square, plus, corner), image_id=3, file_name="a.tif")


def test_crop_cuts_every_instance_to_the_window(sample: Sample) -> None:
    tile = sample.crop(4, 5, 6, 8)  # rows 4..9, columns 5..12
    assert (tile.height, tile.width, tile.offset, tile.file_size) == (6, 8, (4, 5), (H, W))
    # the corner instance (rows 0-1) lies outside: dropped; the others keep order, category, score, source
    assert [(i.category, i.order, i.score, i.source) for i in tile.instances] == [
        ("cells", 0, None, "a.json: annotation id 1"), ("soma", 1, 0.75, "a.json: annotation id 2")]
    square, plus = tile.instances
    # the square covers rows 2..5, columns 2..7 of the image: rows 4..5, columns 5..7 are in the window
    assert (square.bbox, square.area) == ((0, 0, 2, 3), 6)
    # the plus sits at rows 7..9, columns 10..14: its columns 10..12 are in the window (5 of its 7 pixels)
    assert (plus.bbox, plus.area) == ((3, 5, 6, 8), 5)
    for before, after in zip(sample.instances, tile.instances, strict=False):
        assert np.array_equal(_mask(after, 6, 8), _mask(before, H, W)[4:10, 5:13])


def test_crop_loads_the_window_pixels_and_composes(sample: Sample) -> None:
    tile = sample.crop(4, 5, 6, 8)
    image = np.arange(H * W, dtype=np.uint16).reshape(H, W)
    assert np.array_equal(tile.load_image(), image[4:10, 5:13])
    inner = tile.crop(1, 2, 3, 3)  # a window of a window is the window rows 5..7, columns 7..9 of the file
    assert (inner.offset, inner.file_size, inner.height, inner.width) == ((5, 7), (H, W), 3, 3)
    assert np.array_equal(inner.load_image(), image[5:8, 7:10])
    assert [(i.bbox, i.area) for i in inner.instances] == [((0, 0, 1, 1), 1)]  # the square's corner pixel
    direct = sample.crop(5, 7, 3, 3)
    assert [(i.bbox, i.area) for i in direct.instances] == [((0, 0, 1, 1), 1)]


def test_crop_clips_to_the_image_and_refuses_an_empty_window(sample: Sample) -> None:
    edge = sample.crop(10, 12, 8, 8)  # runs past the bottom-right corner: rows 10..11, columns 12..15
    assert (edge.height, edge.width, edge.offset) == (2, 4, (10, 12))
    assert edge.instances == ()
    with pytest.raises(DataError, match=r"a.tif: window y 20..24, x 0..4 has no pixel in the 16x12 image"):
        sample.crop(20, 0, 4, 4)


def test_cut_outside_is_none_and_inside_is_the_same_mask(sample: Sample) -> None:
    square = sample.instances[0]
    assert square.cut(8, 0, 4, 4) is None
    whole = square.cut(0, 0, H, W)
    assert whole is not None and whole.bbox == square.bbox and np.array_equal(whole.crop, square.crop)
