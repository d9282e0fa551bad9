"""The hand-built evaluation scene and small record builders shared by test_evaluate*.py.

Two images ("a.png" id 10, "b.png" id 3: non-consecutive, not sorted), categories 7 / 13 / 42; every expected
count in the tests follows from the boxes below.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from harness.coco import load_coco
from harness.predictions import load_coco_results
from harness.records import Instance, Sample

REPO = Path(__file__).resolve().parents[2]
SAMPLE_TEST = REPO / "data" / "sample" / "spec" / "test" / "annotations.coco.json"
H, W = 40, 50
CATEGORIES = [{"id": 7, "name": "cell type A"}, {"id": 13, "name": "cell type B"}, {"id": 42, "name": "soma"}]


def poly(y0: int, x0: int, y1: int, x1: int) -> list[list[float]]:
    """Rectangle covering rows y0..y1-1 and columns x0..x1-1 (COCO pixel-corner coordinates)."""
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def rle(y0: int, x0: int, y1: int, x1: int, h: int = H, w: int = W) -> dict[str, Any]:
    m = np.zeros((h, w), np.uint8, order="F")
    m[y0:y1, x0:x1] = 1
    out = mask_utils.encode(m)
    return {"size": out["size"], "counts": out["counts"].decode()}


# Image "a.png" has id 10, "b.png" id 3 (non-consecutive, not sorted); categories 7 / 13 / 42.
GT_ANNS = [  # (image_id, category_id, box)
    (10, 7, (5, 5, 15, 15)),  # GT1
    (10, 7, (8, 8, 18, 18)),  # GT2, overlaps GT1 by 7x7
    (10, 7, (30, 40, 38, 49)),  # GT3, last column 48 = W-2: dropped by the 2-px frame rule
    (10, 42, (20, 20, 26, 26)),  # GT4 (soma)
]
PRED_RESULTS = [  # (image_id, category_id, segmentation, score)
    (10, 7, poly(5, 5, 15, 15), 0.9),  # = GT1
    (10, 7, rle(8, 9, 18, 19), 0.8),  # GT2 shifted one column: IoU 90/110
    (10, 7, poly(30, 40, 38, 48), 0.7),  # near GT3 but inside the frame → kept: a FP at boundary 2
    (10, 42, rle(20, 20, 26, 27), 0.6),  # soma, IoU 36/42
    (3, 7, poly(10, 10, 14, 14), 0.5),  # image b has no GT at all → FP
]
TARGETS = {"type_a": ["cell type A"], "soma": ["soma"]}


def gt_coco() -> dict[str, Any]:
    return {
        "images": [
            {"id": 10, "file_name": "a.png", "width": W, "height": H},
            {"id": 3, "file_name": "b.png", "width": W, "height": H},
        ],
        "categories": CATEGORIES,
        "annotations": [
            {"id": 100 + k, "image_id": i, "category_id": c, "segmentation": poly(*box), "iscrowd": 0}
            for k, (i, c, box) in enumerate(GT_ANNS)
        ],
    }


def results() -> list[dict[str, Any]]:
    return [{"image_id": i, "category_id": c, "segmentation": s, "score": sc} for i, c, s, sc in PRED_RESULTS]


@pytest.fixture
def scene(tmp_path: Path) -> tuple[Path, Path]:
    gt_path, pred_path = tmp_path / "gt.json", tmp_path / "pred.json"
    gt_path.write_text(json.dumps(gt_coco()))
    pred_path.write_text(json.dumps(results()))
    return gt_path, pred_path


def load_scene(scene: tuple[Path, Path]) -> tuple[list[Sample], list[Sample]]:
    gt, categories = load_coco(scene[0])
    return gt, load_coco_results(scene[1], gt, categories)


def block(ev: dict[str, Any], target: str, t: str, kind: str = "pooled") -> dict[str, Any]:
    return ev["targets"][target][kind][t]


# --------------------------------------------------------------------------------------------- exact scene


def sample(
    name: str, instances: list[Instance], image_id: int | None = None, h: int = H, w: int = W
) -> Sample:
    return Sample(
        image_path=Path(name),
        height=h,
        width=w,
        instances=tuple(instances),
        image_id=image_id,
        file_name=name,
    )


def box(category: str, y0: int, x0: int, y1: int, x1: int, h: int = H, w: int = W) -> Instance:
    return Instance.from_mask(category, y0, x0, np.ones((y1 - y0, x1 - x0), bool), h, w)
