"""The harness honours the adapter contract: it flattens overlaps for `needs_label_maps` (one rule, one place),
hands the adapter the run's seed, and records the adapter's `versions()` where the stage ran."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

import adapters
from adapters.base import Adapter
from harness.classes import training_samples
from harness.convert import label_map
from harness.errors import DataError
from harness.flatten import flatten, label_image
from harness.records import Instance, Sample
from harness.run import BenchSpec, Runner

SEEN: dict[str, Any] = {}


class Spy(Adapter):
    """Records what `train` receives; its checkpoint is a text file."""

    description = "records what the harness hands it"
    needs_label_maps = True
    packages = ("numpy",)

    def __init__(self, weights: str | None = None, device: str = "cpu") -> None:
        super().__init__(weights=weights, device=device)

    def train(self, train_samples: Sequence[Sample], val_samples: Sequence[Sample], out_dir: Path, *,
              epochs: int = 1) -> Path:
        SEEN.update(train=list(train_samples), valid=list(val_samples), seed=self.seed)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "spy.txt").write_text("spy")
        return out_dir / "spy.txt"

    def load(self, checkpoint: Path) -> None:
        pass

    def predict(self, image: Any) -> list[Instance]:
        return []


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setitem(adapters._REGISTRY, "spy", Spy)
    monkeypatch.setattr(Spy, "name", "spy")
    config = tmp_path / "spy.yaml"
    config.write_text("model: spy\nlabel_maps: {rule: smallest, min_pixels: 200}\nprofiles: {quick: {}}\n")
    return config


def test_training_samples_arrive_flattened_by_the_config_rule(spy: Path, tmp_path: Path) -> None:
    runner = Runner(BenchSpec(model="spy", data="sample", config=spy, out=tmp_path / "run", modes=["finetuned"],
                              device="cpu", seed=7, targets=["cells"]))
    stage = next(s for s in runner.stages() if s.kind == "train")
    runner.execute(stage)
    unit = runner.unit(stage.unit)
    raw = training_samples(runner.split(runner.data.train), unit)
    assert SEEN["seed"] == 7
    expected = flatten(raw, "smallest", 200, "expected")
    assert [len(s.instances) for s in raw] == [52, 42, 77] and [len(s.instances) for s in SEEN["train"]] == [52, 42, 76]
    assert [[(i.bbox, i.area) for i in s.instances] for s in SEEN["train"]] == \
           [[(i.bbox, i.area) for i in s.instances] for s in expected]
    for got, original in zip(SEEN["train"], raw, strict=True):
        assert (label_image(got) == label_map(original, "smallest", 200)[0]).all()
    notes = json.loads(next((tmp_path / "run" / "checkpoints").rglob("init.json")).read_text())
    assert notes["versions"] == {"numpy": __import__("numpy").__version__}


def test_label_image_refuses_overlaps_and_flatten_counts_what_it_drops(caplog: pytest.LogCaptureFixture) -> None:
    import numpy as np

    big, small = np.ones((6, 6), bool), np.ones((2, 2), bool)
    sample = Sample(Path("x.tif"), 10, 10, (Instance.from_mask("c", 0, 0, big, 10, 10, order=0),
                                            Instance.from_mask("c", 1, 1, small, 10, 10, order=1)))
    with pytest.raises(DataError, match=r"x.tif: instances 1 and 2 overlap; flatten the samples first \(`flatten`"):
        label_image(sample)
    with caplog.at_level("INFO", logger="harness.flatten"):
        (flat,) = flatten([sample], "last", 10, "unit cells: train")
    assert [i.area for i in flat.instances] == [32]  # the small one, 4 px after the rule, is below min_pixels
    assert "unit cells: train: 1 image(s), 2 instance(s) flattened by rule last (min_pixels 10): 1 kept, 1 dropped " \
           "(1 below min_pixels=10)" in caplog.text
    assert (label_image(flat) == label_map(sample, "last", 10)[0]).all()
