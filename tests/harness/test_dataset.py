"""Dataset configs, --data resolution, splits/targets and `validate` on the fixture and on the real sample."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from harness import dataset
from harness.dataset import (
    as_classes,
    find_annotation_file,
    load_dataset_config,
    load_split,
    resolve_data,
    select,
    validate,
)
from harness.errors import ConfigError, DataError

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "glioma_mini"


@pytest.fixture
def mini(tmp_path: Path) -> Path:
    """A writable copy of the Glioma-layout fixture."""
    shutil.copytree(FIXTURE, tmp_path / "glioma_mini")
    return tmp_path / "glioma_mini"


def test_folder_resolves_to_glioma_config() -> None:
    cfg = resolve_data(FIXTURE)
    assert cfg.name == "glioma_c6" and cfg.root == FIXTURE / "dataset"
    assert resolve_data(FIXTURE / "dataset").root == FIXTURE / "dataset"
    assert find_annotation_file(cfg.split_dir("spec/train")).name == "_annotations.coco.json"
    train = load_split(cfg, "spec/train")
    assert [(s.name, len(s.instances)) for s in train] == [("t1", 6), ("t2", 2)]
    gen = load_split(cfg, "gen/test")
    assert [i.category for i in gen[0].instances] == ["cell", "cell"]


def test_sample_folder_and_name_resolve_to_sample_config(sample_dir: Path) -> None:
    assert resolve_data(sample_dir).name == "sample"
    assert resolve_data("sample").name == "sample"
    with pytest.raises(ConfigError, match="not 'auto', a shipped dataset name"):
        resolve_data("no_such_thing")


def test_folder_without_layout(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="neither dataset/spec/ nor spec/"):
        resolve_data(tmp_path)


def test_auto(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="harness.dataset")
    monkeypatch.setattr(dataset, "GLIOMA_ROOT", tmp_path / "glioma_c6")
    assert resolve_data("auto").name == "sample"
    assert "is absent" in caplog.text and "bundled sample" in caplog.text
    (tmp_path / "glioma_c6").mkdir()
    caplog.clear()
    assert resolve_data("auto").name == "sample"  # an empty folder (interrupted fetch) is not the dataset
    assert "holds no spec/ part" in caplog.text
    shutil.copytree(FIXTURE / "dataset", tmp_path / "glioma_c6" / "dataset")
    caplog.clear()
    cfg = resolve_data("auto")
    assert cfg.name == "glioma_c6" and cfg.root == tmp_path / "glioma_c6" / "dataset"
    assert "using Glioma C6 at" in caplog.text


def test_targets_select_and_classes() -> None:
    cfg = resolve_data(FIXTURE)
    train = load_split(cfg, "spec/train")
    cells = select(train, cfg.targets_of("spec/train")["cells"], "cells")
    assert [len(s.instances) for s in cells] == [5, 1]
    assert {i.category for s in cells for i in s.instances} == {"cells"}
    classes = as_classes(train, cfg, "spec/train")
    assert [[i.category for i in s.instances] for s in classes] == [
        ["type_a", "type_a", "soma", "type_b", "type_b", "type_b"],
        ["type_a", "soma"],
    ]


def test_unknown_target_category_lists_names(mini: Path) -> None:
    path = mini / "dataset" / "spec" / "train" / "_annotations.coco.json"
    data = json.loads(path.read_text())
    data["categories"][2]["name"] = "nucleus"
    path.write_text(json.dumps(data))
    with pytest.raises(
        ConfigError,
        match="target 'soma' uses category 'soma' not found in .*_annotations.coco.json; "
        "names present: 'cell type A', 'cell type B', 'nucleus'",
    ):
        load_split(resolve_data(mini), "spec/train")


def test_two_json_files_in_a_split(mini: Path) -> None:
    (mini / "dataset" / "spec" / "valid" / "extra.json").write_text("{}")
    with pytest.raises(DataError, match="expected exactly one COCO JSON file, found 2"):
        load_split(resolve_data(mini), "spec/valid")


def test_config_errors(tmp_path: Path) -> None:
    bad = tmp_path / "d.yaml"
    bad.write_text(
        "name: x\nroot: .\nparts: {p: {splits: {a: a}, targets: {t: [c]}}}\ntrain: p/a\nvalid: p/b\n"
        "evaluate: [p/a]\n"
    )
    with pytest.raises(ConfigError, match="split 'p/b' is not defined under parts; defined: p/a"):
        load_dataset_config(bad)
    bad.write_text("name: x\nroot: .\nparts: {}\ntrain: p/a\nvalid: p/a\nevaluate: [p/a]\nsplits: 1\n")
    with pytest.raises(ConfigError, match="unknown key\\(s\\) splits"):
        load_dataset_config(bad)


def test_validate_fixture_exact() -> None:
    report = validate(resolve_data(FIXTURE))
    train = report["splits"]["spec/train"]
    assert train["categories"] == {
        "cell type A": {"images": 2, "instances": 3, "overlapping_pairs": 1, "empty": 0},
        "cell type B": {"images": 1, "instances": 3, "overlapping_pairs": 0, "empty": 0},
        "soma": {"images": 2, "instances": 2, "overlapping_pairs": 0, "empty": 0},
    }
    # all categories together: A1-A2, A1-S1 (t1) and the t2 cell with its soma
    assert (train["images"], train["instances"], train["overlapping_pairs"]) == (2, 8, 3)
    assert report["splits"]["spec/valid"]["overlapping_pairs"] == 1
    assert report["splits"]["gen/test"]["categories"]["cell"]["instances"] == 2
    assert report["problems"] == 0 and report["warnings"] == 1
    assert report["splits"]["spec/test"]["warnings"][0].endswith("image id 22 ('s2.tif') has no annotations")


def test_validate_collects_problems_and_goes_on(mini: Path) -> None:
    root = mini / "dataset"
    (root / "spec" / "train" / "images" / "t2.tif").write_bytes(b"")
    (root / "spec" / "train" / "images" / "stray.tif").write_bytes(b"x")
    (root / "spec" / "valid" / "annotations.json").write_text('{"images": [')
    report = validate(resolve_data(mini))
    train, valid = report["splits"]["spec/train"], report["splits"]["spec/valid"]
    assert len(train["problems"]) == 1 and "t2.tif: image file is empty (0 bytes)" in train["problems"][0]
    assert any("stray.tif: image file is not listed in" in w for w in train["warnings"])
    assert len(valid["problems"]) == 1 and "annotations.json: not valid JSON" in valid["problems"][0]
    assert report["splits"]["spec/test"]["problems"] == [] and report["problems"] == 2


def test_validate_real_sample(sample_dir: Path) -> None:
    report = validate(resolve_data(sample_dir))
    counts = {
        ref: (e["images"], e["instances"], e["overlapping_pairs"]) for ref, e in report["splits"].items()
    }
    assert counts == {"spec/train": (3, 171, 28), "spec/valid": (1, 76, 13), "spec/test": (2, 152, 37)}
    assert report["problems"] == 0 and report["warnings"] == 0
