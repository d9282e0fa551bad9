"""Predictions on disk: COCO instances JSON with RLE masks and scores (+ optional label TIFFs).

A COCO *instances* file (images with file names and sizes, categories, annotations with ``score``) is
self-describing, so `harness.data.load_coco` reads it back and ``c6bench evaluate`` accepts it; any external
model's output in the same format is evaluated the same way. RLEs are encoded straight from each
instance's bounding-box crop: no full-image mask per instance.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from harness.data import Instance, Sample
from harness.io import write_json

logger = logging.getLogger(__name__)


def crop_to_rle(instance: Instance) -> dict[str, Any]:
    """Compressed COCO RLE of an instance, computed from its crop (column-major runs over the full image)."""
    from pycocotools import mask as mask_utils

    height, width = instance.height, instance.width
    y0, x0, _, _ = instance.bbox
    cols, rows = np.nonzero(instance.crop.T)  # column-major order, as COCO RLE
    if cols.size == 0:
        counts = [height * width]
    else:
        index = (x0 + cols).astype(np.int64) * height + (y0 + rows)
        breaks = np.flatnonzero(np.diff(index) != 1)
        starts = np.concatenate([index[:1], index[breaks + 1]])
        ends = np.concatenate([index[breaks], index[-1:]]) + 1
        gaps = starts - np.concatenate([[0], ends[:-1]])
        counts = np.empty(2 * len(starts) + 1, dtype=np.int64)
        counts[0:-1:2] = gaps
        counts[1::2] = ends - starts
        counts[-1] = height * width - ends[-1]
        counts = counts.tolist()
    rle = mask_utils.frPyObjects({"counts": counts, "size": [height, width]}, height, width)
    return {"size": [height, width], "counts": rle["counts"].decode("ascii")}


def to_coco(samples: Sequence[Sample], categories: Sequence[str]) -> dict[str, Any]:
    """COCO instances dict of predicted samples (category ids 1..n in the given order)."""
    cat_ids = {name: k + 1 for k, name in enumerate(categories)}
    images, annotations = [], []
    for image_id, sample in enumerate(samples, start=1):
        images.append({"id": sample.image_id if sample.image_id is not None else image_id,
                       "file_name": sample.file_name or sample.image_path.name,
                       "width": sample.width, "height": sample.height})
        for inst in sample.instances:
            if inst.area == 0:
                continue
            y0, x0, y1, x1 = inst.bbox
            annotations.append({
                "id": len(annotations) + 1, "image_id": images[-1]["id"], "category_id": cat_ids[inst.category],
                "segmentation": crop_to_rle(inst), "area": inst.area, "bbox": [x0, y0, x1 - x0, y1 - y0],
                "iscrowd": 0, "score": None if inst.score is None else float(inst.score),
            })
    return {"images": images, "annotations": annotations,
            "categories": [{"id": i, "name": n} for n, i in cat_ids.items()]}


def write_predictions(path: Path, samples: Sequence[Sample], categories: Sequence[str]) -> Path:
    """Write predicted samples as a COCO instances JSON."""
    write_json(path, to_coco(samples, categories))
    return path


def label_image(sample: Sample) -> np.ndarray:
    """Painter's-order label map (higher score painted last, so it wins overlaps) for napari/Fiji."""
    labels = np.zeros((sample.height, sample.width), dtype=np.int32)
    order = sorted(range(len(sample.instances)), key=lambda k: sample.instances[k].score or 0.0)
    for k in order:
        inst = sample.instances[k]
        y0, x0, y1, x1 = inst.bbox
        labels[y0:y1, x0:x1][inst.crop] = k + 1
    return labels


def write_label_tiffs(out_dir: Path, samples: Sequence[Sample]) -> list[Path]:
    """One label TIFF per image (``<stem>.tif``; label k = k-th instance of the JSON, 0 = background)."""
    import tifffile

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for sample in samples:
        path = out_dir / f"{sample.name}.tif"
        tifffile.imwrite(path, label_image(sample), compression="zlib")
        paths.append(path)
    return paths
