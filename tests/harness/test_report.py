"""`c6bench report` / `stats` on small run directories built from the real sample's ground truth."""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from harness import figures, report, results, runs
from harness.coco import load_coco
from harness.errors import DataError
from harness.io import write_json, write_text
from harness.predictions import PredictionFile
from harness.records import Instance
from metrics import scores

SUBSET = "spec/test"
DATASETS = Path(__file__).resolve().parents[2] / "configs" / "datasets"


def _rle_annotations(samples, keep) -> dict:
    from pycocotools import mask as mask_utils

    images, anns = [], []
    for s in samples:
        images.append({"id": s.image_id, "file_name": s.file_name, "width": s.width, "height": s.height})
        for k, inst in enumerate(s.instances):
            if not keep(k):
                continue
            full = np.zeros((s.height, s.width), np.uint8, order="F")
            y0, x0, y1, x1 = inst.bbox
            full[y0:y1, x0:x1] = inst.crop
            rle = mask_utils.encode(full)
            rle["counts"] = rle["counts"].decode("ascii")
            anns.append({"id": len(anns) + 1, "image_id": s.image_id, "category_id": 1, "segmentation": rle,
                         "score": 0.9, "area": int(inst.area), "iscrowd": 0})
    return {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "cells"}]}


def _gt_modes() -> list[tuple[str, str | None]]:
    """GT modes the data layer supports: overlap always, priority-resolved once harness.convert exists."""
    try:
        import harness.convert  # noqa: F401
    except ImportError:
        return [("overlap", None)]
    return [("overlap", None), ("resolved", "last")]


def make_run(
    root: Path, name: str, model: str, drop_every: int, sample_dir: Path, bootstrap: int = 0
) -> Path:
    """A schema-correct run dir scored by the real `harness.evaluate`: predictions = the sample's test GT with
    every `drop_every`-th instance dropped (0 = none), plus a skipped fine-tuned row."""
    from harness.evaluate import evaluate

    gt, _ = load_coco(sample_dir / "spec" / "test" / "annotations.coco.json")
    keep = (lambda k: True) if drop_every == 0 else (lambda k: k % drop_every != 0)
    run = root / name
    predicts = PredictionFile(mode="zero_shot", target="cells", subset=SUBSET,
                              path=run / "predictions" / "zero_shot" / "cells" / "spec_test.json")
    write_json(predicts.path, _rle_annotations(gt, keep))  # run files: written as the harness writes
    write_json(predicts.models_path, {**predicts.record(), "models": [], "weights": []})
    pred, _ = load_coco(predicts.path)
    data = {"name": "sample", "root": str(sample_dir), "config": str(DATASETS / "sample.yaml")}  # as run.py writes
    write_text(run / "config.yaml", yaml.safe_dump({"model": model, "data": data, "profile": "quick"}))
    write_json(run / "manifest.json", {"model": model, "device": "cpu", "git": "abc"})  # as run.py writes it
    metrics, per_image = {}, []
    for gt_mode, rule in _gt_modes():
        ev = evaluate(gt, pred, {"cells": ["cell"]}, {"cells": ["cells"]}, resolve_gt=rule,
                      bootstrap=bootstrap)
        metrics[gt_mode] = ev.to_dict()["targets"]["cells"]
        per_image += [{"mode": "zero_shot", "subset": SUBSET, "gt_mode": gt_mode, **r}
                      for r in ev.per_image_rows()]
    rows = [  # as `harness.run.Runner` writes them
        results.ResultRow(model=model, mode="zero_shot", target="cells", subset=SUBSET, status="ok",
                          init="pretrained", profile="quick", n_images=len(gt), metrics=metrics),
        results.ResultRow(model=model, mode="finetuned", target="cells", subset=SUBSET, status="skipped",
                          reason="weights cyto3 not found", profile="quick"),
    ]
    write_json(run / "results.json", {"rows": [row.to_dict() for row in rows]})
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(per_image[0]))
    writer.writeheader()
    writer.writerows(per_image)
    write_text(run / "per_image.csv", buffer.getvalue())
    return run


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, sample_dir: Path) -> tuple[Path, Path, dict]:
    runs = tmp_path_factory.mktemp("runs")
    make_run(runs, "20260101-000000_perfect", "perfect", 0, sample_dir)
    make_run(runs, "20260101-000001_dropper", "dropper", 3, sample_dir, bootstrap=200)
    out = tmp_path_factory.mktemp("reports")
    summary = report.generate_report([runs], out, n_boot=200)
    return runs, out, summary


def _results(runs: Path, model: str) -> dict:
    return json.loads(next(runs.glob(f"*_{model}")).joinpath("results.json").read_text())["rows"][0]


def test_tables_equal_results_json(built) -> None:
    runs, out, summary = built
    for gt_mode, number in (("overlap", "table2"), ("resolved", "table4")):
        table = json.loads((out / f"{number}.json").read_text())
        if gt_mode not in _results(runs, "perfect")["metrics"]:
            assert table["rows"] == []  # harness.convert not there yet: no priority-resolved numbers
            continue
        by_model = {r["model"]: r for r in table["rows"]}
        assert set(by_model) == {"perfect", "dropper"}
        for model in by_model:
            pooled = _results(runs, model)["metrics"][gt_mode]["pooled"]
            got = by_model[model]
            for column, threshold, key in results.SCORES:
                assert got[column] == round(100 * pooled[threshold][key], 1), (number, model, column)
            assert (got["init"], got["profile"], got["n_images"]) == ("pretrained", "quick", 2)
        if gt_mode == "overlap":  # against priority-resolved GT the hidden nested cell becomes a false positive
            assert by_model["perfect"]["F1@0.5"] == 100.0 and by_model["perfect"]["AP@0.9"] == 100.0
        else:
            assert 99.0 < by_model["perfect"]["F1@0.5"] < 100.0
        assert by_model["perfect"]["F1@0.5 CI"] is None  # its run computed no interval
        ci = _results(runs, "dropper")["metrics"][gt_mode]["pooled"]["0.5"]["ci"]["f1"]
        assert by_model["dropper"]["F1@0.5 CI"] == [round(100 * ci[0], 1), round(100 * ci[1], 1)]
        assert 50.0 < by_model["dropper"]["F1@0.5"] < 90.0
        assert table["missing"] == [
            "dropper · finetuned · cells · spec/test: skipped — weights cyto3 not found",
            "perfect · finetuned · cells · spec/test: skipped — weights cyto3 not found",
        ]
        md = (out / f"{number}.md").read_text()
        d = by_model["dropper"]
        assert f"{d['F1@0.5']:.1f} [{d['F1@0.5 CI'][0]:.1f}, {d['F1@0.5 CI'][1]:.1f}]" in md
        assert "skipped — weights cyto3 not found" in md
        rows = list(csv.DictReader((out / f"{number}.csv").open()))
        perfect = f"{by_model['perfect']['F1@0.5']:.1f}"
        assert sorted(r["F1@0.5"] for r in rows) == sorted([perfect, f"{d['F1@0.5']:.1f}"])


def test_paired_comparison(built) -> None:
    runs, out, _ = built
    cmp = json.loads((out / "comparison.json").read_text())["rows"]
    modes = list(_results(runs, "perfect")["metrics"])
    assert [r["gt_mode"] for r in cmp] == sorted(modes)  # one pair per GT mode
    for row in cmp:
        assert {row["A"], row["B"]} == {"perfect zero_shot", "dropper zero_shot"}
        f1 = {m: _results(runs, m)["metrics"][row["gt_mode"]]["pooled"]["0.5"]["f1"]
              for m in ("perfect", "dropper")}
        a, b = (row["A"].split()[0], row["B"].split()[0])
        assert row["F1 A"] == round(100 * f1[a], 1) and row["F1 B"] == round(100 * f1[b], 1)
        assert row["ΔF1 (A−B)"] == round(100 * (f1[a] - f1[b]), 1)
        low, high = row["95% CI"]
        assert low <= row["ΔF1 (A−B)"] <= high


def test_paired_bootstrap_exact() -> None:
    a = np.array([[10, 0, 0], [5, 5, 0]])
    b = np.array([[10, 0, 0], [5, 5, 0]])
    res = scores.paired_f1_bootstrap(a, b, n_boot=100)
    assert res["diff"] == 0.0 and res["ci_low"] == 0.0 and res["ci_high"] == 0.0
    assert res["f1_a"] == pytest.approx(30 / 35)
    c = np.array([[10, 0, 0], [0, 0, 10]])
    res = scores.paired_f1_bootstrap(a, c, n_boot=500, seed=1)
    assert res["diff"] == pytest.approx(30 / 35 - 20 / 30)
    with pytest.raises(ValueError):
        scores.paired_f1_bootstrap(a, a[:1])


def test_pngs_decode_with_expected_size(built) -> None:
    _, out, summary = built
    pngs = sorted(out.rglob("*.png"))
    names = {p.name for p in pngs}
    expected = {"contact_sheet.png", "zero_shot_cells_spec-test_set28.png", "morphology_cells_spec-test.png"}
    assert expected <= names
    assert len(pngs) == summary["figures"] == 2 * 2 + 1  # 2 overlays + 2 sheets + 1 morphology
    for path in pngs:
        with Image.open(path) as im:
            im.load()
            assert im.format == "PNG" and im.mode in ("RGB", "RGBA")
            width, height = im.size
        if path.parent.name != "morphology" and path.name != "contact_sheet.png":
            # full panel 512 px (1024/2) + zoom panel 512 px (256*2) + axes, legend, title
            assert 1024 < width < 1400 and 512 < height < 760, (path, im.size)
        if path.name == "contact_sheet.png":
            # one row of two 320 px tiles
            assert 600 < width < 800 and 300 < height < 520, (path, im.size)


def test_html_is_self_contained(built) -> None:
    _, out, summary = built
    page = (out / "report.html").read_text()
    assert "Table 2" in page and "Table 4" in page and "Paired comparison" in page
    assert "Missing or skipped rows" in page and "weights cyto3 not found" in page
    assert "<td>abc</td>" in page  # the manifest's git hash, under the key run.py writes
    assert page.count("data:image/png;base64,") == summary["figures"]
    assert not re.search(r"src=\"(?!data:)", page)  # nothing loaded from elsewhere


def test_overlay_borders_come_from_crops() -> None:
    crop = np.zeros((6, 6), bool)
    crop[1:5, 1:5] = True
    inst = Instance.from_mask("cells", 10, 20, crop, 40, 40)
    image8 = np.full((40, 40), 100, np.uint8)
    rgb = figures.overlay_rgb(image8, [inst], [inst])
    red = np.all(rgb == figures.PRED_COLOR, axis=-1)
    blue = np.all(rgb == figures.GT_COLOR, axis=-1)
    assert red.sum() == 12  # inner border of a 4x4 square
    assert blue.sum() == 16  # outer border (4-connected) of a 4x4 square
    assert red[11:15, 21:25].sum() == 12 and not red[12:14, 22:24].any()
    window, count = figures.densest_window([inst], 40, 40, 10)
    assert count == 1 and window[0] <= 12 < window[2] and window[1] <= 22 < window[3]


def test_cli_stats(tmp_path: Path, subprocess_env: dict[str, str], built) -> None:
    runs, _, _ = built
    out = tmp_path / "stats"
    run_dir = next(runs.glob("*_dropper"))
    res = subprocess.run([sys.executable, "-m", "harness", "stats", "--data", "sample", "--split", SUBSET,
                          "--run", str(run_dir), "--out", str(out)],
                         capture_output=True, text=True, env=subprocess_env, timeout=120)
    assert res.returncode == 0, res.stderr
    sizes = json.loads((out / "sizes.json").read_text())
    counts = {(r["class"], r["source"]): r["count"] for r in sizes}
    # dropper drops instances 0, 3, 6, ... of each test image: 21 of 61 and 31 of 91
    assert counts == {("cell", "ground truth"): 152, ("cells", "ground truth"): 152,
                      ("cells", "dropper zero_shot"): 100}
    for png in out.glob("*.png"):
        with Image.open(png) as im:
            assert im.size[0] > 300


def test_report_scores_against_the_data_the_run_read(tmp_path: Path, sample_dir: Path) -> None:
    """A run on a copy of a dataset elsewhere is reported against that copy, not the default folder of its name."""
    import shutil

    copy = tmp_path / "elsewhere" / "glioma"
    shutil.copytree(sample_dir / "spec", copy / "spec")
    run = make_run(tmp_path, "20260101-000002_copy", "copy", 0, copy)
    cfg = report.run_dataset(runs.load_run(run))
    assert (cfg.name, cfg.root) == ("sample", copy.resolve())
    write_text(run / "config.yaml", yaml.safe_dump({"model": "copy", "data": "sample"}))  # no root recorded
    with pytest.raises(DataError, match=r"config.yaml does not say which dataset \(data.config, data.root\)"):
        report.run_dataset(runs.load_run(run))


def test_prediction_files_are_read_from_their_record_not_their_name(tmp_path: Path) -> None:
    """The subset of a predictions file is what its ``.models.json`` records; a run without it is an error
    naming that file (no guess from ``spec_test`` back to ``spec/test``)."""
    from harness.predictions import prediction_files

    path = tmp_path / "predictions" / "finetuned" / "cells" / "odd_name.s1-n2.json"
    pf = PredictionFile(mode="finetuned", target="cells", subset="spec/test", path=path, trial="s1-n2")
    write_json(path, {"images": [], "annotations": [], "categories": []})
    write_json(pf.models_path, {"models": [], "weights": []})  # as main wrote it before the record
    with pytest.raises(DataError, match=r"odd_name.s1-n2.models.json: does not record which mode, target and "
                                        r"subset odd_name.s1-n2.json predicts"):
        prediction_files(tmp_path)
    write_json(pf.models_path, {**pf.record(), "models": [], "weights": []})
    assert prediction_files(tmp_path) == [pf]
