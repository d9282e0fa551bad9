"""Datasets laid out one folder per image (Usiigaci's ``setNN/raw.tif``, cellpose/BBBC exports): every output is
named by the image's path relative to the dataset, so nothing collides on ``raw``. Built from the bundled
sample, which is that dataset re-laid flat: here it is put back into its original layout."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile

from harness.cli import main
from harness.coco import load_coco
from harness.convert import label_map
from harness.records import Sample

SETS = ("set18", "set30")


@pytest.fixture(scope="module")
def per_folder(tmp_path_factory: pytest.TempPathFactory, sample_dir: Path) -> Path:
    """``root/set18/raw.tif``, ``root/set30/raw.tif`` and ``root/coco.json`` listing them as such."""
    root = tmp_path_factory.mktemp("usiigaci")
    src = sample_dir / "spec" / "train"
    coco = json.loads((src / "annotations.coco.json").read_text())
    images = [img for img in coco["images"] if Path(img["file_name"]).stem in SETS]
    ids = {img["id"] for img in images}
    for img in images:
        stem = Path(img["file_name"]).stem
        (root / stem).mkdir()
        shutil.copy(src / "images" / img["file_name"], root / stem / "raw.tif")
        img["file_name"] = f"{stem}/raw.tif"
    coco = {**coco, "images": images, "annotations": [a for a in coco["annotations"] if a["image_id"] in ids]}
    (root / "coco.json").write_text(json.dumps(coco))
    return root


def test_sample_names_are_relative_paths_made_flat() -> None:
    assert Sample(Path("/d/set26/raw.tif"), 8, 8, file_name="set26/raw.tif").name == "set26__raw"
    assert Sample(Path("/d/a.tif"), 8, 8, file_name="a.tif").name == "a"
    assert Sample(Path("/d/a.b.tif"), 8, 8).name == "a.b"


def test_label_maps_of_a_per_folder_dataset(per_folder: Path, sample_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "labels"
    assert (
        main(
            [
                "data",
                "convert",
                "--coco",
                str(per_folder / "coco.json"),
                "--to",
                "labelmaps",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert sorted(p.name for p in out.glob("*.tif")) == ["set18__raw.tif", "set30__raw.tif"]
    flat, _ = load_coco(sample_dir / "spec" / "train" / "annotations.coco.json")
    for sample in flat:
        if sample.name in SETS:  # the same pixels as the flat layout gives
            expected, _ = label_map(sample)
            assert np.array_equal(tifffile.imread(out / f"{sample.name}__raw.tif"), expected)


def test_yolo_export_of_a_per_folder_dataset(per_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "yolo"
    assert (
        main(["data", "convert", "--coco", str(per_folder / "coco.json"), "--to", "yolo", "--out", str(out)])
        == 0
    )
    samples, _ = load_coco(per_folder / "coco.json")
    for sample in samples:
        lines = (out / "labels" / "train" / f"{sample.name}.txt").read_text().splitlines()
        assert len(lines) == sum(i.area > 0 for i in sample.instances)
        assert (out / "images" / "train" / f"{sample.name}.png").is_file()


def test_predict_then_evaluate_a_per_folder_dataset(per_folder: Path, tmp_path: Path) -> None:
    pred = tmp_path / "pred"
    images = [str(per_folder / s / "raw.tif") for s in SETS]
    assert (
        main(
            [
                "predict",
                "--model",
                "classical",
                "--images",
                *images,
                "--out",
                str(pred),
                "--labels",
                "--category",
                "cell",
            ]
        )
        == 0
    )
    written = json.loads((pred / "predictions.json").read_text())
    assert [i["file_name"] for i in written["images"]] == ["set18/raw.tif", "set30/raw.tif"]
    assert sorted(p.name for p in (pred / "labels").glob("*.tif")) == ["set18__raw.tif", "set30__raw.tif"]
    assert (
        main(
            [
                "evaluate",
                "--gt",
                str(per_folder / "coco.json"),
                "--pred",
                str(pred / "predictions.json"),
                "--out",
                str(tmp_path / "eval"),
            ]
        )
        == 0
    )
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["settings"]["pairing"] == "file_name"
    assert metrics["settings"]["gt_images_without_predictions"] == []  # both images paired by their paths
    assert metrics["targets"]["cell"]["n_images"] == 2
