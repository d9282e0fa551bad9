"""`c6bench bench --seeds … --train-images …` through the real CLI (issue 18): stages, subsets, resume, report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

GRID = """model: classical
params: {sigma: 2.0, texture_sigma: 3.0, threshold_scale: 1.0, min_distance: 30, min_size: 300}
zero_shot: {weights: null}
finetune: {init: null}
profiles:
  quick:
    train: {threshold_scales: [0.7, 1.1], min_distances: [30]}
"""


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, env=env,
                          timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def trial_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One bench with 2 seeds x 2 sizes, shared by the tests below (the subprocess env of conftest, by hand:
    that fixture is per test)."""
    root = tmp_path_factory.mktemp("trials")
    subprocess_env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO / "tests" / "_nonet"), str(REPO), os.environ.get("PYTHONPATH", "")])}
    config = root / "classical.yaml"
    config.write_text(GRID)
    out = root / "run"
    proc = _cli(subprocess_env, "bench", "--model", "classical", "--data", "sample", "--device", "cpu",
                "--threads", "1", "--config", str(config), "--seeds", "0,1", "--train-images", "1,all",
                "--bootstrap", "0", "--out", str(out))
    return out, proc.stderr


def test_trials_are_stages_of_their_own_with_nested_subsets(trial_run: tuple[Path, str]) -> None:
    out, log = trial_run
    plan = json.loads((out / "plan.json").read_text())
    trains = sorted(s["id"] for s in plan["stages"] if s["kind"] == "train")
    assert trains == ["classical/train/cells/s0-n1", "classical/train/cells/s0-nall",
                      "classical/train/cells/s1-n1", "classical/train/cells/s1-nall"]
    assert log.count(": start (key") == 2 + 3 * 4 + 1  # zero-shot predict+evaluate once; 3 stages per trial; results
    subsets = json.loads((out / "train_subsets.json").read_text())
    train_names = sorted(subsets["s0-nall"])
    assert len(train_names) == 3 and subsets["s1-nall"] == train_names
    for seed in ("s0", "s1"):
        assert len(subsets[f"{seed}-n1"]) == 1 and set(subsets[f"{seed}-n1"]) <= set(train_names)
    rows = json.loads((out / "results.json").read_text())["rows"]
    tuned = [(r["seed"], r["train_images"]) for r in rows if r["mode"] == "finetuned"]
    assert tuned == [(0, 1), (0, 3), (1, 1), (1, 3)]
    assert [r for r in rows if r["mode"] == "zero_shot"][0].get("seed") is None  # zero-shot is not repeated
    # the all-images trials of both seeds trained on the same images with this deterministic grid search
    f1 = {(r["seed"], r["train_images"]): r["metrics"]["overlap"]["pooled"]["0.5"]["f1"] for r in rows
          if r["mode"] == "finetuned"}
    assert f1[(0, 3)] == f1[(1, 3)]
    assert "### Over seeds" in (out / "results.md").read_text()


def test_resume_with_another_seed_runs_only_the_new_seed(trial_run: tuple[Path, str],
                                                         subprocess_env: dict[str, str]) -> None:
    out, _ = trial_run
    config = out.parent / "classical.yaml"
    proc = _cli(subprocess_env, "bench", "--model", "classical", "--data", "sample", "--device", "cpu",
                "--threads", "1", "--config", str(config), "--seeds", "0,1,2", "--train-images", "1,all",
                "--bootstrap", "0", "--out", str(out))
    started = sorted(line.split("stage ", 1)[1].split(":")[0] for line in proc.stderr.splitlines()
                     if ": start (key" in line)
    assert [s for s in started if "/train/" in s] == ["classical/train/cells/s2-n1", "classical/train/cells/s2-nall"]
    assert all("/s2-" in s or s == "classical/results" for s in started), started


def test_report_draws_the_label_efficiency_plot(trial_run: tuple[Path, str], tmp_path: Path,
                                                subprocess_env: dict[str, str]) -> None:
    out, _ = trial_run
    _cli(subprocess_env, "report", str(out), "--out", str(tmp_path))
    png = tmp_path / "label_efficiency" / "cells__spec_test.png"
    assert png.read_bytes()[:4] == b"\x89PNG"
    needed = json.loads((tmp_path / "label_efficiency.json").read_text())["needed"]
    seeds = sum(tag.endswith("-nall") for tag in json.loads((out / "train_subsets.json").read_text()))
    assert [(n["model"], n["target"], n["images_all"], n["seeds"]) for n in needed] == [("classical", "cells", 3,
                                                                                          seeds)]
    assert "Label efficiency" in (tmp_path / "report.html").read_text()
    # overlays come from the untagged (zero-shot) predictions; *.models.json are not read as predictions
    overlays = sorted(p.name for p in (tmp_path / "overlays").rglob("*.png") if p.name != "contact_sheet.png")
    assert overlays and all("zero_shot" in name for name in overlays), overlays
