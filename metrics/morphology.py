"""Shape descriptors of instances (the paper's Figure 2): area, eccentricity, solidity.

Computed with `skimage.measure.regionprops` on each instance's bounding-box crop, never on a full-image
mask. Definitions (so numbers can be compared with the paper and with other tools):

- ``area``: number of mask pixels.
- ``eccentricity``: **short / long axis ratio** of the ellipse with the same second central moments as the
  mask (``axis_minor_length / axis_major_length`` in scikit-image), in (0, 1]; 1 = round, near 0 =
  elongated. This is the paper's Figure 2 convention, *not* scikit-image's ``eccentricity``
  (``sqrt(1 - (b/a)**2)``, 0 = round), which is kept as ``ellipse_eccentricity``. For a filled
  ``h × w`` pixel rectangle the ratio is ``sqrt((h**2 - 1) / (w**2 - 1))`` (discrete variance
  ``(n**2 - 1)/12``).
  Undefined (NaN) when the long axis has zero length (a single pixel).
- ``solidity``: area / area of the convex hull of the mask pixels (scikit-image's ``convex_hull_image``),
  in (0, 1]; 1 = convex.
- ``equivalent_diameter``: diameter of the disc with the same area, ``sqrt(4 * area / pi)``.

Objects only need ``.category``, ``.bbox`` and ``.crop`` (like `harness.records.Instance`); this module
imports only numpy and scikit-image.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np

logger = logging.getLogger(__name__)

#: Fields of `Shape` that are measured (summaries and plots iterate over these).
MEASURES = ("area", "eccentricity", "solidity", "equivalent_diameter")


class HasMask(Protocol):
    """What an instance must provide: a category, a tight bbox ``(y0, x0, y1, x1)`` and its boolean crop."""

    category: str

    @property
    def bbox(self) -> tuple[int, int, int, int]: ...

    @property
    def crop(self) -> np.ndarray: ...


@dataclass(frozen=True)
class Shape:
    """Shape descriptors of one instance (see the module docstring for definitions)."""

    category: str
    area: int
    eccentricity: float
    solidity: float
    equivalent_diameter: float
    ellipse_eccentricity: float
    centroid_y: float
    centroid_x: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def shape_of_crop(crop: np.ndarray, category: str = "", origin: tuple[int, int] = (0, 0)) -> Shape | None:
    """Descriptors of one boolean crop (all its pixels form one region); None for an empty crop."""
    from skimage.measure import regionprops

    mask = np.asarray(crop, dtype=bool)
    if mask.size == 0 or not mask.any():
        return None
    props = regionprops(mask.astype(np.uint8))[0]
    area = int(props.area)
    major, minor = float(props.axis_major_length), float(props.axis_minor_length)
    ratio = minor / major if major > 0 else math.nan
    cy, cx = props.centroid
    return Shape(
        category=category,
        area=area,
        eccentricity=ratio,
        solidity=float(props.solidity),
        equivalent_diameter=math.sqrt(4.0 * area / math.pi),
        ellipse_eccentricity=float(props.eccentricity) if major > 0 else math.nan,
        centroid_y=float(cy) + origin[0],
        centroid_x=float(cx) + origin[1],
    )


def shapes(instances: Iterable[HasMask]) -> list[Shape]:
    """Descriptors of every non-empty instance (empty ones are skipped and logged)."""
    out: list[Shape] = []
    empty = 0
    for inst in instances:
        y0, x0 = inst.bbox[:2]
        shape = shape_of_crop(inst.crop, inst.category, (y0, x0))
        if shape is None:
            empty += 1
            continue
        out.append(shape)
    if empty:
        logger.info("morphology: skipped %d empty instance(s)", empty)
    return out


def _stats(values: Sequence[float]) -> dict[str, float]:
    arr = np.asarray([v for v in values if not math.isnan(v)], dtype=np.float64)
    if arr.size == 0:
        return {"mean": math.nan, "median": math.nan, "std": math.nan, "min": math.nan, "max": math.nan}
    return {
        "mean": float(arr.mean()),
        "median": float(np.median(arr)),
        "std": float(arr.std(ddof=0)),
        "min": float(arr.min()),
        "max": float(arr.max()),
    }


def summarize(items: Iterable[Shape]) -> dict[str, dict[str, Any]]:
    """Per category: ``count`` and mean/median/std/min/max of every measure (NaN ratios are left out)."""
    by_cat: dict[str, list[Shape]] = {}
    for s in items:
        by_cat.setdefault(s.category, []).append(s)
    summary: dict[str, dict[str, Any]] = {}
    for cat in sorted(by_cat):
        group = by_cat[cat]
        summary[cat] = {"count": len(group)}
        for measure in MEASURES:
            summary[cat][measure] = _stats([float(getattr(s, measure)) for s in group])
    return summary
