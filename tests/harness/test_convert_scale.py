"""`c6bench data convert` at the dataset's scale (issue 19): splits that share a name, gen's `cell` in YOLO,
ultralytics's `val`, label maps per target with their label → instance record, and capped drop listings.

YOLO cases run the real CLI on the small seeded replica (`benchmarks.replica.SMALL`), whose expected counts
are known by construction; label-map cases on a tiny hand-built dataset with exact pixel counts.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
import yaml

from benchmarks import replica

REPO = Path(__file__).resolve().parents[2]
H, W = 40, 50


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("replica")
    return out, replica.generate(out, replica.SMALL, seed=5)


def convert(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness", "data", "convert", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=300,
    )


def class_lines(folder: Path) -> Counter[str]:
    """YOLO label lines per class index over every label file of a split folder."""
    return Counter(ln.split()[0] for f in folder.glob("*.txt") for ln in f.read_text().splitlines())


# --------------------------------------------------------------------------------------------- YOLO


def test_yolo_splits_sharing_a_name_both_written(
    small: tuple[Path, dict[str, Any]], tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    """spec/test and gen/test are both 'test': written as spec_test and gen_test, neither overwriting."""
    root, expected = small
    spec, gen = expected["splits"]["spec/test"]["instances"], expected["splits"]["gen/test"]["instances"]
    proc = convert(
        [
            "--data",
            str(root),
            "--to",
            "yolo",
            "--split",
            "spec/test",
            "--split",
            "gen/test",
            "--classes",
            "cells",
            "soma",
            "--out",
            str(tmp_path),
        ],
        subprocess_env,
    )
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / "labels").iterdir()) == ["gen_test", "spec_test"]
    assert class_lines(tmp_path / "labels" / "spec_test") == {
        "0": spec["cell type A"] + spec["cell type B"],
        "1": spec["soma"],
    }
    assert class_lines(tmp_path / "labels" / "gen_test") == {"0": gen["cell"]}  # gen's cell is a `cells`
    assert (
        len(list((tmp_path / "images" / "gen_test").glob("*.png")))
        == expected["splits"]["gen/test"]["images"]
    )
    data = yaml.safe_load((tmp_path / "data.yaml").read_text())
    assert (data["spec_test"], data["gen_test"], data["names"]) == (
        "images/spec_test",
        "images/gen_test",
        {0: "cells", 1: "soma"},
    )
    assert (
        f"gen_test: {expected['splits']['gen/test']['images']} images, {gen['cell']} instances" in proc.stdout
    )
    # --target cells: one class, the same instances of both parts
    proc = convert(
        [
            "--data",
            str(root),
            "--to",
            "yolo",
            "--split",
            "spec/test",
            "--split",
            "gen/test",
            "--target",
            "cells",
            "--out",
            str(tmp_path / "t"),
        ],
        subprocess_env,
    )
    assert proc.returncode == 0, proc.stderr
    assert class_lines(tmp_path / "t" / "labels" / "spec_test") == {
        "0": spec["cell type A"] + spec["cell type B"]
    }
    assert class_lines(tmp_path / "t" / "labels" / "gen_test") == {"0": gen["cell"]}


def test_yolo_gen_without_a_matching_class_is_refused(
    small: tuple[Path, dict[str, Any]], tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    """Default classes (type_a, type_b, soma): gen's `cell` is none of them: an error with counts, no
    empty label files."""
    root, expected = small
    n, images = expected["splits"]["gen/test"]["instances"]["cell"], expected["splits"]["gen/test"]["images"]
    proc = convert(
        ["--data", str(root), "--to", "yolo", "--split", "gen/test", "--out", str(tmp_path / "y")],
        subprocess_env,
    )
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[-1] == (
        f"error: gen/test: {n} of {n} instances (category 'cell') belong to none of the YOLO classes type_a, "
        f"type_b, soma; {images} of {images} images have no instance of the classes left. Nothing would be "
        "exported: choose classes that gen/test defines with --classes or --target (its targets: cells)"
    )
    assert not (tmp_path / "y" / "labels").exists()
    # losing part of a split is said with counts (somata are no class here)
    spec = expected["splits"]["spec/test"]["instances"]
    proc = convert(
        [
            "--data",
            str(root),
            "--to",
            "yolo",
            "--split",
            "spec/test",
            "--classes",
            "cells",
            "--out",
            str(tmp_path / "c"),
        ],
        subprocess_env,
    )
    assert proc.returncode == 0, proc.stderr
    total = sum(spec.values())
    assert "warnings: 1" in proc.stdout
    assert (
        f"spec/test: {spec['soma']} of {total} instances (category 'soma') belong to none of the YOLO "
        "classes cells; 0 of 2 images have no instance of the classes left"
    ) in proc.stdout


# --------------------------------------------------------------------------------------------- tiny dataset


def _box(y0: int, x0: int, y1: int, x1: int) -> list[list[int]]:
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def tiny(root: Path, specks: int = 0) -> Path:
    """spec/test in the archive layout: image a holds cell A (20x20) with its soma (4x4) and cell B (10x10)
    overlapping A by 5x5; image b holds `specks` 2x2 type B specks (below min_pixels 10)."""
    folder = root / "dataset" / "spec" / "test"
    (folder / "images").mkdir(parents=True)
    anns = [(1, 1, (5, 5, 25, 25)), (1, 3, (10, 10, 14, 14)), (1, 2, (20, 20, 30, 30))]
    anns += [
        (2, 2, (2 + 4 * (k // 10), 2 + 4 * (k % 10), 4 + 4 * (k // 10), 4 + 4 * (k % 10)))
        for k in range(specks)
    ]
    for name in ("a.tif", "b.tif"):
        tifffile.imwrite(folder / "images" / name, np.zeros((H, W), np.uint8))
    coco = {
        "images": [
            {"id": 1, "file_name": "a.tif", "width": W, "height": H},
            {"id": 2, "file_name": "b.tif", "width": W, "height": H},
        ],
        "categories": [
            {"id": 1, "name": "cell type A"},
            {"id": 2, "name": "cell type B"},
            {"id": 3, "name": "soma"},
        ],
        "annotations": [
            {"id": k + 1, "image_id": i, "category_id": c, "segmentation": _box(*b), "iscrowd": 0}
            for k, (i, c, b) in enumerate(anns)
        ],
    }
    (folder / "annotations.coco.json").write_text(json.dumps(coco))
    return root


def test_labelmaps_one_map_per_target(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    """Without --target: a folder per target, so the soma neither cuts its cell nor vanishes; every label
    value is recorded as (COCO category, instance index)."""
    data = tiny(tmp_path / "d")
    proc = convert(
        ["--data", str(data), "--split", "spec/test", "--to", "labelmaps", "--out", str(tmp_path / "o")],
        subprocess_env,
    )
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "o"
    assert sorted(p.name for p in out.iterdir()) == ["cells", "soma", "type_a", "type_b"]
    counts = {
        t: np.bincount(tifffile.imread(out / t / "a.tif").ravel()).tolist()
        for t in ("cells", "type_a", "type_b", "soma")
    }
    # cells: A keeps 400 - 25 (under B, painted last) = 375 px, the soma's 16 px stay A's; B 100
    assert counts == {
        "cells": [H * W - 475, 375, 100],
        "type_a": [H * W - 400, 400],
        "type_b": [H * W - 100, 100],
        "soma": [H * W - 16, 16],
    }
    record = json.loads((out / "cells" / "conversion.json").read_text())
    assert (record["target"], record["categories"]) == ("cells", ["cell type A", "cell type B"])
    assert record["images"]["a.tif"]["labels"] == [["cell type A", 0], ["cell type B", 2]]
    assert json.loads((out / "soma" / "conversion.json").read_text())["images"]["a.tif"]["labels"] == [
        ["soma", 1]
    ]
    # the one warning: image b has no annotation
    assert record["totals"] == {
        "images": 2,
        "in": 2,
        "kept": 2,
        "dropped": 0,
        "trimmed_pixels": 0,
        "warnings": 1,
    }
    assert proc.stdout.splitlines()[0].startswith(
        f"target cells: 2 label maps in {out / 'cells'} (cell type A, "
        "cell type B; rule last, min_pixels 10): 2 instances in, 2 kept"
    )
    # --target keeps one map in --out itself
    proc = convert(
        [
            "--data",
            str(data),
            "--split",
            "spec/test",
            "--to",
            "labelmaps",
            "--target",
            "soma",
            "--out",
            str(tmp_path / "s"),
        ],
        subprocess_env,
    )
    assert proc.returncode == 0, proc.stderr
    assert np.bincount(tifffile.imread(tmp_path / "s" / "a.tif").ravel()).tolist() == [H * W - 16, 16]


def test_labelmaps_drops_listed_up_to_20(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    data = tiny(tmp_path / "d", specks=25)
    proc = convert(
        [
            "--data",
            str(data),
            "--split",
            "spec/test",
            "--to",
            "labelmaps",
            "--target",
            "type_b",
            "--out",
            str(tmp_path / "o"),
        ],
        subprocess_env,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].endswith("26 instances in, 1 kept, 25 dropped; warnings: 0")
    assert lines[1] == "  b.tif: instance 0 (cell type B) dropped: below min_pixels=10 (4 px left, rule last)"
    assert len(lines) == 1 + 20 + 1
    assert lines[-1] == f"  ... and 5 more (all in {tmp_path / 'o' / 'conversion.json'})"
    record = json.loads((tmp_path / "o" / "conversion.json").read_text())
    assert [d["order"] for d in record["images"]["b.tif"]["dropped_detail"]] == list(range(25))


def test_labelmaps_of_a_multi_category_coco_refused(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    data = tiny(tmp_path / "d")
    json_path = data / "dataset" / "spec" / "test" / "annotations.coco.json"
    proc = convert(
        ["--coco", str(json_path), "--to", "labelmaps", "--out", str(tmp_path / "o")], subprocess_env
    )
    assert proc.returncode == 2
    assert "has 3 categories ('cell type A', 'cell type B', 'soma')" in proc.stderr
    assert "choose them with --categories" in proc.stderr and "Traceback" not in proc.stderr


def test_split_val_is_an_error_naming_the_splits(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    """ultralytics calls the split `val`; the dataset `valid`: a one-line error, no KeyError traceback."""
    data = tiny(tmp_path / "d")
    proc = convert(
        ["--data", str(data), "--to", "yolo", "--split", "spec/val", "--out", str(tmp_path / "o")],
        subprocess_env,
    )
    assert proc.returncode == 2
    yaml_path = REPO / "configs" / "datasets" / "glioma_c6.yaml"
    assert proc.stderr.splitlines() == [
        f"error: split 'spec/val' is not defined in {yaml_path}; defined: spec/train, spec/valid, spec/test, "
        "gen/test (YOLO's 'val' is spec/valid)"
    ]
