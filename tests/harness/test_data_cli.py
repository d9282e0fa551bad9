"""`c6bench data validate|convert|fetch` end to end on the real sample and the fixture."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml

from harness.cli import main

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "glioma_mini"


def test_validate_sample_subprocess(sample_dir: Path, subprocess_env: dict[str, str]) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "harness", "data", "validate", "--data", str(sample_dir)],
        capture_output=True,
        text=True,
        env=subprocess_env,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == f"dataset sample at {sample_dir}"
    rows = [line.split() for line in lines[2:8]]
    assert rows == [
        ["spec/train", "cell", "3", "171", "28", "0"],
        ["spec/train", "(all)", "3", "171", "28"],
        ["spec/valid", "cell", "1", "76", "13", "0"],
        ["spec/valid", "(all)", "1", "76", "13"],
        ["spec/test", "cell", "2", "152", "37", "0"],
        ["spec/test", "(all)", "2", "152", "37"],
    ]
    assert [line.split() for line in lines[8:12]] == [  # per target (the sample's one target: cells)
        ["split", "target", "instances", "overlapping", "pairs", "of", "which", "between", "categories"],
        ["spec/train", "cells", "171", "28", "0"],
        ["spec/valid", "cells", "76", "13", "0"],
        ["spec/test", "cells", "152", "37", "0"],
    ]
    assert lines[12:] == ["problems: 0", "warnings: 0"]


def test_validate_reports_problems_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    shutil.copytree(FIXTURE, tmp_path / "g")
    tifffile.imwrite(
        tmp_path / "g" / "dataset" / "spec" / "valid" / "images" / "v1.tif", np.zeros((16, 16), np.uint8)
    )
    assert main(["data", "validate", "--data", str(tmp_path / "g"), "--json", str(tmp_path / "r.json")]) == 1
    out = capsys.readouterr().out
    assert "problems: 1" in out and "v1.tif: image is 16x16 (WxH) but the annotations say 64x48" in out
    assert "warnings: 1" in out and "image id 22 ('s2.tif') has no annotations" in out
    assert json.loads((tmp_path / "r.json").read_text())["problems"] == 1


@pytest.mark.parametrize(("rule", "kept", "dropped"), [("last", 151, 1), ("smallest", 152, 0)])
def test_convert_labelmaps_sample(
    sample_dir: Path, tmp_path: Path, rule: str, kept: int, dropped: int
) -> None:
    out = tmp_path / rule
    assert (
        main(
            [
                "data",
                "convert",
                "--data",
                str(sample_dir),
                "--split",
                "spec/test",
                "--to",
                "labelmaps",
                "--priority",
                rule,
                "--out",
                str(out),
            ]
        )
        == 0
    )
    out = out / "cells"  # one folder per target: the sample has one, cells
    report = json.loads((out / "conversion.json").read_text())
    assert report["totals"] == {
        "images": 2,
        "in": 152,
        "kept": kept,
        "dropped": dropped,
        "trimmed_pixels": report["totals"]["trimmed_pixels"],
        "warnings": 0,
    }
    set45 = tifffile.imread(out / "set45.tif")
    assert set45.dtype == np.uint16 and set45.shape == (1022, 1024)
    assert set45.max() == report["images"]["set45.tif"]["kept"] == kept - 61
    assert len(np.unique(set45)) == kept - 61 + 1  # every kept label is present, plus background
    if dropped:
        assert report["images"]["set45.tif"]["dropped_detail"] == [
            {
                "order": 54,
                "category": "cell",
                "reason": "hidden: fully covered by other instances (rule last)",
                "pixels": 0,
            }
        ]


def test_convert_labelmaps_coco_with_categories(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    split = FIXTURE / "dataset" / "spec" / "train"
    assert (
        main(
            [
                "data",
                "convert",
                "--coco",
                str(split / "_annotations.coco.json"),
                "--images",
                str(split / "images"),
                "--to",
                "labelmaps",
                "--categories",
                "cell type A,soma",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    report = json.loads((tmp_path / "conversion.json").read_text())
    assert report["categories"] == ["cell type A", "soma"]
    # t1: A1, A2, S1 in; t2: the cell and its 9-px soma (dropped: below min_pixels)
    assert (report["images"]["t1.tif"]["kept"], report["images"]["t2.tif"]["kept"]) == (3, 1)
    assert (
        report["images"]["t2.tif"]["dropped_detail"][0]["reason"]
        == "below min_pixels=10 (9 px left, rule last)"
    )
    # A1 keeps 324 - 36 (under A2) - 16 (under S1) = 272 px; A2 256; S1 16
    assert np.bincount(tifffile.imread(tmp_path / "t1.tif").ravel()).tolist() == [48 * 64 - 544, 272, 256, 16]
    assert "t2.tif: instance 1 (soma) dropped: below min_pixels=10" in capsys.readouterr().out


def test_convert_yolo_sample(sample_dir: Path, tmp_path: Path) -> None:
    assert main(["data", "convert", "--data", str(sample_dir), "--to", "yolo", "--out", str(tmp_path)]) == 0
    data = yaml.safe_load((tmp_path / "data.yaml").read_text())
    assert data == {
        "path": str(tmp_path.resolve()),
        "train": "images/train",
        "val": "images/valid",
        "names": {0: "cells"},
    }
    lines = [
        ln for f in sorted((tmp_path / "labels" / "train").glob("*.txt")) for ln in f.read_text().splitlines()
    ]
    assert len(lines) == 171 and {ln.split()[0] for ln in lines} == {"0"}
    values = np.array([float(v) for ln in lines for v in ln.split()[1:]])
    assert values.min() >= 0 and values.max() <= 1
    from PIL import Image

    png = Image.open(tmp_path / "images" / "valid" / "set19.png")
    assert png.mode == "L" and png.size == (1024, 1022)


def test_convert_argument_errors(
    sample_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(["data", "convert", "--data", str(sample_dir), "--to", "labelmaps", "--out", str(tmp_path)]) == 2
    )
    assert "needs exactly one --split" in capsys.readouterr().err
    assert (
        main(
            [
                "data",
                "convert",
                "--data",
                str(FIXTURE),
                "--split",
                "spec/test",
                "--target",
                "nope",
                "--to",
                "labelmaps",
                "--out",
                str(tmp_path),
            ]
        )
        == 2
    )
    assert (
        "--target 'nope' is not defined for spec/test; targets: cells, type_a, type_b, soma"
        in capsys.readouterr().err
    )


def test_fetch_with_local_zip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with zipfile.ZipFile(tmp_path / "dataset.zip", "w") as archive:
        for file in sorted((FIXTURE / "dataset").rglob("*")):
            if file.is_file():
                archive.write(file, "dataset/" + file.relative_to(FIXTURE / "dataset").as_posix())
    dest = tmp_path / "glioma_c6"
    assert main(["data", "fetch", "--dest", str(dest), "--url", (tmp_path / "dataset.zip").as_uri()]) == 0
    out = capsys.readouterr().out
    assert f"Glioma C6 unpacked to {dest / 'dataset'}" in out and "problems: 0" in out
    assert "spec/train  (all)        2       8          3" in out


def test_fetch_offline_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "fetch", "--dest", str(tmp_path / "g")]) == 2
    assert "error: could not download https://zenodo.org/records/15083188" in capsys.readouterr().err
