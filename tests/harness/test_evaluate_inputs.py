"""`harness.evaluate` edge cases and bad input: empty sides, pairing, unknown images / sizes / categories,
settings and results entries, RLE runs against pycocotools, targets, the resolved GT mode."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from harness.coco import load_coco
from harness.dataset import CONFIG_DIR
from harness.errors import ConfigError, DataError
from harness.evaluate import evaluate
from harness.masks import checked_runs
from harness.predictions import load_coco_results
from harness.records import Instance, Sample
from harness.targets import targets_for
from evaluate_scene import H, W, box, poly, results, rle, sample, scene  # noqa: F401 (fixture)


def test_empty_gt_empty_predictions_and_both_empty() -> None:
    gt = [
        sample("g.png", [box("c", 5, 5, 10, 10), box("c", 20, 20, 30, 30)]),
        sample("p.png", []),
        sample("e.png", []),
    ]
    pred = [sample("g.png", []), sample("p.png", [box("c", 5, 5, 10, 10)]), sample("e.png", [])]
    ev = evaluate(gt, pred, {"c": ["c"]}).to_dict()["targets"]["c"]
    assert ev["pooled"]["0.5"] == {
        "tp": 0,
        "fp": 1,
        "fn": 2,
        "precision": 0.0,
        "recall": 0.0,
        "f1": 0.0,
        "ap": 0.0,
    }
    assert (ev["n_images_scored"], ev["n_images_empty"]) == (2, 1)
    assert ev["per_image_mean"]["0.5"]["f1"] == 0.0 and ev["per_image_mean"]["0.5"]["fn"] == 1.0
    nothing = evaluate([sample("e.png", [])], [], {"c": ["c"]})
    d = nothing.to_dict()
    assert d["targets"]["c"]["pooled"]["0.9"] == {
        "tp": 0,
        "fp": 0,
        "fn": 0,
        "precision": 0.0,
        "recall": 0.0,
        "f1": 0.0,
        "ap": 0.0,
    }
    assert d["targets"]["c"]["per_image_mean"]["0.9"]["f1"] is None
    assert d["settings"]["gt_images_without_predictions"] == ["e.png"]
    assert "nan" not in json.dumps(d).lower()


def test_missing_prediction_image_counts_every_gt_as_missed() -> None:
    gt = [sample("a.png", [box("c", 5, 5, 10, 10)]), sample("b.png", [box("c", 5, 5, 10, 10)])]
    ev = evaluate(gt, [sample("a.png", [box("c", 5, 5, 10, 10)])], {"c": ["c"]}).to_dict()
    assert ev["targets"]["c"]["pooled"]["0.5"]["fn"] == 1
    assert ev["settings"]["gt_images_without_predictions"] == ["b.png"]


def test_pairing_by_image_id_without_file_names() -> None:
    gt = [
        Sample(Path("x"), H, W, (box("c", 5, 5, 10, 10),), image_id=7),
        Sample(Path("y"), H, W, (box("c", 20, 20, 25, 25),), image_id=2),
    ]
    pred = [
        Sample(Path("q"), H, W, (box("c", 20, 20, 25, 25),), image_id=2),
        Sample(Path("r"), H, W, (box("c", 5, 5, 10, 10),), image_id=7),
    ]
    ev = evaluate(gt, pred, {"c": ["c"]}).to_dict()
    assert ev["settings"]["pairing"] == "image_id"
    assert ev["targets"]["c"]["pooled"]["0.5"]["tp"] == 2


def test_empty_masks_are_dropped_and_counted() -> None:
    empty = Instance.from_mask("c", 0, 0, np.zeros((3, 3), bool), H, W)
    gt = [sample("a.png", [box("c", 5, 5, 10, 10), empty])]
    pred = [sample("a.png", [box("c", 5, 5, 10, 10), empty])]
    ev = evaluate(gt, pred, {"c": ["c"]}, boundary=0).to_dict()["targets"]["c"]
    assert (ev["n_gt"], ev["n_pred"], ev["n_gt_empty"], ev["n_pred_empty"]) == (1, 1, 1, 1)
    assert ev["pooled"]["0.5"]["ap"] == 1.0


def test_pred_targets_map_other_category_names() -> None:
    gt = [sample("a.png", [box("cell type A", 5, 5, 10, 10), box("cell type B", 20, 20, 30, 30)])]
    pred = [sample("a.png", [box("type_a", 5, 5, 10, 10), box("type_b", 20, 20, 30, 30)])]
    ev = evaluate(
        gt,
        pred,
        {"cells": ["cell type A", "cell type B"], "type_a": ["cell type A"]},
        pred_targets={"cells": ["type_a", "type_b"], "type_a": ["type_a"]},
    ).to_dict()
    assert ev["targets"]["cells"]["pooled"]["0.5"]["tp"] == 2
    assert ev["targets"]["type_a"]["pooled"]["0.5"]["tp"] == 1
    assert ev["targets"]["type_a"]["pooled"]["0.5"]["fp"] == 0


# --------------------------------------------------------------------------------------------- bad input


def test_prediction_for_unknown_image() -> None:
    with pytest.raises(DataError, match="'c.png' is not in the ground truth"):
        evaluate([sample("a.png", [])], [sample("c.png", [])], {"c": ["c"]})


def test_prediction_with_other_image_size() -> None:
    with pytest.raises(DataError, match="'a.png' is 60x40 .* says 50x40"):
        evaluate([sample("a.png", [])], [sample("a.png", [], w=60)], {"c": ["c"]})


def test_prediction_with_unknown_category() -> None:
    pred = [sample("a.png", [box("c", 5, 5, 10, 10), box("dog", 5, 5, 10, 10)])]
    with pytest.raises(DataError, match="predicted category 'dog' .*instance 0"):
        evaluate([sample("a.png", [])], pred, {"c": ["c"]})


def test_duplicate_images_refused() -> None:
    with pytest.raises(DataError, match="two images share file_name 'a.png'"):
        evaluate([sample("a.png", [])], [sample("a.png", []), sample("a.png", [])], {"c": ["c"]})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"thresholds": (0.5, 0.0)}, r"\(0, 1\]"),
        ({"thresholds": (0.5, 0.5)}, "duplicate"),
        ({"boundary": -1}, "boundary"),
        ({"resolve_gt": "biggest"}, "unknown rule 'biggest'"),
        ({"bootstrap": -5}, "bootstrap"),
    ],
)
def test_bad_settings(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        evaluate([sample("a.png", [])], [], {"c": ["c"]}, **kwargs)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"image_id": 99, "category_id": 7, "segmentation": poly(1, 1, 3, 3)}, "image_id 99 is not an image"),
        ({"image_id": 10, "category_id": 5, "segmentation": poly(1, 1, 3, 3)}, "unknown category_id 5"),
        ({"image_id": 10, "category_id": 7, "bbox": [1, 1, 2, 2]}, "box-only"),
        ({"image_id": 10, "category_id": 7, "segmentation": [[1, 2, 3, 4, 5]]}, "odd number"),
        (
            {"image_id": 10, "category_id": 7, "segmentation": {"size": [H, W], "counts": "garbage!!"}},
            "invalid character",
        ),
        (
            {"image_id": 10, "category_id": 7, "segmentation": {"size": [H, W], "counts": "0000"}},
            "cover 0 pixels",
        ),
        ({"image_id": 10, "category_id": 7, "segmentation": rle(1, 1, 3, 3, h=H, w=W + 1)}, "does not match"),
        (
            {"image_id": 10, "category_id": 7, "segmentation": poly(1, 1, 3, 3), "score": "high"},
            "finite number",
        ),
    ],
)
def test_bad_results_entries(scene: tuple[Path, Path], entry: dict[str, Any], message: str) -> None:
    scene[1].write_text(json.dumps([*results(), entry]))
    gt, categories = load_coco(scene[0])
    with pytest.raises(DataError, match=f"result 5: .*{message}"):
        load_coco_results(scene[1], gt, categories)


def test_checked_runs_match_pycocotools() -> None:
    r = rle(3, 4, 30, 41)
    assert int(checked_runs(r["counts"], H, W, "x").sum()) == H * W
    with pytest.raises(DataError, match=rf"^x: RLE runs cover {H * W} pixels, the {W + 1}x{H} image has"):
        checked_runs(r["counts"], H, W + 1, "x")
    assert mask_utils.area({**r, "counts": r["counts"].encode()}) == 27 * 37


# --------------------------------------------------------------------------------------------- targets


def test_targets_for() -> None:
    glioma = CONFIG_DIR / "datasets" / "glioma_c6.yaml"
    cats = {"cell type A", "cell type B", "soma"}
    targets, pred_targets, skipped, paired = targets_for(cats, None, glioma)
    assert targets == {
        "cells": ("cell type A", "cell type B"),
        "type_a": ("cell type A",),
        "type_b": ("cell type B",),
        "soma": ("soma",),
    }
    assert pred_targets is None and skipped == {} and paired is None
    # A multiclass model names its classes like the targets: cells = type_a ∪ type_b.
    _, pred_targets, _, _ = targets_for(cats, {"type_a", "type_b", "soma"}, glioma)
    assert pred_targets == {
        "cells": ("type_a", "type_b"),
        "type_a": ("type_a",),
        "type_b": ("type_b",),
        "soma": ("soma",),
    }
    # A single-target model's file: only that target is evaluated, the others are skipped with a reason.
    targets, pred_targets, skipped, _ = targets_for(cats, {"cells"}, glioma)
    assert list(targets) == ["cells"] and pred_targets == {"cells": ("cells",)}
    assert set(skipped) == {"type_a", "type_b", "soma"}
    # Without a YAML every GT category is a target; the gen part is chosen for a GT with 'cell'.
    assert targets_for({"cell"}, None)[0] == {"cell": ("cell",)}
    assert targets_for({"cell"}, None, glioma)[0] == {"cells": ("cell",)}
    with pytest.raises(ConfigError, match="no part's targets fit"):
        targets_for({"neuron"}, None, glioma)
    # Real ambiguity stays an error: two prediction categories, none named like the one target.
    with pytest.raises(DataError, match="no prediction category fits"):
        targets_for({"cell"}, {"dog", "cat"})
    with pytest.raises(DataError, match="no prediction category fits"):
        targets_for({"cell type A", "cell type B"}, {"cells"})


def test_targets_for_pairs_one_category_each() -> None:
    """A model's output named by its target ('cells') vs a one-category COCO ('cell'): paired, with a note."""
    targets, pred_targets, skipped, paired = targets_for({"cell"}, {"cells"})
    assert (targets, pred_targets, skipped) == ({"cell": ("cell",)}, {"cell": ("cells",)}, {})
    assert paired == ("paired the only prediction category 'cells' with the only target 'cell' (ground truth "
                      "['cell']): each side holds one category")
    # Names that fit need no pairing note.
    assert targets_for({"cell"}, {"cell"})[3] is None


# --------------------------------------------------------------------------------------------- resolved GT


def test_resolved_gt_mode_nested_cells() -> None:
    big, small = box("c", 5, 5, 15, 15), box("c", 8, 8, 12, 12)
    big, small = replace(big, order=0), replace(small, order=1)  # painter's order: small drawn last
    ring = np.ones((10, 10), bool)
    ring[3:7, 3:7] = False
    preds = [sample("a.png", [Instance.from_mask("c", 5, 5, ring, H, W), box("c", 8, 8, 12, 12)])]
    gt = [sample("a.png", [big, small])]
    overlap = evaluate(gt, preds, {"c": ["c"]}).to_dict()["targets"]["c"]["pooled"]
    assert [overlap[t]["tp"] for t in ("0.5", "0.75", "0.9")] == [2, 2, 1]  # ring vs big: IoU 0.84
    for rule in ("last", "smallest"):  # the small cell stays on top: GT becomes ring + small
        ev = evaluate(gt, preds, {"c": ["c"]}, resolve_gt=rule).to_dict()
        assert [ev["targets"]["c"]["pooled"][t]["tp"] for t in ("0.5", "0.75", "0.9")] == [2, 2, 2]
        assert ev["settings"]["gt_mode"] == "resolved" and ev["settings"]["resolve_gt"] == rule
    first = evaluate(gt, [sample("a.png", [big])], {"c": ["c"]}, resolve_gt="first").to_dict()["targets"]["c"]
    assert first["n_gt_resolve_dropped"] == 1  # the small cell is hidden under the big one
    assert first["pooled"]["0.9"] == {
        "tp": 1,
        "fp": 0,
        "fn": 0,
        "precision": 1.0,
        "recall": 1.0,
        "f1": 1.0,
        "ap": 1.0,
    }
