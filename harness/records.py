"""The records every layer passes around: `Instance` (one object) and `Sample` (one image with its instances).

Annotations of Glioma C6 overlap on purpose, so an instance is never a pixel of a label map: each
`Instance` keeps its own polygon(s) (or RLE, or mask crop) and is rasterised lazily (`harness.masks`) to a
tight bounding box plus a boolean crop. Nothing here ever allocates a full-image mask per instance.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from harness.errors import DataError
from harness.images import read_image
from harness.masks import BBox, rasterize_polygons, rle_to_crop, tighten

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class Instance:
    """One annotated or predicted object; overlaps with other instances are allowed.

    Exactly one geometry source is set: ``polygons`` (COCO pixel-corner coordinates), ``rle``, or
    ``mask_crop`` + ``origin``. The mask is rasterised on first use and cached.

    ``order`` is the instance's 0-based position among its image's instances as read (annotation order of the
    COCO file, `harness.coco.load_coco`) or as the model returned them: it names the instance in messages and
    in label-map records (``label → (category, order)``), and is kept when the instance is re-categorised,
    filtered or cropped, so it still points at the annotation it came from. (Priority resolution paints in
    list order, which is the same order for instances as read.)

    ``source`` says where the instance came from, for error and warning messages: for instances read from a
    file, the file and item (``<json>: annotation id 12 (image 'a.tif')``, ``<json>: result 5``); for
    predictions, whatever the adapter puts there (e.g. ``yolo11``), often empty.
    """

    category: str
    height: int
    width: int
    order: int = 0
    polygons: tuple[np.ndarray, ...] = ()
    rle: dict[str, Any] | None = None
    mask_crop: np.ndarray | None = None
    origin: tuple[int, int] = (0, 0)
    score: float | None = None
    iscrowd: bool = False
    source: str = ""

    @classmethod
    def from_mask(
        cls, category: str, y0: int, x0: int, crop: np.ndarray, height: int, width: int, **kw: Any
    ) -> Instance:
        """Build from a boolean crop placed at ``(y0, x0)``; the crop is tightened."""
        y0, x0, crop = tighten(y0, x0, np.asarray(crop, dtype=bool))
        return cls(category=category, height=height, width=width, mask_crop=crop, origin=(y0, x0), **kw)

    @cached_property
    def _raster(self) -> tuple[int, int, np.ndarray]:
        if self.mask_crop is not None:
            return self.origin[0], self.origin[1], self.mask_crop
        if self.rle is not None:
            return rle_to_crop(self.rle, self.height, self.width)
        return rasterize_polygons(self.polygons, self.height, self.width)

    @property
    def crop(self) -> np.ndarray:
        """Boolean mask restricted to `bbox`."""
        return self._raster[2]

    @property
    def bbox(self) -> BBox:
        """Tight pixel bounding box ``(y0, x0, y1, x1)``, end-exclusive."""
        y0, x0, crop = self._raster
        return y0, x0, y0 + crop.shape[0], x0 + crop.shape[1]

    @cached_property
    def area(self) -> int:
        """Number of mask pixels."""
        return int(self.crop.sum())

    def with_category(self, category: str) -> Instance:
        """Same geometry, another category (used to map classes onto targets)."""
        return replace(self, category=category)

    def cut(self, y0: int, x0: int, height: int, width: int) -> Instance | None:
        """The part of this instance inside the window ``[y0, y0 + height) × [x0, x0 + width)``, in the
        window's coordinates (an image of ``height × width``), or None when no pixel of it is inside.

        The mask is cut from the crop (tightened again); category, order, score, iscrowd and source are kept.
        """
        iy0, ix0, iy1, ix1 = self.bbox
        top, left = max(iy0, y0), max(ix0, x0)
        bottom, right = min(iy1, y0 + height), min(ix1, x0 + width)
        if bottom <= top or right <= left:
            return None
        part = self.crop[top - iy0 : bottom - iy0, left - ix0 : right - ix0]
        if not part.any():
            return None
        return Instance.from_mask(self.category, top - y0, left - x0, part, height, width, order=self.order,
                                  score=self.score, iscrowd=self.iscrowd, source=self.source)


@dataclass(frozen=True)
class Sample:
    """One image with its instances (annotation order and overlaps kept), or a window of one (`crop`)."""

    image_path: Path
    height: int
    width: int
    instances: tuple[Instance, ...] = ()
    image_id: int | None = None
    file_name: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False)
    offset: tuple[int, int] = (0, 0)  # (y, x) of this sample's pixel (0, 0) in the image file (`crop`)
    file_size: tuple[int, int] | None = None  # (height, width) of the image file when it differs (`crop`)

    @property
    def name(self) -> str:
        """Name of per-image output files (label TIFFs, YOLO labels): the image's path relative to its dataset
        (``file_name``) without the suffix, folders joined by ``__`` — ``set26/raw.tif`` → ``set26__raw``,
        ``a.tif`` → ``a`` — so one-folder-per-image datasets do not collide on ``raw``."""
        rel = PurePosixPath((self.file_name or self.image_path.name).replace("\\", "/"))
        parts = [{"..": "up"}.get(p, p) for p in rel.parts if p not in ("/", ".")]
        parts[-1] = PurePosixPath(parts[-1]).stem
        return "__".join(parts)

    def load_image(self) -> np.ndarray:
        """Read the image and check its size against the annotation file (a window: its pixels only)."""
        image = read_image(self.image_path)
        height, width = self.file_size or (self.height, self.width)
        if image.shape[:2] != (height, width):
            raise DataError(
                f"{self.image_path}: image is {image.shape[1]}x{image.shape[0]} (WxH) but the annotations "
                f"say {width}x{height}; fix the 'width'/'height' of image id {self.image_id} "
                "or the image"
            )
        if self.file_size is None:
            return image
        y, x = self.offset
        return image[y : y + self.height, x : x + self.width]

    def with_instances(self, instances: Iterable[Instance]) -> Sample:
        """A copy holding other instances (e.g. filtered to one target)."""
        return replace(self, instances=tuple(instances))

    def crop(self, y0: int, x0: int, height: int, width: int) -> Sample:
        """The window ``[y0, y0 + height) × [x0, x0 + width)`` of this image as a sample of its own (a tile).

        The window is clipped to the image. Every instance is cut to it (`Instance.cut`: mask in the window's
        coordinates, order and source kept); one with no pixel inside is dropped. `load_image` returns the
        window's pixels, so a model sees exactly what its instances describe. A window of a window is a window
        of the image file.
        """
        top, left = max(0, y0), max(0, x0)
        bottom, right = min(self.height, y0 + height), min(self.width, x0 + width)
        if bottom <= top or right <= left:
            raise DataError(f"{self.image_path}: window y {y0}..{y0 + height}, x {x0}..{x0 + width} has no "
                            f"pixel in the {self.width}x{self.height} image")
        h, w = bottom - top, right - left
        kept = [cut for inst in self.instances if (cut := inst.cut(top, left, h, w)) is not None]
        return replace(self, height=h, width=w, instances=tuple(kept),
                       offset=(self.offset[0] + top, self.offset[1] + left),
                       file_size=self.file_size or (self.height, self.width))
