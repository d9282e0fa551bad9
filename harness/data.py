"""Data layer: COCO instance annotations and images → `Sample` / `Instance`.

Annotations of Glioma C6 overlap on purpose, so an instance is never a pixel of a label map: each
`Instance` keeps its own polygon(s) (or RLE, or mask crop) and is rasterised lazily to a tight bounding
box plus a boolean crop. Nothing here ever allocates a full-image mask per instance.

The one rasteriser (used for ground truth *and* predicted polygons) is `rasterize_polygons`:
COCO polygons use the pixel-corner convention (pixel ``(r, c)`` covers ``[c, c+1) × [r, r+1)``), and a
pixel belongs to the polygon when its centre ``(c + 0.5, r + 0.5)`` lies inside it (even-odd rule within
one part; the parts of a multi-part annotation are unioned).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import DataError

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")

#: (y0, x0, y1, x1), end-exclusive, in pixels.
BBox = tuple[int, int, int, int]


# --------------------------------------------------------------------------------------------- raster


def rasterize_polygons(polygons: Sequence[np.ndarray], height: int, width: int) -> tuple[int, int, np.ndarray]:
    """Rasterise polygon parts (each ``(K, 2)`` x, y) to a tight crop: returns ``(y0, x0, crop)``.

    Pixel-centre rule, clipped to the image. An empty result is ``(0, 0, zeros((0, 0)))``.
    """
    from skimage.draw import polygon as draw_polygon

    parts = [np.asarray(p, dtype=np.float64) for p in polygons if len(p) >= 3]
    if not parts:
        return 0, 0, np.zeros((0, 0), dtype=bool)
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


def tighten(y0: int, x0: int, crop: np.ndarray) -> tuple[int, int, np.ndarray]:
    """Shrink a crop to the bounding box of its True pixels (empty → ``(0, 0, (0, 0))``)."""
    rows = np.flatnonzero(crop.any(axis=1))
    if rows.size == 0:
        return 0, 0, np.zeros((0, 0), dtype=bool)
    cols = np.flatnonzero(crop.any(axis=0))
    crop = crop[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    return y0 + int(rows[0]), x0 + int(cols[0]), np.ascontiguousarray(crop, dtype=bool)


def rle_to_crop(rle: dict[str, Any], height: int, width: int) -> tuple[int, int, np.ndarray]:
    """Decode a COCO RLE (compressed or not) to a tight crop."""
    from pycocotools import mask as mask_utils

    if isinstance(rle.get("counts"), list):
        rle = mask_utils.frPyObjects(rle, height, width)
    x, y, w, h = (int(round(v)) for v in mask_utils.toBbox(rle))
    if w == 0 or h == 0:
        return 0, 0, np.zeros((0, 0), dtype=bool)
    full = mask_utils.decode(rle)
    return tighten(y, x, full[y : y + h, x : x + w].astype(bool))


# --------------------------------------------------------------------------------------------- types


@dataclass(frozen=True, eq=False)
class Instance:
    """One annotated or predicted object; overlaps with other instances are allowed.

    Exactly one geometry source is set: ``polygons`` (COCO pixel-corner coordinates), ``rle``, or
    ``mask_crop`` + ``origin``. The mask is rasterised on first use and cached.
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


@dataclass(frozen=True)
class Sample:
    """One image with its instances (annotation order and overlaps kept)."""

    image_path: Path
    height: int
    width: int
    instances: tuple[Instance, ...] = ()
    image_id: int | None = None
    file_name: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def name(self) -> str:
        """Stem used for per-image files (label TIFFs, YOLO labels)."""
        return Path(self.file_name or self.image_path.name).stem

    def load_image(self) -> np.ndarray:
        """Read the image and check its size against the annotation file."""
        image = read_image(self.image_path)
        if image.shape[:2] != (self.height, self.width):
            raise DataError(
                f"{self.image_path}: image is {image.shape[1]}x{image.shape[0]} (WxH) but the annotations say "
                f"{self.width}x{self.height}; fix the 'width'/'height' of image id {self.image_id} or the image"
            )
        return image

    def with_instances(self, instances: Iterable[Instance]) -> Sample:
        """A copy holding other instances (e.g. filtered to one target)."""
        return replace(self, instances=tuple(instances))


# --------------------------------------------------------------------------------------------- images


def read_image(path: Path | str) -> np.ndarray:
    """Read a TIFF/PNG/JPEG as stored: 2-D grayscale or ``H×W×3`` (alpha dropped), 8- or 16-bit."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: image file not found")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: image file is empty (0 bytes); re-download or re-export it")
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            image = tifffile.imread(path)
        else:
            from PIL import Image

            with Image.open(path) as handle:
                image = np.asarray(handle)
    except Exception as exc:  # noqa: BLE001 - any decoder failure is the same user problem
        raise DataError(f"{path}: cannot decode image ({type(exc).__name__}: {exc}); the file is corrupt") from exc
    image = np.squeeze(image)
    if image.ndim == 3 and image.shape[0] in (3, 4) and image.shape[-1] not in (3, 4):
        image = np.moveaxis(image, 0, -1)
    if image.ndim == 3 and image.shape[-1] == 4:
        image = image[..., :3]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[-1] != 3) or image.size == 0:
        raise DataError(f"{path}: expected a 2-D grayscale or RGB image, got array of shape {image.shape}")
    return image


def to_gray(image: np.ndarray) -> np.ndarray:
    """RGB → grayscale (mean of channels, dtype kept as float32); grayscale passes through."""
    if image.ndim == 2:
        return image
    return image.astype(np.float32).mean(axis=-1)


def normalize_percentile(image: np.ndarray, low: float = 1.0, high: float = 99.0) -> np.ndarray:
    """Scale to float32 so that the `low`/`high` percentiles map to 0/1 (per image, as cellpose does)."""
    image = np.asarray(image, dtype=np.float32)
    lo, hi = np.percentile(image, [low, high])
    if hi <= lo:
        return np.zeros_like(image, dtype=np.float32)
    return (image - lo) / (hi - lo)


def to_uint8(image: np.ndarray, low: float = 1.0, high: float = 99.0) -> np.ndarray:
    """Percentile-normalised 8-bit copy (for YOLO/SAM inputs and overlays); uint8 input is returned as is."""
    if image.dtype == np.uint8:
        return image
    return (np.clip(normalize_percentile(image, low, high), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


# --------------------------------------------------------------------------------------------- COCO


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise DataError(f"{path}: annotation file not found")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); the file is truncated "
            "or not a COCO file"
        ) from exc


def _polygon_parts(seg: Any, where: str, height: int, width: int) -> tuple[np.ndarray, ...]:
    """Validate a COCO polygon segmentation (list of flat ``[x1, y1, ...]`` lists) → ``(K, 2)`` arrays."""
    if not isinstance(seg, list) or not seg:
        raise DataError(f"{where}: 'segmentation' must be a non-empty list of polygons or an RLE dict")
    if all(isinstance(v, (int, float)) for v in seg):
        seg = [seg]  # a single flat polygon written without the outer list
    parts = []
    for k, flat in enumerate(seg):
        if not isinstance(flat, list) or not all(isinstance(v, (int, float)) for v in flat):
            raise DataError(f"{where}: polygon part {k} is not a flat list of numbers")
        if len(flat) % 2:
            raise DataError(f"{where}: polygon part {k} has an odd number of coordinates ({len(flat)})")
        if len(flat) < 6:
            raise DataError(
                f"{where}: polygon part {k} has {len(flat) // 2} point(s); a polygon needs at least 3 — "
                "delete or redraw this annotation"
            )
        pts = np.asarray(flat, dtype=np.float64).reshape(-1, 2)
        if not np.isfinite(pts).all():
            raise DataError(f"{where}: polygon part {k} contains NaN or infinite coordinates")
        if pts[:, 0].min() < 0 or pts[:, 1].min() < 0 or pts[:, 0].max() > width or pts[:, 1].max() > height:
            raise DataError(
                f"{where}: polygon part {k} has coordinates outside the {width}x{height} image "
                f"(x {pts[:, 0].min():g}..{pts[:, 0].max():g}, y {pts[:, 1].min():g}..{pts[:, 1].max():g})"
            )
        parts.append(pts)
    return tuple(parts)


def _rle(seg: dict[str, Any], where: str, height: int, width: int) -> dict[str, Any]:
    size = seg.get("size")
    if "counts" not in seg or not isinstance(size, list) or len(size) != 2:
        raise DataError(f"{where}: RLE segmentation needs 'counts' and 'size' [height, width]")
    if [int(size[0]), int(size[1])] != [height, width]:
        raise DataError(f"{where}: RLE size {size} does not match the image size [{height}, {width}]")
    counts = seg["counts"]
    if isinstance(counts, list):
        if not all(isinstance(c, int) and c >= 0 for c in counts) or sum(counts) != height * width:
            raise DataError(f"{where}: uncompressed RLE counts must be non-negative integers summing to H*W")
    elif not isinstance(counts, str):
        raise DataError(f"{where}: RLE 'counts' must be a string or a list of integers")
    return {"size": [height, width], "counts": counts}


def parse_segmentation(seg: Any, where: str, height: int, width: int) -> dict[str, Any]:
    """Validate one COCO segmentation; returns ``{"polygons": ...}`` or ``{"rle": ...}`` for `Instance`."""
    if isinstance(seg, dict):
        return {"rle": _rle(seg, where, height, width)}
    return {"polygons": _polygon_parts(seg, where, height, width)}


def load_coco(json_path: Path | str, images_dir: Path | str | None = None) -> tuple[list[Sample], dict[int, str]]:
    """Read a COCO instances JSON into samples (annotation order kept) and the category id → name map.

    Image files are looked up as ``images_dir / file_name`` (default: the JSON's folder, then its
    ``images/`` sub-folder). Images are not opened here; `Sample.load_image` checks their size.
    """
    json_path = Path(json_path)
    data = _read_json(json_path)
    if not isinstance(data, dict):
        raise DataError(f"{json_path}: top level must be a JSON object with 'images', 'annotations', 'categories'")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DataError(f"{json_path}: missing or non-list key '{key}'; is this a COCO instances file?")
    categories: dict[int, str] = {}
    for cat in data["categories"]:
        if not isinstance(cat, dict) or "id" not in cat or "name" not in cat:
            raise DataError(f"{json_path}: category entry {cat!r} needs 'id' and 'name'")
        if cat["id"] in categories:
            raise DataError(f"{json_path}: duplicate category id {cat['id']}")
        categories[cat["id"]] = str(cat["name"])

    base = Path(images_dir) if images_dir is not None else None
    images: dict[int, dict[str, Any]] = {}
    for img in data["images"]:
        where = f"{json_path}: image {img.get('id', '?') if isinstance(img, dict) else img!r}"
        if not isinstance(img, dict) or not {"id", "file_name", "width", "height"} <= img.keys():
            raise DataError(f"{where}: image entries need 'id', 'file_name', 'width', 'height'")
        if img["id"] in images:
            raise DataError(f"{where}: duplicate image id {img['id']}")
        if not (isinstance(img["width"], int) and isinstance(img["height"], int)) or min(
            img["width"], img["height"]
        ) <= 0:
            raise DataError(f"{where}: 'width' and 'height' must be positive integers")
        images[img["id"]] = img

    per_image: dict[int, list[Instance]] = {i: [] for i in images}
    seen_ann: set[Any] = set()
    for order, ann in enumerate(data["annotations"]):
        ann_id = ann.get("id", order) if isinstance(ann, dict) else order
        where = f"{json_path}: annotation id {ann_id}"
        if not isinstance(ann, dict) or not {"image_id", "category_id", "segmentation"} <= ann.keys():
            raise DataError(f"{where}: annotations need 'image_id', 'category_id', 'segmentation'")
        if ann_id in seen_ann:
            raise DataError(f"{where}: duplicate annotation id")
        seen_ann.add(ann_id)
        img = images.get(ann["image_id"])
        if img is None:
            raise DataError(f"{where}: refers to image id {ann['image_id']}, which is not in 'images'")
        if ann["category_id"] not in categories:
            raise DataError(
                f"{where}: unknown category id {ann['category_id']}; known ids: {sorted(categories)}"
            )
        geometry = parse_segmentation(ann["segmentation"], where, img["height"], img["width"])
        score = ann.get("score")
        per_image[img["id"]].append(
            Instance(
                category=categories[ann["category_id"]],
                height=img["height"],
                width=img["width"],
                order=len(per_image[img["id"]]),
                score=float(score) if score is not None else None,
                iscrowd=bool(ann.get("iscrowd", 0)),
                source=where,
                **geometry,
            )
        )

    samples = []
    for image_id, img in images.items():
        samples.append(
            Sample(
                image_path=_image_path(json_path, base, img["file_name"]),
                height=img["height"],
                width=img["width"],
                instances=tuple(per_image[image_id]),
                image_id=image_id,
                file_name=img["file_name"],
            )
        )
    logger.info("%s: %d images, %d annotations", json_path, len(samples), len(data["annotations"]))
    return samples, categories


def _image_path(json_path: Path, images_dir: Path | None, file_name: str) -> Path:
    if images_dir is not None:
        return images_dir / file_name
    for candidate in (json_path.parent / file_name, json_path.parent / "images" / file_name):
        if candidate.exists():
            return candidate
    return json_path.parent / file_name
