"""`harness.evaluate` and `c6bench evaluate`: exact counts on a hand-built scene, the sample against itself,
prediction files (COCO results / instances), bad input, and the CLI end to end."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from harness.coco import load_coco
from harness.dataset import CONFIG_DIR, load_dataset_config, load_split
from harness.errors import ConfigError, DataError
from harness.evaluate import evaluate
from harness.evaluation import write_outputs
from harness.masks import checked_runs
from harness.predictions import load_coco_results, load_predictions
from harness.records import Instance, Sample
from harness.targets import targets_for

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


def test_scene_exact_counts(scene: tuple[Path, Path]) -> None:
    gt, pred = load_scene(scene)
    assert [i.area for i in gt[0].instances] == [100, 100, 72, 36]  # rectangles rasterise exactly
    ev = evaluate(gt, pred, TARGETS).to_dict()
    a = ev["targets"]["type_a"]
    assert (a["n_images"], a["n_gt"], a["n_pred"], a["n_gt_boundary"], a["n_pred_boundary"]) == (
        2,
        2,
        4,
        1,
        0,
    )
    # IoUs of type A on image a: GT1-P1 1.0, GT2-P2 0.818, GT1-P2 and GT2-P1 49/151, P3 unmatched.
    assert {k: block(ev, "type_a", "0.5")[k] for k in ("tp", "fp", "fn")} == {"tp": 2, "fp": 2, "fn": 0}
    assert block(ev, "type_a", "0.5")["precision"] == 0.5
    assert block(ev, "type_a", "0.5")["f1"] == pytest.approx(2 / 3, abs=1e-15)
    assert block(ev, "type_a", "0.75")["tp"] == 2
    assert {k: block(ev, "type_a", "0.9")[k] for k in ("tp", "fp", "fn", "ap")} == {
        "tp": 1,
        "fp": 3,
        "fn": 1,
        "ap": 0.2,
    }
    # Per image: a → P 2/3, R 1, F1 0.8, AP 2/3; b (only a prediction) → all 0.
    mean = block(ev, "type_a", "0.5", "per_image_mean")
    assert mean["f1"] == pytest.approx(0.4, abs=1e-15)
    assert mean["ap"] == pytest.approx(1 / 3, abs=1e-15)
    assert (a["n_images_scored"], a["n_images_empty"]) == (2, 0)
    # Soma: one pair IoU 36/42 = 0.857; image b has neither GT nor prediction → left out of the mean.
    s = ev["targets"]["soma"]
    assert (s["n_gt"], s["n_pred"], s["n_images_scored"], s["n_images_empty"]) == (1, 1, 1, 1)
    assert [block(ev, "soma", t)["tp"] for t in ("0.5", "0.75", "0.9")] == [1, 1, 0]
    assert block(ev, "soma", "0.9") == {
        "tp": 0,
        "fp": 1,
        "fn": 1,
        "precision": 0.0,
        "recall": 0.0,
        "f1": 0.0,
        "ap": 0.0,
    }
    assert block(ev, "soma", "0.5", "per_image_mean")["f1"] == 1.0
    assert ev["settings"]["pairing"] == "file_name"
    assert ev["settings"]["gt_images_without_predictions"] == []


@pytest.mark.parametrize(
    ("boundary", "tp", "fp", "fn", "n_gt_boundary"),
    [(0, 3, 1, 0, 0), (1, 3, 1, 0, 0), (2, 2, 2, 0, 1), (3, 2, 2, 0, 1)],
)
def test_scene_boundary_width(
    scene: tuple[Path, Path], boundary: int, tp: int, fp: int, fn: int, n_gt_boundary: int
) -> None:
    # GT3's last column is W-2: it goes at width 2 and 3, stays at 1 and 0 (then P3 matches it, IoU 64/72).
    # At width 3, P3 (last column W-3 = 47) touches the frame too: dropped on its own, as a prediction.
    gt, pred = load_scene(scene)
    ev = evaluate(gt, pred, TARGETS, boundary=boundary).to_dict()
    assert {k: block(ev, "type_a", "0.5")[k] for k in ("tp", "fp", "fn")} == {
        "tp": tp,
        "fp": fp - (boundary == 3),
        "fn": fn,
    }
    assert ev["targets"]["type_a"]["n_gt_boundary"] == n_gt_boundary
    assert ev["targets"]["type_a"]["n_pred_boundary"] == (1 if boundary == 3 else 0)
    assert ev["settings"]["boundary"] == boundary


def test_per_image_rows_and_written_files(scene: tuple[Path, Path], tmp_path: Path) -> None:
    gt, pred = load_scene(scene)
    evaluation = evaluate(gt, pred, TARGETS, thresholds=(0.5, 0.9))
    rows = evaluation.per_image_rows()
    assert len(rows) == 2 * 2 * 2  # targets × images × thresholds
    row = next(
        r for r in rows if r["target"] == "type_a" and r["image"] == "a.png" and r["threshold"] == "0.9"
    )
    assert (row["image_id"], row["n_gt"], row["n_pred"], row["tp"], row["fp"], row["fn"]) == (
        10,
        2,
        3,
        1,
        2,
        1,
    )
    metrics_path, csv_path = write_outputs(evaluation, tmp_path / "out")
    assert json.loads(metrics_path.read_text()) == json.loads(json.dumps(evaluation.to_dict()))
    with csv_path.open() as handle:
        written = list(csv.DictReader(handle))
    assert len(written) == 8 and written[0]["target"] == "type_a"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "metrics.json",
        "per_image.csv",
    ]  # no temp left


def test_bootstrap_is_reproducible_and_brackets_the_pooled_score(scene: tuple[Path, Path]) -> None:
    gt, pred = load_scene(scene)
    one = evaluate(gt, pred, TARGETS, bootstrap=200, seed=5).to_dict()
    two = evaluate(gt, pred, TARGETS, bootstrap=200, seed=5).to_dict()
    assert one == two
    b = block(one, "type_a", "0.5")
    # Two images: a = (2, 1, 0), b = (0, 1, 0) → replicates aa P 2/3, ab P 1/2, bb P 0.
    assert b["ci"]["precision"] == [0.0, pytest.approx(2 / 3, abs=1e-15)]
    assert one["settings"]["bootstrap"]["n"] == 200 and one["settings"]["bootstrap"]["seed"] == 5
    assert "ci" not in block(evaluate(gt, pred, TARGETS).to_dict(), "type_a", "0.5")


# ------------------------------------------------------------------------------------------ the real sample


def test_sample_gt_against_itself_is_exactly_one() -> None:
    cfg = load_dataset_config(CONFIG_DIR / "datasets" / "sample.yaml")
    samples = load_split(cfg, "spec/test")
    for boundary, n_gt in ((2, 138), (0, 152)):
        ev = evaluate(samples, samples, cfg.targets_of("spec/test"), boundary=boundary).to_dict()
        cells = ev["targets"]["cells"]
        assert (cells["n_images"], cells["n_gt"], cells["n_pred"]) == (2, n_gt, n_gt)
        for t in ("0.5", "0.75", "0.9"):
            assert cells["pooled"][t] == {
                "tp": n_gt,
                "fp": 0,
                "fn": 0,
                "precision": 1.0,
                "recall": 1.0,
                "f1": 1.0,
                "ap": 1.0,
            }
            assert cells["per_image_mean"][t]["ap"] == 1.0


def test_sample_gt_as_results_file_is_exactly_one(tmp_path: Path) -> None:
    """The annotations rewritten as a COCO results list (polygons + scores) read back onto the GT images."""
    raw = json.loads(SAMPLE_TEST.read_text())
    entries = [
        {
            "image_id": a["image_id"],
            "category_id": a["category_id"],
            "segmentation": a["segmentation"],
            "score": 1.0,
        }
        for a in raw["annotations"]
    ]
    (tmp_path / "res.json").write_text(json.dumps(entries))
    gt, categories = load_coco(SAMPLE_TEST)
    pred, declared = load_predictions(tmp_path / "res.json", gt, categories)
    assert declared is None
    ev = evaluate(gt, pred, {"cell": ["cell"]}).to_dict()
    assert [ev["targets"]["cell"]["pooled"][t]["ap"] for t in ("0.5", "0.75", "0.9")] == [1.0, 1.0, 1.0]
    assert ev["targets"]["cell"]["pooled"]["0.5"]["tp"] == 138


# --------------------------------------------------------------------------------------------- edge cases


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


# --------------------------------------------------------------------------------------------- CLI


def run_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness", "evaluate", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
    )


def test_cli_end_to_end(scene: tuple[Path, Path], tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    gt_path, pred_path = scene
    out = tmp_path / "eval"
    proc = run_cli(
        [
            "--gt",
            str(gt_path),
            "--pred",
            str(pred_path),
            "--out",
            str(out),
            "--bootstrap",
            "50",
            "--seed",
            "3",
            "--targets",
            str(CONFIG_DIR / "datasets" / "glioma_c6.yaml"),
        ],
        subprocess_env,
    )
    assert proc.returncode == 0, proc.stderr
    written = json.loads((out / "metrics.json").read_text())
    assert list(written["targets"]) == ["cells", "type_a", "type_b", "soma"]
    gt, pred = load_scene(scene)
    expected = evaluate(
        gt,
        pred,
        {
            "cells": ["cell type A", "cell type B"],
            "type_a": ["cell type A"],
            "type_b": ["cell type B"],
            "soma": ["soma"],
        },
        bootstrap=50,
        seed=3,
    ).to_dict()
    assert written["targets"] == json.loads(json.dumps(expected["targets"]))
    assert written["settings"]["pred_format"] == "coco_results"
    assert written["settings"]["thresholds"] == [0.5, 0.75, 0.9]
    assert written["targets"]["type_a"]["pooled"]["0.5"]["tp"] == 2
    with (out / "per_image.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == 4 * 2 * 3
    assert "type_a" in proc.stdout and "wrote" in proc.stdout
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("type_a") and " 0.5 " in ln)
    assert line.split()[5:8] == ["2", "2", "0"]  # TP FP FN


def test_cli_instances_predictions_and_error(
    scene: tuple[Path, Path], tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    gt_path, _ = scene
    out = tmp_path / "self"
    proc = run_cli(
        [
            "--gt",
            str(gt_path),
            "--pred",
            str(gt_path),
            "--out",
            str(out),
            "--thresholds",
            "0.5",
            "--boundary",
            "0",
        ],
        subprocess_env,
    )
    assert proc.returncode == 0, proc.stderr
    written = json.loads((out / "metrics.json").read_text())
    assert written["settings"]["pred_format"] == "coco_instances"
    assert {t: v["pooled"]["0.5"]["ap"] for t, v in written["targets"].items()} == {
        "cell type A": 1.0,
        "cell type B": 0.0,
        "soma": 1.0,
    }
    assert written["targets"]["cell type A"]["n_gt"] == 3
    bad = json.loads(gt_path.read_text())
    bad["images"][0]["file_name"] = "zzz.png"
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    proc = run_cli(
        ["--gt", str(gt_path), "--pred", str(tmp_path / "bad.json"), "--out", str(out)], subprocess_env
    )
    assert proc.returncode == 2
    assert "error:" in proc.stderr and "'zzz.png' is not in the ground truth" in proc.stderr


def test_cli_pairs_single_categories(
    scene: tuple[Path, Path], tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    """GT with the one category 'cell', predictions named by the target 'cells' (as `c6bench predict` writes
    them): scored without a dataset YAML, the pairing printed and recorded."""
    gt_path, _ = scene
    gt = json.loads(gt_path.read_text())
    gt["categories"] = [{"id": 7, "name": "cell"}]
    gt["annotations"] = [a for a in gt["annotations"] if a["category_id"] == 7]
    pred = {**gt, "categories": [{"id": 1, "name": "cells"}],
            "annotations": [{**a, "category_id": 1, "score": 0.9} for a in gt["annotations"]]}
    (tmp_path / "gt1.json").write_text(json.dumps(gt))
    (tmp_path / "pred1.json").write_text(json.dumps(pred))
    out = tmp_path / "paired"
    args = ["--gt", str(tmp_path / "gt1.json"), "--pred", str(tmp_path / "pred1.json"), "--out", str(out)]
    proc = run_cli([*args, "--boundary", "0"], subprocess_env)
    assert proc.returncode == 0, proc.stderr
    assert "note: paired the only prediction category 'cells' with the only target 'cell'" in proc.stdout
    written = json.loads((out / "metrics.json").read_text())
    assert written["settings"]["targets"] == {"cell": {"gt": ["cell"], "pred": ["cells"]}}
    assert written["settings"]["category_pairing"].startswith("paired the only prediction category 'cells'")
    pooled = written["targets"]["cell"]["pooled"]["0.5"]
    assert {k: pooled[k] for k in ("tp", "fp", "fn")} == {"tp": 3, "fp": 0, "fn": 0}
