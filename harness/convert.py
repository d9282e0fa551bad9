"""Conversions of overlapping instances: priority-resolved label maps and the YOLO-seg dataset tree.

Glioma C6 annotations overlap, but label maps (CellPose, MEDIAR, CellSeg1 training; label TIFFs; the
metrics' non-overlap mode) cannot. `resolve_priority` is the one place where overlaps are settled:

* ``last``  — annotation order, a later instance overwrites an earlier one (painter's order; default);
* ``first`` — an earlier instance wins;
* ``smallest`` — the smaller instance (by its own pixel area) wins, so nested shapes (a soma inside its cell)
  both survive; equal areas fall back to ``last``.

The instances are painted, in the rule's order, into **one int32 canvas per image** (each paint touches only
the instance's bounding box, never a full-image mask per instance). Each instance then keeps the pixels it
still owns; of those only the **largest connected piece** (8-connectivity, ties → the first piece in raster
order) is kept, and an instance left with fewer than ``min_pixels`` pixels is dropped with the reason
recorded. Pixels cut off with a smaller piece become background (they belong to nobody).

The YOLO export keeps overlaps (YOLO-seg learns one polygon per instance). Polygon instances are exported from
their own polygon parts; a multi-part annotation is **joined into one ring** by zero-width bridges (each part
is spliced into the ring at the closest pair of vertices), so every part survives and the bridges add no area.
RLE/mask instances are traced with `skimage.measure.find_contours` on their crop (outer boundary of each
connected piece, joined the same way; holes are not representable in a YOLO polygon and are filled).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import DataError
from harness.images import to_uint8
from harness.io import atomic_path, write_text
from harness.records import Instance, Sample

logger = logging.getLogger(__name__)

RULES = ("last", "first", "smallest")


@dataclass
class Resolution:
    """Result of `resolve_priority`: disjoint instances (annotation order) and what was dropped, and why."""

    instances: list[Instance]
    dropped: list[dict[str, Any]] = field(default_factory=list)
    n_in: int = 0
    trimmed_pixels: int = 0  # pixels lost by keeping only the largest connected piece

    def summary(self) -> dict[str, Any]:
        """JSON-ready counts for conversion reports."""
        return {
            "in": self.n_in,
            "kept": len(self.instances),
            "dropped": len(self.dropped),
            "dropped_detail": list(self.dropped),
            "trimmed_pixels": self.trimmed_pixels,
        }


def _check_rule(rule: str) -> None:
    if rule not in RULES:
        raise DataError(f"unknown priority rule {rule!r}; choose one of {', '.join(RULES)}")


def _paint_order(instances: Sequence[Instance], rule: str) -> list[int]:
    """Indices in painting order: whoever is painted last wins its pixels."""
    idx = list(range(len(instances)))
    if rule == "last":
        return idx
    if rule == "first":
        return idx[::-1]
    return sorted(idx, key=lambda i: (-instances[i].area, i))  # smallest painted last; ties: later wins


def largest_piece(crop: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of a boolean crop (first one in raster order on ties).

    Used here for the priority rule and by CellSeg1's mask generator (``min_mask_region_area``)."""
    from skimage.measure import label

    labels, n = label(crop, connectivity=2, return_num=True)
    if n <= 1:
        return crop
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def resolve_priority(
    instances: Sequence[Instance], height: int, width: int, rule: str = "last", min_pixels: int = 10
) -> Resolution:
    """Make overlapping instances disjoint by `rule` (module docstring); keep their order/category/score.

    ``dropped`` entries are ``{"order", "category", "reason", "pixels"}`` where ``pixels`` is what was left.
    """
    _check_rule(rule)
    instances = list(instances)
    canvas = np.zeros((height, width), dtype=np.int32)
    for i in _paint_order(instances, rule):
        inst = instances[i]
        if inst.area == 0:
            continue
        y0, x0, y1, x1 = inst.bbox
        canvas[y0:y1, x0:x1][inst.crop] = i + 1
    kept: list[Instance] = []
    dropped: list[dict[str, Any]] = []
    trimmed = 0
    for i, inst in enumerate(instances):
        record = {"order": inst.order, "category": inst.category}
        if inst.area == 0:
            dropped.append({**record, "reason": "empty: rasterises to 0 pixels", "pixels": 0})
            continue
        y0, x0, y1, x1 = inst.bbox
        owned = inst.crop & (canvas[y0:y1, x0:x1] == i + 1)
        n_owned = int(owned.sum())
        if n_owned == 0:
            dropped.append(
                {**record, "reason": f"hidden: fully covered by other instances (rule {rule})", "pixels": 0}
            )
            continue
        piece = largest_piece(owned)
        n_piece = int(piece.sum())
        trimmed += n_owned - n_piece
        if n_piece < min_pixels:
            detail = f"{n_piece} px left" + (f" of {inst.area}" if n_piece != inst.area else "")
            dropped.append(
                {
                    **record,
                    "reason": f"below min_pixels={min_pixels} ({detail}, rule {rule})",
                    "pixels": n_piece,
                }
            )
            continue
        kept.append(
            Instance.from_mask(
                inst.category,
                y0,
                x0,
                piece,
                height,
                width,
                order=inst.order,
                score=inst.score,
                iscrowd=inst.iscrowd,
                source=inst.source,
            )
        )
    return Resolution(instances=kept, dropped=dropped, n_in=len(instances), trimmed_pixels=trimmed)


def label_map(sample: Sample, rule: str = "last", min_pixels: int = 10) -> tuple[np.ndarray, Resolution]:
    """int32 label map of a sample (0 = background, k = k-th kept instance) and its `Resolution`."""
    resolution = resolve_priority(
        sample.instances, sample.height, sample.width, rule=rule, min_pixels=min_pixels
    )
    labels = np.zeros((sample.height, sample.width), dtype=np.int32)
    for k, inst in enumerate(resolution.instances, start=1):
        y0, x0, y1, x1 = inst.bbox
        labels[y0:y1, x0:x1][inst.crop] = k
    return labels, resolution


def instances_from_label_map(
    labels: np.ndarray, category: str, scores: Mapping[int, float] | None = None
) -> list[Instance]:
    """One `Instance` per label value > 0 (bbox crops via `scipy.ndimage.find_objects`), in label order.

    ``order`` is the position in the returned list; ``score`` comes from ``scores[label]`` when given.
    """
    from scipy import ndimage

    labels = np.asarray(labels)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"label map must be a 2-D integer array, got {labels.dtype} of shape {labels.shape}")
    if labels.size and labels.min() < 0:
        raise DataError(f"label map has negative labels (min {labels.min()}); 0 is background, instances > 0")
    height, width = labels.shape
    out: list[Instance] = []
    for index, window in enumerate(ndimage.find_objects(labels)):
        if window is None:
            continue
        value = index + 1
        crop = labels[window] == value
        score = None if scores is None or value not in scores else float(scores[value])
        out.append(
            Instance.from_mask(
                category, window[0].start, window[1].start, crop, height, width, order=len(out), score=score
            )
        )
    return out


def instances_from_logits(labels: np.ndarray, logits: np.ndarray, category: str) -> list[Instance]:
    """`instances_from_label_map` scored by the mean of sigmoid(`logits`) over each instance's pixels.

    The score of flow-based models (cellpose, Cellpose-SAM, MEDIAR): their mean cell probability. Logits are
    clipped to ±50 first (float64), so no value overflows ``exp``.
    """
    from scipy import ndimage

    ids = np.unique(labels)
    ids = ids[ids > 0]
    if ids.size == 0:
        return []
    prob = 1.0 / (1.0 + np.exp(-np.clip(logits.astype(np.float64), -50.0, 50.0)))
    means = ndimage.mean(prob, labels=labels, index=ids)
    scores = {int(k): float(v) for k, v in zip(ids, means, strict=True)}
    return instances_from_label_map(labels, category, scores)


# --------------------------------------------------------------------------------------------- YOLO


def _ring_area(ring: np.ndarray) -> float:
    x, y = ring[:, 0], ring[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def join_parts(parts: Sequence[np.ndarray]) -> np.ndarray:
    """Join polygon parts (each ``(K, 2)``) into one ring with zero-width bridges.

    Start from the largest part; repeatedly take the remaining part closest to the ring and splice it in at
    the closest vertex pair: ``... r_i, p_j, p_j+1, ..., p_j-1, p_j, r_i, r_i+1 ...``.
    """
    parts = [np.asarray(p, dtype=np.float64) for p in parts if len(p) >= 3]
    if not parts:
        return np.zeros((0, 2))
    parts.sort(key=_ring_area, reverse=True)
    ring, rest = parts[0], parts[1:]
    while rest:
        best = None
        for k, part in enumerate(rest):
            d = ((ring[:, None, :] - part[None, :, :]) ** 2).sum(axis=-1)
            i, j = np.unravel_index(int(np.argmin(d)), d.shape)
            if best is None or d[i, j] < best[0]:
                best = (d[i, j], k, int(i), int(j))
        _, k, i, j = best
        part = rest.pop(k)
        loop = np.concatenate([np.roll(part, -j, axis=0), part[j : j + 1]])
        ring = np.concatenate([ring[: i + 1], loop, ring[i:]])
    return ring


def mask_outline(y0: int, x0: int, crop: np.ndarray) -> np.ndarray:
    """Outer boundary of a mask crop as one ring in pixel-corner image coordinates (x, y).

    Each 8-connected piece is traced with `find_contours` (level 0.5 on the zero-padded crop: the contour runs
    between pixel centres, i.e. through the pixel edges' midpoints once shifted by +0.5); pieces are joined.
    """
    from skimage.measure import find_contours, label

    pieces, n = label(crop, connectivity=2, return_num=True)
    rings = []
    for k in range(1, n + 1):
        padded = np.pad(pieces == k, 1).astype(np.float32)
        contours = find_contours(padded, 0.5)
        if not contours:
            continue
        outer = max(contours, key=lambda c: _ring_area(c[:, ::-1]))  # the outer boundary encloses the most
        # (row, col) in padded crop → (x, y) pixel-corner: col - 1 + x0 + 0.5
        rings.append(np.stack([outer[:, 1] - 0.5 + x0, outer[:, 0] - 0.5 + y0], axis=1))
    return join_parts(rings)


def instance_polygon(inst: Instance) -> np.ndarray:
    """The YOLO polygon of an instance (pixel-corner x, y): its polygon parts joined, or its traced mask."""
    if inst.polygons:
        return join_parts(inst.polygons)
    if inst.area == 0:
        return np.zeros((0, 2))
    y0, x0, _, _ = inst.bbox
    return mask_outline(y0, x0, inst.crop)


def _label_lines(sample: Sample, class_index: Mapping[str, int]) -> tuple[list[str], int]:
    lines, skipped = [], 0
    for inst in sample.instances:
        if inst.category not in class_index:
            raise DataError(
                f"{sample.image_path}: instance {inst.order} has category {inst.category!r}, not one of the "
                f"YOLO classes {list(class_index)}; rename instances to the classes before exporting"
            )
        ring = instance_polygon(inst)
        if len(ring) < 3:
            logger.warning(
                "%s: instance %d has no pixels; not written to the YOLO labels", sample.name, inst.order
            )
            skipped += 1
            continue
        xy = np.clip(ring / np.array([sample.width, sample.height], dtype=np.float64), 0.0, 1.0)
        coords = " ".join(f"{v:.6f}" for v in xy.ravel())
        lines.append(f"{class_index[inst.category]} {coords}")
    return lines, skipped


#: zlib level of the exported PNGs (lossless at any level): at 2592×1944, level 1 writes in 0.33 s what the
#: default 6 writes in 1.2 s, for 20 % more bytes (75 images: ~25 s instead of ~85 s).
PNG_LEVEL = 1


def _write_png(path: Path, image: np.ndarray) -> None:
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG", compress_level=PNG_LEVEL)


def write_yolo_dataset(splits: Mapping[str, Sequence[Sample]], out_dir: Path, classes: Sequence[str]) -> Path:
    """Write an ultralytics YOLO-seg tree and return the absolute path of its ``data.yaml``.

    ``images/<split>/<stem>.png`` (8-bit; 16-bit or float images percentile-normalised by `to_uint8`),
    ``labels/<split>/<stem>.txt`` (``class x1 y1 x2 y2 ...`` normalised to [0, 1], one line per instance,
    overlaps kept). ``data.yaml`` has ``path`` (absolute), one key per split (``valid`` written as ``val``),
    and ``names``. A summary per split goes to ``export.json``.
    """
    import yaml
    from tqdm import tqdm

    out_dir = Path(out_dir).resolve()
    classes = list(classes)
    if not classes or len(set(classes)) != len(classes):
        raise DataError(f"YOLO classes must be a non-empty list of unique names, got {classes}")
    class_index = {c: k for k, c in enumerate(classes)}
    summary: dict[str, Any] = {}
    yaml_splits: dict[str, str] = {}
    for split, samples in splits.items():
        key = "val" if split == "valid" else split
        (out_dir / "images" / split).mkdir(parents=True, exist_ok=True)
        (out_dir / "labels" / split).mkdir(parents=True, exist_ok=True)
        seen: dict[str, Path] = {}
        n_lines = n_skipped = 0
        for sample in tqdm(samples, desc=f"yolo {split}", unit="img"):
            if sample.name in seen:
                raise DataError(
                    f"{sample.image_path}: its YOLO files would be named {sample.name!r}, like those of "
                    f"{seen[sample.name]} in split {split!r}; rename one of the two images"
                )
            seen[sample.name] = sample.image_path
            lines, skipped = _label_lines(sample, class_index)
            _write_png(out_dir / "images" / split / f"{sample.name}.png", to_uint8(sample.load_image()))
            write_text(out_dir / "labels" / split / f"{sample.name}.txt", "".join(f"{ln}\n" for ln in lines))
            n_lines += len(lines)
            n_skipped += skipped
        yaml_splits[key] = f"images/{split}"
        summary[split] = {"images": len(samples), "instances": n_lines, "skipped_empty": n_skipped}
    data = {"path": str(out_dir), **yaml_splits, "names": dict(enumerate(classes))}
    data_yaml = out_dir / "data.yaml"
    write_text(data_yaml, yaml.safe_dump(data, sort_keys=False))
    write_text(out_dir / "export.json", json.dumps({"classes": classes, "splits": summary}, indent=2) + "\n")
    logger.info(
        "YOLO dataset written to %s (%s)",
        out_dir,
        ", ".join(f"{s}: {v['images']} images, {v['instances']} instances" for s, v in summary.items()),
    )
    return data_yaml


def overlapping_pairs(instances: Sequence[Instance]) -> list[tuple[int, int]]:
    """Pairs ``(i, j)``, ``i < j``, of instances sharing at least one pixel (bbox prefilter + crop AND)."""
    live = [k for k, inst in enumerate(instances) if inst.area > 0]
    if len(live) < 2:
        return []
    boxes = np.array([instances[k].bbox for k in live], dtype=np.int64)
    pairs = []
    for a in range(len(live) - 1):
        b = np.arange(a + 1, len(live))
        y0 = np.maximum(boxes[a, 0], boxes[b, 0])
        x0 = np.maximum(boxes[a, 1], boxes[b, 1])
        y1 = np.minimum(boxes[a, 2], boxes[b, 2])
        x1 = np.minimum(boxes[a, 3], boxes[b, 3])
        for k in np.flatnonzero((y1 > y0) & (x1 > x0)):
            i, j = instances[live[a]], instances[live[b[k]]]
            (iy, ix, _, _), (jy, jx, _, _) = i.bbox, j.bbox
            win_i = i.crop[y0[k] - iy : y1[k] - iy, x0[k] - ix : x1[k] - ix]
            win_j = j.crop[y0[k] - jy : y1[k] - jy, x0[k] - jx : x1[k] - jx]
            if (win_i & win_j).any():
                pairs.append((live[a], live[b[k]]))
    return pairs
