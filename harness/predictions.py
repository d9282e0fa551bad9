"""Predictions on disk: COCO instances JSON with RLE masks and scores (+ optional label TIFFs), and the readers.

Readers: a COCO *results* JSON (a list of ``image_id, category_id, segmentation, score``; it needs the ground
truth for image sizes and names) or a COCO *instances* JSON; plain, gzip-compressed or with a byte-order mark.
A COCO *instances* file (images with file names and sizes, categories, annotations with ``score``) is
self-describing, so `harness.coco.load_coco` reads it back and ``c6bench evaluate`` accepts it; any external
model's output in the same format is evaluated the same way. RLEs are encoded straight from each
instance's bounding-box crop: no full-image mask per instance.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness.coco import load_coco, parse_segmentation, read_json
from harness.errors import DataError
from harness.io import atomic_path, write_json
from harness.masks import crop_to_rle
from harness.records import Instance, Sample

logger = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class PredictionFile:
    """One predictions JSON of a run and what it predicts, recorded beside it in ``<stem>.models.json``.

    The bench writes ``predictions/<mode>/<unit>/<subset as one path component>[.<trial>].json``; the file
    name is for people: readers take mode, unit, subset and trial from the record (`record`, written with
    the file by `harness.run`), never from the name.
    """

    mode: str
    target: str  # the unit's name: the target it was trained for, or ``all``
    subset: str  # the dataset's ``part/split`` (``spec/test``)
    path: Path
    trial: str = ""  # a --seeds/--train-images trial (``s1-n4``), else empty

    @property
    def models_path(self) -> Path:
        """``<stem>.models.json``: what predicted (weights or checkpoints) and this record."""
        return models_path(self.path)

    def record(self) -> dict[str, str]:
        return {"mode": self.mode, "target": self.target, "subset": self.subset, "trial": self.trial}


def models_path(predictions: Path) -> Path:
    """The ``<stem>.models.json`` beside a predictions JSON."""
    return predictions.with_name(predictions.name.removesuffix(".json") + ".models.json")


def prediction_files(run_dir: Path) -> list[PredictionFile]:
    """Every predictions JSON of a run, with what its ``.models.json`` says it predicts (sorted by path)."""
    found = []
    for path in sorted((Path(run_dir) / "predictions").glob("*/*/*.json")):
        if path.name.endswith(".models.json"):
            continue
        models = models_path(path)
        record = read_json(models, "predictions record") if models.is_file() else {}
        if not isinstance(record, Mapping) or not all(isinstance(record.get(k), str) for k in ("mode", "target",
                                                                                             "subset")):
            raise DataError(f"{models}: does not record which mode, target and subset {path.name} predicts (a run "
                            "made before the harness recorded them); `c6bench report --no-figures` reads its "
                            "tables, or run the bench again into a new --out")
        found.append(PredictionFile(mode=record["mode"], target=record["target"], subset=record["subset"],
                                    path=path, trial=str(record.get("trial") or "")))
    return found


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
    """One label TIFF per image (``<Sample.name>.tif``; label k = k-th instance of the JSON, 0 = background)."""
    import tifffile

    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[Path, Sample] = {}
    for sample in samples:
        path = out_dir / f"{sample.name}.tif"
        if path in paths:
            raise DataError(f"{sample.image_path}: its label TIFF would be {path}, like that of "
                            f"{paths[path].image_path}; rename one of the two images")
        with atomic_path(path) as tmp:
            tifffile.imwrite(tmp, label_image(sample), compression="zlib", photometric="minisblack")
        paths[path] = sample
    return list(paths)


# --------------------------------------------------------------------------------------------- reading


def load_coco_results(path: Path | str, gt: Sequence[Sample], categories: Mapping[int, str],
                      data: Any = None) -> list[Sample]:
    """Read a COCO *results* JSON onto the ground truth's images (one prediction `Sample` per GT image).

    Each entry needs ``image_id`` (an id of `gt`), ``category_id`` (a key of `categories`, the GT's
    categories) and ``segmentation`` (RLE or polygons); ``score`` is optional. Box-only results are refused.
    """
    path = Path(path)
    data = read_json(path, "prediction file") if data is None else data
    if not isinstance(data, list):
        raise DataError(f"{path}: a COCO results file is a JSON list of detections")
    by_id = {s.image_id: s for s in gt}
    per_image: dict[Any, list[Instance]] = {i: [] for i in by_id}
    for k, entry in enumerate(data):
        where = f"{path}: result {k}"
        if not isinstance(entry, dict) or not {"image_id", "category_id"} <= entry.keys():
            raise DataError(f"{where}: each result needs 'image_id', 'category_id' and 'segmentation'")
        if "segmentation" not in entry:
            raise DataError(f"{where}: no 'segmentation' (box-only results cannot be scored by mask IoU)")
        sample = by_id.get(entry["image_id"])
        if sample is None:
            raise DataError(
                f"{where}: image_id {entry['image_id']!r} is not an image of the ground truth "
                f"(ids {sorted(by_id)[:10]}{' ...' if len(by_id) > 10 else ''})"
            )
        if entry["category_id"] not in categories:
            raise DataError(
                f"{where}: unknown category_id {entry['category_id']!r}; ground-truth category ids: "
                f"{sorted(categories)}"
            )
        score = entry.get("score")
        if score is not None and (not isinstance(score, (int, float)) or not math.isfinite(score)):
            raise DataError(f"{where}: 'score' must be a finite number, got {score!r}")
        geometry = parse_segmentation(entry["segmentation"], where, sample.height, sample.width)
        inst = Instance(
            category=categories[entry["category_id"]],
            height=sample.height,
            width=sample.width,
            order=len(per_image[entry["image_id"]]),
            score=None if score is None else float(score),
            source=where,
            **geometry,
        )
        per_image[entry["image_id"]].append(inst)
    if not data:
        logger.warning("%s: an empty results list (no detection on any of the %d images): every image counts as "
                       "predicting nothing", path, len(gt))
    logger.info("%s: %d results on %d images", path, len(data), sum(bool(v) for v in per_image.values()))
    return [s.with_instances(per_image[s.image_id]) for s in gt]


def load_predictions(
    path: Path | str, gt: Sequence[Sample], categories: Mapping[int, str]
) -> tuple[list[Sample], set[str] | None]:
    """Predictions from a COCO results JSON (a list) or a COCO instances JSON (an object).

    Returns the samples and the category names the file declares (None for a results file, whose
    category ids are the ground truth's).
    """
    path = Path(path)
    data = read_json(path, "prediction file")
    if isinstance(data, list):
        return load_coco_results(path, gt, categories, data), None
    samples, pred_categories = load_coco(path, predictions=True)
    if not samples:
        raise DataError(f"{path}: the prediction file lists no images ('images' is empty), so nothing can be "
                        f"scored against the {len(gt)} ground-truth images")
    return samples, set(pred_categories.values())
