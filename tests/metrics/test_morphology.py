"""Shape descriptors on synthetic shapes with values derived by hand, and on the real sample."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest

from metrics.morphology import shape_of_crop, shapes, summarize


@dataclass
class Obj:
    category: str
    bbox: tuple[int, int, int, int]
    crop: np.ndarray


def test_filled_rectangle() -> None:
    # 10 rows x 20 columns: discrete variances (n^2-1)/12, so the axis ratio is sqrt(99/399).
    s = shape_of_crop(np.ones((10, 20), bool), "cell")
    assert s is not None
    assert s.area == 200
    assert s.solidity == 1.0
    assert s.eccentricity == pytest.approx(math.sqrt(99 / 399), abs=1e-12)
    assert s.ellipse_eccentricity == pytest.approx(math.sqrt(1 - 99 / 399), abs=1e-12)
    assert s.equivalent_diameter == pytest.approx(math.sqrt(800 / math.pi))
    assert (s.centroid_y, s.centroid_x) == (4.5, 9.5)


def test_square_is_round() -> None:
    s = shape_of_crop(np.ones((7, 7), bool))
    assert s is not None and s.eccentricity == pytest.approx(1.0, abs=1e-12)


def test_l_shape_solidity() -> None:
    # 10x10 square minus its 5x5 bottom-right corner: 75 px. scikit-image's hull passes through the
    # edge midpoints (4, 9.5) and (9.5, 4), i.e. the line r + c = 13.5, so it adds the 10 missing pixels
    # with r + c <= 13 (1+2+3+4): convex area 85, solidity 75/85 = 15/17.
    crop = np.ones((10, 10), bool)
    crop[5:, 5:] = False
    s = shape_of_crop(crop)
    assert s is not None
    assert s.area == 75
    assert s.solidity == pytest.approx(15 / 17, abs=1e-12)
    # symmetric about the anti-diagonal -> the ellipse axes lie along the diagonals; ratio < 1
    assert 0.0 < s.eccentricity < 1.0


def test_single_pixel_and_empty() -> None:
    s = shape_of_crop(np.ones((1, 1), bool))
    assert s is not None and s.area == 1 and math.isnan(s.eccentricity)
    assert shape_of_crop(np.zeros((3, 3), bool)) is None
    assert shape_of_crop(np.zeros((0, 0), bool)) is None


def test_shapes_and_summary_per_class() -> None:
    rect = np.ones((10, 20), bool)
    square = np.ones((4, 4), bool)
    objs = [
        Obj("a", (100, 50, 110, 70), rect),
        Obj("a", (0, 0, 4, 4), square),
        Obj("b", (5, 5, 5, 5), np.zeros((0, 0), bool)),  # empty: skipped
        Obj("b", (0, 0, 1, 1), np.ones((1, 1), bool)),
    ]
    found = shapes(objs)
    assert [s.category for s in found] == ["a", "a", "b"]
    assert (found[0].centroid_y, found[0].centroid_x) == (104.5, 59.5)  # placed at its bbox origin
    summary = summarize(found)
    assert summary["a"]["count"] == 2
    assert summary["a"]["area"]["mean"] == 108.0
    assert summary["a"]["area"]["median"] == 108.0
    assert summary["a"]["area"]["min"] == 16.0 and summary["a"]["area"]["max"] == 200.0
    assert summary["a"]["solidity"]["mean"] == 1.0
    assert summary["b"]["count"] == 1
    assert math.isnan(summary["b"]["eccentricity"]["mean"])  # a single pixel has no axis ratio


def test_real_sample(sample_dir) -> None:
    from harness.coco import load_coco

    samples, _ = load_coco(sample_dir / "spec" / "test" / "annotations.coco.json")
    found = shapes(inst for s in samples for inst in s.instances)
    assert len(found) == sum(len(s.instances) for s in samples) == 152
    summary = summarize(found)
    assert list(summary) == ["cell"] and summary["cell"]["count"] == 152
    for s in found:
        assert 0.0 < s.solidity <= 1.0
        assert 0.0 < s.eccentricity <= 1.0
