"""COCO instances JSON → `harness.records.Sample` / `Instance`: reading, validating, naming every bad item.

Errors name the file and the item (image id, annotation id) and say what to do; tolerable problems (an image
without annotations, vertices a fraction outside the image) are counted warnings. Geometry is validated
here and rasterised lazily (`harness.masks`).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import DataError
from harness.masks import checked_runs
from harness.records import Instance, Sample

logger = logging.getLogger(__name__)


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
    checked_runs(counts, height, width, where)
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
    json_path: Path | str, images_dir: Path | str | None = None, warnings: list[str] | None = None,
    predictions: bool = False,
) -> tuple[list[Sample], dict[int, str]]:
    """Read a COCO instances JSON into samples (annotation order kept) and the category id → name map.

    Image files are looked up as ``images_dir / file_name`` (default: the JSON's folder, then its
    ``images/`` sub-folder). Images are not opened here; `Sample.load_image` checks their size (and
    `harness.dataset.validate` checks every image). Errors name the file and the item; tolerable problems
    (an image without annotations, vertices a fraction outside the image) are appended to ``warnings``,
    stored per image in ``Sample.extra["warnings"]`` and logged as one counted line.

    ``predictions=True``: the file holds a model's predictions, where an image without instances is an
    answer (nothing found), not a gap in the annotations: it is counted, and a file with no instance at all
    says so in its own warning.
    """
    json_path = Path(json_path)
    data = read_json(json_path, "prediction file" if predictions else "annotation file")
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
        if not per_image[image_id] and not predictions:
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
    empty = sum(not s.instances for s in samples)
    if predictions and samples and empty == len(samples):
        logger.warning("%s: an empty prediction: no instance predicted on any of its %d image(s); every image "
                       "counts as predicting nothing", json_path, len(samples))
    elif predictions and empty:
        logger.info("%s: no instance predicted on %d of %d image(s)", json_path, empty, len(samples))
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
