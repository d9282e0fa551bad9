"""Multiclass units: class-agnostic merge of type A/B predictions for `cells`, and the model YAML's class set.

Through the real Runner on the Glioma-layout fixture with a stub multiclass adapter that predicts, on the test
image, its type A cell twice — once as `type_a` (score 0.9) and once as `type_b` (0.8), the way a YOLO that is
unsure of the type does (ultralytics' NMS is per class, so both survive). Exact counts before/after the merge.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml

import adapters
from adapters.base import Adapter
from harness import dataset as ds
from harness.classes import merge_classes, train_classes
from harness.config import load_model_config
from harness.errors import ConfigError
from harness.records import Instance, Sample
from harness.run import BenchSpec, Runner

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "glioma_mini"
REPO = Path(__file__).resolve().parents[2]


class Echo(Adapter):
    """Multiclass stub: predicts the GT cells of the image it is shown under each class in `as_classes`."""

    multiclass = True
    answers: ClassVar[dict[bytes, list[Instance]]] = {}
    as_classes: ClassVar[list[tuple[str, float]]] = []
    trained_on: ClassVar[list[set[str]]] = []

    def train(self, train_samples: Sequence[Sample], val_samples: Sequence[Sample], out_dir: Path,
              **schedule: Any) -> Path:
        Echo.trained_on.append({i.category for s in train_samples for i in s.instances})
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "echo.txt").write_text("echo")
        return out_dir / "echo.txt"

    def load(self, checkpoint: Path) -> None:
        return None

    def predict(self, image: Any) -> list[Instance]:
        cells = Echo.answers.get(image.tobytes(), [])
        return [Instance.from_mask(name, *i.bbox[:2], i.crop, i.height, i.width, score=score)
                for i in cells for name, score in Echo.as_classes]


@pytest.fixture
def echo(monkeypatch: pytest.MonkeyPatch) -> type[Echo]:
    """`echo` registered for this test; it answers every fixture image with its type A / B cells."""
    monkeypatch.setitem(adapters._REGISTRY, "echo", Echo)
    monkeypatch.setattr(Echo, "name", "echo")
    cfg = ds.resolve_data(FIXTURE)
    answers = {}
    for ref in cfg.evaluate:
        for sample in ds.load_split(cfg, ref):
            cells = [i for i in sample.instances if i.category in ("cell type A", "cell type B", "cell")]
            answers[sample.load_image().tobytes()] = cells
    monkeypatch.setattr(Echo, "answers", answers)
    monkeypatch.setattr(Echo, "trained_on", [])
    return Echo


def bench(tmp_path: Path, config: dict[str, Any], targets: list[str], modes: list[str]) -> list[dict[str, Any]]:
    path = tmp_path / "echo.yaml"
    tmp_path.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"model": "echo", "profiles": {"quick": {}}, **config}))
    run = Runner(BenchSpec(model="echo", data=str(FIXTURE), config=path, targets=targets, modes=modes,
                           out=tmp_path / "run", bootstrap=0, device="cpu")).run()
    return json.loads((run / "results.json").read_text())["rows"]


def counts(row: dict[str, Any]) -> tuple[int, int, int]:
    pooled = row["metrics"]["overlap"]["pooled"]["0.5"]
    return pooled["tp"], pooled["fp"], pooled["fn"]


def test_a_cell_predicted_as_type_a_and_type_b_counts_once_for_cells(tmp_path: Path, echo: type[Echo],
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Echo, "as_classes", [("type_a", 0.9), ("type_b", 0.8)])
    plain = bench(tmp_path / "off", {"evaluate": {"merge_iou": None}}, ["cells", "type_a"], ["zero_shot"])
    test_cells, test_a = (r for r in plain if r["subset"] == "spec/test")
    assert counts(test_cells) == (1, 1, 0)  # the double prediction: one TP and one FP
    assert test_cells["metrics"]["overlap"]["settings"]["class_merge"] is None
    merged = bench(tmp_path / "on", {"evaluate": {"merge_iou": 0.7}}, ["cells", "type_a"], ["zero_shot"])
    test_cells, test_a = (r for r in merged if r["subset"] == "spec/test")
    assert counts(test_cells) == (1, 0, 0)
    assert test_cells["metrics"]["resolved"]["settings"]["class_merge"] == {
        "classes": ["type_a", "type_b"], "iou": 0.7, "before": 2, "after": 1}
    assert counts(test_a) == (1, 0, 0) and test_a["metrics"]["overlap"]["settings"]["class_merge"] is None


def test_the_papers_class_set_trains_cells_and_soma_and_skips_the_type_rows(tmp_path: Path,
                                                                            echo: type[Echo],
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Echo, "as_classes", [("cells", 0.9)])
    rows = bench(tmp_path, {"classes": ["cells", "soma"], "evaluate": {"merge_iou": 0.7}},
                 ["cells", "type_a", "soma"], ["finetuned"])
    assert Echo.trained_on == [{"cells", "soma"}]  # type A and type B instances were renamed to `cells`
    by_target = {(r["target"], r["subset"]): r for r in rows}
    assert by_target[("type_a", "spec/test")]["status"] == "skipped"
    assert by_target[("type_a", "spec/test")]["reason"] == (
        "echo learns the classes cells, soma; none of them counts for type_a")
    assert counts(by_target[("cells", "spec/test")]) == (1, 0, 0)
    assert by_target[("cells", "spec/test")]["metrics"]["overlap"]["settings"]["class_merge"] is None
    assert by_target[("soma", "spec/test")]["status"] == "ok"
    assert counts(by_target[("cells", "gen/test")])[0] == 2 and ("type_a", "gen/test") not in by_target


def test_class_sets_are_checked(tmp_path: Path) -> None:
    cfg = ds.resolve_data(FIXTURE)
    assert train_classes(cfg, None, "x") == {"type_a": ["cell type A"], "type_b": ["cell type B"], "soma": ["soma"]}
    assert train_classes(cfg, ["cells", "soma"], "x") == {"cells": ["cell type A", "cell type B"], "soma": ["soma"]}
    with pytest.raises(ConfigError, match="m.yaml: classes: classes cells and type_a both contain the category "
                                          "'cell type A'; a multiclass model needs disjoint classes"):
        train_classes(cfg, ["cells", "type_a"], "m.yaml: classes")
    with pytest.raises(ConfigError, match="class\\(es\\) nuclei are not targets of the training part spec/train"):
        train_classes(cfg, ["nuclei"], "m.yaml")
    raw = yaml.safe_load((REPO / "configs" / "models" / "yolo11.yaml").read_text())
    assert raw["evaluate"]["merge_iou"] == raw["params"]["iou"]  # the merge uses the model's own NMS IoU
    path = tmp_path / "yolo11.yaml"
    path.write_text(yaml.safe_dump({**raw, "classes": ["cells", "soma"]}))
    assert load_model_config("yolo11", "paper", path).classes == ("cells", "soma")
    for bad, message in ((["cells", "cells"], "classes must be a non-empty list of distinct"),
                         ("cells", "classes must be a non-empty list")):
        path.write_text(yaml.safe_dump({**raw, "classes": bad}))
        with pytest.raises(ConfigError, match=message):
            load_model_config("yolo11", "paper", path)
    path.write_text(yaml.safe_dump({**raw, "evaluate": {"merge_iou": 1.5}}))
    with pytest.raises(ConfigError, match=r"evaluate.merge_iou must be an IoU in \(0, 1\] or null, got 1.5"):
        load_model_config("yolo11", "paper", path)


def test_merge_classes_exact_counts_on_synthetic_masks() -> None:
    import numpy as np

    square = np.ones((10, 10), dtype=bool)
    a = Instance.from_mask("type_a", 5, 5, square, 40, 40, score=0.9)
    b_same = Instance.from_mask("type_b", 5, 6, square, 40, 40, score=0.8)  # IoU 90/110 = 0.82 with a
    b_other = Instance.from_mask("type_b", 20, 20, square, 40, 40, score=0.3)
    sample = Sample(Path("x.tif"), 40, 40, (a, b_same, b_other))
    (out,), info = merge_classes([sample], ["type_a", "type_b"], 0.7, "cells")
    assert [(i.category, i.score) for i in out.instances] == [("type_a", 0.9), ("type_b", 0.3)]
    assert info == {"classes": ["type_a", "type_b"], "iou": 0.7, "before": 3, "after": 2}
    assert merge_classes([sample], ["type_a", "type_b"], 0.85, "cells")[1]["after"] == 3  # 0.82 is not > 0.85
    assert merge_classes([sample], ["type_a"], 0.7, "type_a") == ([sample], None)
    assert merge_classes([sample], ["type_a", "type_b"], None, "cells") == ([sample], None)
