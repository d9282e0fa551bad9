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
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from harness.errors import DataError
from harness.images import (  # noqa: F401 - re-exported: the data layer's image readers
    IMAGE_SUFFIXES,
    normalize_percentile,
    read_image,
    to_gray,
    to_uint8,
)

logger = logging.getLogger(__name__)

#: (y0, x0, y1, x1), end-exclusive, in pixels.
BBox = tuple[int, int, int, int]


# --------------------------------------------------------------------------------------------- raster


def rasterize_polygons(
    polygons: Sequence[np.ndarray], height: int, width: int
) -> tuple[int, int, np.ndarray]:
    """Rasterise polygon parts (each ``(K, 2)`` x, y) to a tight crop: returns ``(y0, x0, crop)``.

    Pixel-centre rule, clipped to the image: pixel ``(r, c)`` is in when its centre ``(c + .5, r + .5)`` is
    inside the polygon (even-odd) or on its boundary — exactly the pixels `skimage.draw.polygon` gives for
    the polygon shifted by -0.5 (`tests/harness/test_data.py` checks the equality), computed by a vectorised
    scanline instead of a per-pixel test (about 10x faster on cell-sized polygons). Parts are unioned.
    An empty result is ``(0, 0, zeros((0, 0)))``.
    """
    parts = [np.asarray(p, dtype=np.float64) for p in polygons if len(p) >= 3]
    if not parts:
        return 0, 0, np.zeros((0, 0), dtype=bool)
    xs = np.concatenate([p[:, 0] for p in parts])
    ys = np.concatenate([p[:, 1] for p in parts])
    r0, r1 = max(0, math.floor(ys.min())), min(height, math.ceil(ys.max()))
    c0, c1 = max(0, math.floor(xs.min())), min(width, math.ceil(xs.max()))
    if r1 <= r0 or c1 <= c0:
        return 0, 0, np.zeros((0, 0), dtype=bool)
    shifted = [(p[:, 0] - 0.5 - c0, p[:, 1] - 0.5 - r0) for p in parts]
    return tighten(r0, c0, _scanline_fill(shifted, r1 - r0, c1 - c0))


#: Distance under which a pixel point counts as a polygon vertex (as in skimage's point-in-polygon test).
_VERTEX_EPS = 1e-12


def _crossing_spans(
    xs: np.ndarray, ys: np.ndarray, h: int, w: int, right: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row spans ``(rows, first, last)`` (inclusive integer columns) of one crossing parity of a polygon.

    The point-in-polygon test counts edge crossings of a ray to the right (an edge counts for rows ``y`` with
    ``lo <= y < hi``) and to the left (``lo < y <= hi``): a point is inside when the right count is odd, on the
    boundary when the two parities differ, so it is *in* when either count is odd. Sorting each row's
    crossings and pairing them gives the odd intervals ``[x1, x2)`` (right) and ``(x1, x2]`` (left).
    """
    xp, yp = np.roll(xs, 1), np.roll(ys, 1)
    lo, hi = np.minimum(ys, yp), np.maximum(ys, yp)
    start, stop = (np.ceil(lo), np.ceil(hi)) if right else (np.floor(lo) + 1, np.floor(hi) + 1)
    start = np.maximum(start, 0).astype(np.int64)
    stop = np.minimum(stop, h).astype(np.int64)
    counts = np.maximum(stop - start, 0)
    total = int(counts.sum())
    if total == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    edge = np.repeat(np.arange(xs.size), counts)
    rows = start[edge] + (np.arange(total) - (np.cumsum(counts) - counts)[edge])
    x0, y0 = xs[edge], ys[edge]
    cross = x0 + (xp[edge] - x0) * (rows - y0) / (yp[edge] - y0)
    order = np.lexsort((cross, rows))
    rows, cross = rows[order], cross[order]
    a, b = cross[0::2], cross[1::2]  # every row has an even number of crossings (closed polygon)
    first, last = (np.ceil(a), np.ceil(b) - 1) if right else (np.floor(a) + 1, np.floor(b))
    return rows[0::2], first.astype(np.int64), last.astype(np.int64)


def _scanline_fill(parts: Sequence[tuple[np.ndarray, np.ndarray]], h: int, w: int) -> np.ndarray:
    """Boolean ``h x w`` union of polygon parts given in crop pixel coordinates (pixel = integer point)."""
    rows, firsts, lasts = [], [], []
    for xs, ys in parts:
        for right in (True, False):
            r, f, last = _crossing_spans(xs, ys, h, w, right)
            rows.append(r)
            firsts.append(f)
            lasts.append(last)
        vx, vy = np.round(xs), np.round(ys)  # vertices sitting on a pixel point are in
        on = (np.abs(xs - vx) < _VERTEX_EPS) & (np.abs(ys - vy) < _VERTEX_EPS)
        on &= (vx >= 0) & (vx < w) & (vy >= 0) & (vy < h)
        rows.append(vy[on].astype(np.int64))
        firsts.append(vx[on].astype(np.int64))
        lasts.append(vx[on].astype(np.int64))
    r, f, last = np.concatenate(rows), np.concatenate(firsts), np.concatenate(lasts)
    f, last = np.maximum(f, 0), np.minimum(last, w - 1)
    keep = f <= last
    r, f, last = r[keep], f[keep], last[keep]
    size = h * (w + 1)
    diff = np.bincount(r * (w + 1) + f, minlength=size) - np.bincount(r * (w + 1) + last + 1, minlength=size)
    return np.cumsum(diff.reshape(h, w + 1), axis=1)[:, :w] > 0


def tighten(y0: int, x0: int, crop: np.ndarray) -> tuple[int, int, np.ndarray]:
    """Shrink a crop to the bounding box of its True pixels (empty → ``(0, 0, (0, 0))``)."""
    rows = np.flatnonzero(crop.any(axis=1))
    if rows.size == 0:
        return 0, 0, np.zeros((0, 0), dtype=bool)
    cols = np.flatnonzero(crop.any(axis=0))
    crop = crop[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    return y0 + int(rows[0]), x0 + int(cols[0]), np.ascontiguousarray(crop, dtype=bool)


def rle_counts(counts: str | bytes | Sequence[int]) -> np.ndarray:
    """Run lengths of a COCO RLE ``counts`` (compressed string or plain list) as int64.

    The compressed form (COCO ``maskApi``: 6-bit chars offset by 48, 5 data bits + a continuation bit
    per char, the last char's bit 4 is the sign, and from the 4th run on each value is a delta to the run
    two back) is decoded with vectorised numpy, so no full-image mask is ever built.
    """
    if not isinstance(counts, (str, bytes)):
        return np.asarray(counts, dtype=np.int64)
    raw = counts.encode("ascii") if isinstance(counts, str) else counts
    chars = np.frombuffer(raw, dtype=np.uint8).astype(np.int64) - 48
    if chars.size == 0:
        return np.zeros(0, dtype=np.int64)
    if chars.min() < 0 or chars.max() > 63:
        raise ValueError("compressed RLE holds an invalid character (outside the COCO alphabet '0'..'o')")
    more = (chars & 0x20) != 0
    ends = np.flatnonzero(~more)
    if ends.size == 0 or ends[-1] != chars.size - 1:
        raise ValueError("compressed RLE ends in the middle of a value (truncated counts)")
    starts = np.concatenate([[0], ends[:-1] + 1])
    lengths = ends - starts + 1
    shift = 5 * (np.arange(chars.size) - np.repeat(starts, lengths))
    values = np.add.reduceat((chars & 0x1F) << shift, starts)
    negative = (chars[ends] & 0x10) != 0
    values = np.where(negative, values - (np.int64(1) << (5 * lengths)), values)
    out = values.copy()
    out[1::2] = np.cumsum(values[1::2])
    out[2::2] = np.cumsum(values[2::2])
    return out


def rle_to_crop(rle: dict[str, Any], height: int, width: int) -> tuple[int, int, np.ndarray]:
    """Decode a COCO RLE (compressed or not) to a tight crop, touching only the columns the mask spans.

    COCO RLE runs are column-major and alternate background/foreground starting with background; only the
    strip of columns between the first and last foreground pixel is expanded (equal to
    ``pycocotools.mask.decode`` restricted to the bbox; `tests/harness/test_data.py` checks it).
    """
    try:
        runs = rle_counts(rle["counts"])
    except (ValueError, TypeError) as exc:
        raise DataError(f"RLE counts cannot be decoded ({exc})") from exc
    if runs.size and runs.min() < 0:
        raise DataError("RLE counts decode to a negative run length; the RLE is corrupt")
    total = int(runs.sum())
    if total != height * width:
        raise DataError(
            f"RLE runs cover {total} pixels but the image has {height}x{width} = {height * width}"
        )
    ends = np.cumsum(runs)
    begins = ends - runs
    fg = (np.arange(runs.size) % 2 == 1) & (runs > 0)
    if not fg.any():
        return 0, 0, np.zeros((0, 0), dtype=bool)
    c0 = int(begins[fg][0]) // height
    c1 = (int(ends[fg][-1]) - 1) // height + 1
    lo, hi = c0 * height, c1 * height
    lengths = np.clip(ends, lo, hi) - np.clip(begins, lo, hi)
    flat = np.repeat(np.arange(runs.size) % 2 == 1, lengths)
    strip = flat.reshape(c1 - c0, height).T
    return tighten(0, c0, strip)


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
        """Name of per-image output files (label TIFFs, YOLO labels): the image's path relative to its dataset
        (``file_name``) without the suffix, folders joined by ``__`` — ``set26/raw.tif`` → ``set26__raw``,
        ``a.tif`` → ``a`` — so one-folder-per-image datasets do not collide on ``raw``."""
        rel = PurePosixPath((self.file_name or self.image_path.name).replace("\\", "/"))
        parts = [{"..": "up"}.get(p, p) for p in rel.parts if p not in ("/", ".")]
        parts[-1] = PurePosixPath(parts[-1]).stem
        return "__".join(parts)

    def load_image(self) -> np.ndarray:
        """Read the image and check its size against the annotation file."""
        image = read_image(self.image_path)
        if image.shape[:2] != (self.height, self.width):
            raise DataError(
                f"{self.image_path}: image is {image.shape[1]}x{image.shape[0]} (WxH) but the annotations "
                f"say {self.width}x{self.height}; fix the 'width'/'height' of image id {self.image_id} "
                "or the image"
            )
        return image

    def with_instances(self, instances: Iterable[Instance]) -> Sample:
        """A copy holding other instances (e.g. filtered to one target)."""
        return replace(self, instances=tuple(instances))


# --------------------------------------------------------------------------------------------- COCO


#: Polygon vertices may lie this far (pixels) outside the image: annotation tools often put border vertices
#: a fraction beyond the edge. The rasteriser clips them; each such annotation is a counted warning. Farther
#: out is an error.
OUTSIDE_TOLERANCE = 1.0


_BINARY_KINDS = ((b"II*\x00", "a TIFF image"), (b"MM\x00*", "a TIFF image"), (b"\x89PNG", "a PNG image"),
                 (b"PK\x03\x04", "a zip archive (or a torch checkpoint)"), (b"\xff\xd8\xff", "a JPEG image"))


def read_json(path: Path | str, what: str = "annotation file") -> Any:
    """Parse a JSON file: UTF-8 with or without a byte-order mark, plain or gzip-compressed (``.json.gz``).

    A folder, an image, an archive or broken JSON is a `DataError` naming the file and what it is.
    """
    path = Path(path)
    if path.is_dir():
        inside = sorted(p.name for p in path.glob("*.json"))
        hint = f" (it holds {', '.join(inside[:5])})" if inside else ""
        raise DataError(f"{path}: is a folder, not a JSON file; give the {what} inside it{hint}")
    if not path.is_file():
        raise DataError(f"{path}: {what} not found")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        import gzip

        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise DataError(f"{path}: a gzip file that cannot be decompressed ({exc}); re-download it") from exc
    for magic, kind in _BINARY_KINDS:
        if raw.startswith(magic):
            raise DataError(f"{path}: is {kind}, not a JSON {what}")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path}: not a UTF-8 text file ({exc.reason} at byte {exc.start}); not a COCO JSON"
        ) from exc
    if not text.strip():
        raise DataError(f"{path}: {what} is empty (0 bytes of JSON); re-download or re-export it")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); the file is "
            "truncated or not a COCO file"
        ) from exc


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _polygon_parts(
    seg: Any, where: str, height: int, width: int, warnings: list[str] | None = None
) -> tuple[np.ndarray, ...]:
    """Validate a COCO polygon segmentation (list of flat ``[x1, y1, ...]`` lists) → ``(K, 2)`` arrays."""
    if not isinstance(seg, list) or not seg:
        raise DataError(f"{where}: 'segmentation' must be a non-empty list of polygons or an RLE dict")
    if all(_is_number(v) for v in seg):
        seg = [seg]  # a single flat polygon written without the outer list
    parts = []
    overshoot = 0.0
    for k, flat in enumerate(seg):
        if not isinstance(flat, list) or not all(_is_number(v) for v in flat):
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
        out = max(-pts[:, 0].min(), -pts[:, 1].min(), pts[:, 0].max() - width, pts[:, 1].max() - height)
        if out > OUTSIDE_TOLERANCE:
            raise DataError(
                f"{where}: polygon part {k} has coordinates outside the {width}x{height} image "
                f"(x {pts[:, 0].min():g}..{pts[:, 0].max():g}, y {pts[:, 1].min():g}..{pts[:, 1].max():g})"
            )
        overshoot = max(overshoot, out)
        parts.append(pts)
    if overshoot > 0 and warnings is not None:
        warnings.append(
            f"{where}: vertices up to {overshoot:g} px outside the {width}x{height} image "
            "(clipped at the border)"
        )
    return tuple(parts)


def _rle(seg: dict[str, Any], where: str, height: int, width: int) -> dict[str, Any]:
    size = seg.get("size")
    if "counts" not in seg or not isinstance(size, list) or len(size) != 2:
        raise DataError(f"{where}: RLE segmentation needs 'counts' and 'size' [height, width]")
    if [size[0], size[1]] != [height, width]:
        raise DataError(f"{where}: RLE size {size} does not match the image size [{height}, {width}]")
    counts = seg["counts"]
    if isinstance(counts, list):
        if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts):
            raise DataError(f"{where}: uncompressed RLE counts must be non-negative integers")
    elif not isinstance(counts, str):
        raise DataError(f"{where}: RLE 'counts' must be a string or a list of integers")
    try:
        runs = rle_counts(counts)
    except (ValueError, UnicodeEncodeError) as exc:
        raise DataError(f"{where}: RLE counts cannot be decoded ({exc})") from exc
    if runs.size and runs.min() < 0:
        raise DataError(f"{where}: RLE counts decode to a negative run length; the RLE is corrupt")
    if int(runs.sum()) != height * width:
        raise DataError(
            f"{where}: RLE runs cover {int(runs.sum())} pixels, the {width}x{height} image has "
            f"{height * width}; the RLE is truncated or belongs to another image size"
        )
    return {"size": [height, width], "counts": counts}


def parse_segmentation(
    seg: Any, where: str, height: int, width: int, warnings: list[str] | None = None
) -> dict[str, Any]:
    """Validate one COCO segmentation; returns ``{"polygons": ...}`` or ``{"rle": ...}`` for `Instance`.

    Problems that make the geometry unusable raise `DataError` naming ``where``; tolerable ones (vertices up
    to `OUTSIDE_TOLERANCE` px outside the image) are appended to ``warnings`` when given.
    """
    if isinstance(seg, dict):
        return {"rle": _rle(seg, where, height, width)}
    return {"polygons": _polygon_parts(seg, where, height, width, warnings)}


def _categories(data: dict[str, Any], json_path: Path) -> dict[int, str]:
    categories: dict[int, str] = {}
    for k, cat in enumerate(data["categories"]):
        if not isinstance(cat, dict) or "id" not in cat or "name" not in cat:
            raise DataError(f"{json_path}: categories[{k}] ({cat!r}) needs 'id' and 'name'")
        if cat["id"] in categories:
            raise DataError(
                f"{json_path}: categories[{k}]: duplicate category id {cat['id']} "
                f"({categories[cat['id']]!r} and {cat['name']!r})"
            )
        categories[cat["id"]] = str(cat["name"])
    return categories


def _images(data: dict[str, Any], json_path: Path) -> dict[Any, dict[str, Any]]:
    images: dict[Any, dict[str, Any]] = {}
    names: dict[str, Any] = {}
    for k, img in enumerate(data["images"]):
        if not isinstance(img, dict):
            raise DataError(f"{json_path}: images[{k}] is {type(img).__name__}, not an object")
        where = (
            f"{json_path}: image id {img.get('id', '?')} (images[{k}], file {img.get('file_name', '?')!r})"
        )
        missing = [key for key in ("id", "file_name", "width", "height") if key not in img]
        if missing:
            raise DataError(
                f"{where}: missing key(s) {', '.join(missing)}; image entries need "
                "'id', 'file_name', 'width', 'height'"
            )
        if img["id"] in images:
            raise DataError(
                f"{where}: duplicate image id {img['id']} (also {images[img['id']]['file_name']!r}); "
                "image ids must be unique"
            )
        if not isinstance(img["file_name"], str) or not img["file_name"]:
            raise DataError(f"{where}: 'file_name' must be a non-empty string")
        if img["file_name"] in names:
            raise DataError(
                f"{where}: file {img['file_name']!r} is listed twice (also image id "
                f"{names[img['file_name']]})"
            )
        if not all(
            isinstance(img[key], int) and not isinstance(img[key], bool) and img[key] > 0
            for key in ("width", "height")
        ):
            raise DataError(
                f"{where}: 'width' and 'height' must be positive integers, got "
                f"{img['width']!r} x {img['height']!r}"
            )
        images[img["id"]] = img
        names[img["file_name"]] = img["id"]
    return images


def load_coco(
    json_path: Path | str, images_dir: Path | str | None = None, warnings: list[str] | None = None
) -> tuple[list[Sample], dict[int, str]]:
    """Read a COCO instances JSON into samples (annotation order kept) and the category id → name map.

    Image files are looked up as ``images_dir / file_name`` (default: the JSON's folder, then its
    ``images/`` sub-folder). Images are not opened here; `Sample.load_image` checks their size (and
    `harness.dataset.validate` checks every image). Errors name the file and the item; tolerable problems
    (an image without annotations, vertices a fraction outside the image) are appended to ``warnings``,
    stored per image in ``Sample.extra["warnings"]`` and logged as one counted line.
    """
    json_path = Path(json_path)
    data = read_json(json_path)
    if not isinstance(data, dict):
        raise DataError(
            f"{json_path}: top level must be a JSON object with 'images', 'annotations', 'categories'"
        )
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            state = "missing" if key not in data else f"not a list ({type(data[key]).__name__})"
            raise DataError(f"{json_path}: key '{key}' is {state}; is this a COCO instances file?")
    categories = _categories(data, json_path)
    images = _images(data, json_path)
    base = Path(images_dir) if images_dir is not None else None

    per_image: dict[Any, list[Instance]] = {i: [] for i in images}
    per_image_warnings: dict[Any, list[str]] = {i: [] for i in images}
    seen_ann: set[Any] = set()
    extent = [0, 0.0]  # polygon annotations seen, largest coordinate
    for index, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict):
            raise DataError(f"{json_path}: annotations[{index}] is {type(ann).__name__}, not an object")
        ann_id = ann.get("id", f"#{index}")
        img = images.get(ann.get("image_id"))
        where = f"{json_path}: annotation id {ann_id}" + (f" (image {img['file_name']!r})" if img else "")
        missing = [key for key in ("image_id", "category_id", "segmentation") if key not in ann]
        if missing:
            raise DataError(
                f"{where}: missing key(s) {', '.join(missing)}; annotations need "
                "'image_id', 'category_id', 'segmentation'"
            )
        if "id" in ann:
            if ann_id in seen_ann:
                raise DataError(f"{where}: duplicate annotation id {ann_id}")
            seen_ann.add(ann_id)
        if img is None:
            raise DataError(f"{where}: refers to image id {ann['image_id']!r}, which is not in 'images'")
        if ann["category_id"] not in categories:
            raise DataError(
                f"{where}: unknown category id {ann['category_id']!r}; known ids: "
                f"{', '.join(f'{k} ({v})' for k, v in sorted(categories.items(), key=lambda kv: str(kv[0])))}"
            )
        geometry = parse_segmentation(
            ann["segmentation"], where, img["height"], img["width"], per_image_warnings[img["id"]]
        )
        if "polygons" in geometry:
            extent[0] += 1
            extent[1] = max(extent[1], *(float(part.max()) for part in geometry["polygons"]))
        score = ann.get("score")
        if score is not None and (not _is_number(score) or not math.isfinite(score)):
            raise DataError(f"{where}: 'score' must be a finite number, got {score!r}")
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

    smallest = min((min(img["width"], img["height"]) for img in images.values()), default=0)
    if extent[0] and extent[1] <= 1.0 < smallest:
        raise DataError(
            f"{json_path}: all {extent[0]} polygon annotations lie within 0..1 (largest coordinate "
            f"{extent[1]:g}) on images of {smallest}+ px: the coordinates look normalised (YOLO style). COCO "
            "polygons are in pixels: multiply x by the image width and y by its height"
        )
    samples = []
    found: list[str] = []
    for image_id, img in images.items():
        notes = per_image_warnings[image_id]
        if not per_image[image_id]:
            notes.append(f"{json_path}: image id {image_id} ({img['file_name']!r}) has no annotations")
        found.extend(notes)
        samples.append(
            Sample(
                image_path=image_path_of(json_path, base, img["file_name"]),
                height=img["height"],
                width=img["width"],
                instances=tuple(per_image[image_id]),
                image_id=image_id,
                file_name=img["file_name"],
                extra={"warnings": notes} if notes else {},
            )
        )
    if warnings is not None:
        warnings.extend(found)
    if found:
        logger.warning("%s: %d warning(s), first: %s", json_path, len(found), found[0])
    logger.info("%s: %d images, %d annotations", json_path, len(samples), len(data["annotations"]))
    return samples, categories


def image_path_of(json_path: Path, images_dir: Path | None, file_name: str) -> Path:
    """Where the image `file_name` of a COCO file is: under `images_dir`, else beside the JSON or in ``images/``."""
    if images_dir is not None:
        return images_dir / file_name
    for candidate in (json_path.parent / file_name, json_path.parent / "images" / file_name):
        if candidate.exists():
            return candidate
    return json_path.parent / file_name
