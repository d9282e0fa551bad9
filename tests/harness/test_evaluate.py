"""`harness.evaluate` and `c6bench evaluate`: exact counts on a hand-built scene, the sample against itself,
written files, and the CLI end to end (edge cases and bad input: test_evaluate_inputs.py)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.coco import load_coco
from harness.dataset import CONFIG_DIR, load_dataset_config, load_split
from harness.evaluate import evaluate
from harness.evaluation import write_outputs
from harness.predictions import load_predictions
from evaluate_scene import REPO, SAMPLE_TEST, TARGETS, block, load_scene, scene  # noqa: F401 (fixture)


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
