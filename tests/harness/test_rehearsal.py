"""`c6bench bench --rehearse [N]`: schedules cut by each adapter, splits cut, rows marked, keys apart, reports apart.

The end-to-end rehearsal of the paper profile for every model is `tests/harness/test_paper_rehearsal.py`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

import adapters
from harness.cli import main
from harness.config import load_model_config
from harness.errors import ConfigError
from harness.rehearsal import select_runs
from harness.run import BenchSpec, Runner

#: What ``rehearsal_schedule(paper schedule, 2)`` changes, per adapter (every other key stays as configured).
PAPER_CUT_TO_2 = {
    "cellpose": {"epochs": 3, "nimg_per_epoch": 8},  # epoch 0 runs at LR 0 (train_seg's warm-up)
    "cellpose_sam": {"epochs": 3, "nimg_per_epoch": 1},  # cellpose 4's train_seg: the same warm-up, batch 1
    "mediar": {"epochs": 2, "crops_per_epoch": 8},  # t_max stays 100: the real schedule's first LRs
    "cellseg1": {"epochs": 2, "max_steps": 2},  # an epoch is a pass over every tile: max_steps stops it
    "yolo11": {"epochs": 2, "nbs": 16, "close_mosaic": 1},
    "classical": {"threshold_scales": [0.5], "min_distances": [15, 20]},
}
#: ``schedule_size(paper schedule, 30)``: (optimiser steps, samples) on Glioma C6's 30 spec training images.
PAPER_SIZE_ON_30 = {
    "cellpose": (999 * 4, 1000 * 30),  # 4 batches of 8 per epoch, epoch 0 at LR 0
    "cellpose_sam": (99 * 30, 100 * 30),  # one 256-px crop per image and step, epoch 0 at LR 0
    "mediar": (100 * 7, 100 * 50),  # max(30, 50) crops per epoch in batches of 8
    "cellseg1": (4500, 300 * 480),  # 480 tiles per epoch in batches of 4, a step per 8 batches
    "yolo11": (198, 395 * 30),  # 2 batches per epoch, a step per 64 / 16 = 4 batches
    "classical": (48, 48 * 30),  # 8 x 6 grid settings, each scoring every image
}


def test_every_adapter_defines_its_rehearsal() -> None:
    assert sorted(PAPER_CUT_TO_2) == adapters.names()


@pytest.mark.parametrize("model", adapters.names())
def test_paper_schedule_cut_to_two_steps(model: str) -> None:
    cls = adapters.get(model)
    paper = load_model_config(model, "paper").train
    cut = cls.rehearsal_schedule(dict(paper), 2)
    changed = {k: v for k, v in cut.items() if paper.get(k, "<absent>") != v}
    assert changed == PAPER_CUT_TO_2[model]
    cls.check_schedule(cut)
    assert cls.schedule_size(cut, 1)[0] == 2


@pytest.mark.parametrize("steps", [1, 3, 7])
@pytest.mark.parametrize("profile", ["paper", "quick"])
@pytest.mark.parametrize("model", adapters.names())
def test_rehearsal_takes_exactly_n_steps_on_one_image(model: str, profile: str, steps: int) -> None:
    cls = adapters.get(model)
    cut = cls.rehearsal_schedule(load_model_config(model, profile).train, steps)
    grid_row = {"paper": 6, "quick": 3}[profile]  # classical: at most one row of its threshold x distance grid
    expected = min(steps, grid_row) if model == "classical" else steps
    assert cls.schedule_size(cut, 1)[0] == expected


@pytest.mark.parametrize("model", adapters.names())
def test_schedule_size_of_the_paper_profile_on_glioma_c6(model: str) -> None:
    cls = adapters.get(model)
    assert cls.schedule_size(load_model_config(model, "paper").train, 30) == PAPER_SIZE_ON_30[model]


def test_an_adapter_without_a_rehearsal_is_a_clear_error() -> None:
    from adapters.base import Adapter

    class Plain(Adapter):
        name = "plain"

        def train(self, train_samples, val_samples, out_dir, *, epochs: int = 1):  # noqa: ANN001, ANN201
            raise NotImplementedError

        load = predict = train

    with pytest.raises(ConfigError, match="model 'plain' cannot be rehearsed: .*rehearsal_schedule"):
        Plain.rehearsal_schedule({"epochs": 10}, 2)


@pytest.mark.parametrize("value", ["0", "-1", "x", "1.5"])
def test_rehearse_must_be_an_integer_of_at_least_one(value: str, capsys: pytest.CaptureFixture[str],
                                                       tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--model", "classical", "--data", "sample", "--out", str(tmp_path / "run"),
              "--rehearse", value])
    assert exc.value.code == 2
    assert "argument --rehearse" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # refused before anything was planned or written
    with pytest.raises(ConfigError, match="integer >= 1"):
        Runner(BenchSpec(model="classical", data="sample", device="cpu", rehearse=value))


def test_rehearsal_stage_keys_and_run_dir_differ_from_a_real_runs() -> None:
    real = Runner(BenchSpec(model="classical", data="sample", profile="paper", device="cpu"))
    two = Runner(BenchSpec(model="classical", data="sample", profile="paper", device="cpu", rehearse=2))
    three = Runner(BenchSpec(model="classical", data="sample", profile="paper", device="cpu", rehearse=3))
    assert [s.id for s in real.stages()] == [s.id for s in two.stages()]
    for stage in real.stages():
        keys = {real.key(stage), two.key(stage), three.key(stage)}
        assert len(keys) == 3, stage.id
    assert two.run_dir.name.endswith("_classical-rehearsal") and not real.run_dir.name.endswith("rehearsal")
    assert BenchSpec.from_dict(two.spec.to_dict()).rehearse == 2  # plan.json carries it to every stage process
    assert [len(two.split(r)) for r in ("spec/train", "spec/valid", "spec/test")] == [1, 1, 1]
    assert [len(real.split(r)) for r in ("spec/train", "spec/valid", "spec/test")] == [3, 1, 2]
    assert two.split("spec/test")[0].file_name == real.split("spec/test")[0].file_name  # annotation-file order


def _bench(out: Path, *extra: str) -> Path:
    assert main(["bench", "--model", "classical", "--data", "sample", "--device", "cpu", "--bootstrap", "0",
                 "--threads", "1", "--out", str(out), *extra]) == 0
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder with a real quick run and a rehearsal of the paper profile (classical: seconds)."""
    root = tmp_path_factory.mktemp("runs")
    _bench(root / "real", "--modes", "zero_shot")
    _bench(root / "rehearsal", "--profile", "paper", "--rehearse")
    return root


def test_rehearsal_rows_and_files_are_marked(runs: Path) -> None:
    run = runs / "rehearsal"
    results = json.loads((run / "results.json").read_text())
    assert results["rehearsal"] == {"steps": 2, "images_per_split": 1}
    assert [(r["mode"], r["status"], r["rehearsal"], r["n_images"], r["profile"]) for r in results["rows"]] == [
        ("zero_shot", "ok", True, 1, "paper"), ("finetuned", "ok", True, 1, "paper")]
    assert (run / "results.md").read_text().startswith("# REHEARSAL — NOT RESULTS\n")
    header, *lines = (run / "results.csv").read_text().splitlines()
    column = header.split(",").index("rehearsal")
    assert [line.split(",")[column] for line in lines] == ["True", "True"]
    assert yaml.safe_load((run / "config.yaml").read_text())["rehearsal"] == {"steps": 2, "images_per_split": 1}
    assert json.loads((run / "manifest.json").read_text())["rehearsal"]["steps"] == 2
    real = json.loads((runs / "real" / "results.json").read_text())
    assert real["rehearsal"] is None and {r["rehearsal"] for r in real["rows"]} == {False}
    assert not (runs / "real" / "results.md").read_text().startswith("# REHEARSAL")


def test_report_never_mixes_rehearsal_and_real_runs(runs: Path, tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    from harness.report import generate_report

    real, rehearsal = (runs / "real").resolve(), (runs / "rehearsal").resolve()
    with pytest.raises(ConfigError, match="never mixes them"):
        generate_report([real, rehearsal], tmp_path / "mixed", figures=False)
    with pytest.raises(ConfigError, match="never mixes them"):
        select_runs([rehearsal], [real])  # a rehearsal named next to a folder of real runs
    summary = generate_report([runs], tmp_path / "folder", figures=False)  # what `make report` does
    assert summary["runs"] == [str(real)]
    assert "1 rehearsal run(s) left out" in caplog.text and str(rehearsal) in caplog.text
    alone = generate_report([rehearsal], tmp_path / "alone", figures=False)
    assert alone["runs"] == [str(rehearsal)]
    table = json.loads((tmp_path / "alone" / "table2.json").read_text())
    assert {r["profile"] for r in table["rows"]} == {"paper (REHEARSAL)"}
