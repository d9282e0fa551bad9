"""`c6bench bench` end to end (classical baseline on the real sample), result schema, resume, skips."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness.run import BenchSpec, Runner

SCORES = {"tp", "fp", "fn", "precision", "recall", "f1", "ap"}


def _bench(out: Path, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "harness", "bench", "--model", "classical", "--data", "sample", "--out", str(out),
         "--bootstrap", "50", *extra],
        capture_output=True, text=True, env=env, timeout=600,
    )


@pytest.fixture(scope="module")
def classical_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    import os

    nonet, repo = Path(__file__).resolve().parents[1] / "_nonet", Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(nonet), str(repo)]), TQDM_DISABLE="1")
    out = tmp_path_factory.mktemp("bench") / "run"
    proc = _bench(out, env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


def test_result_files_and_schema(classical_run) -> None:
    out, proc = classical_run
    for name in ("config.yaml", "manifest.json", "results.json", "results.csv", "results.md", "per_image.csv"):
        assert (out / name).is_file(), name
    results = json.loads((out / "results.json").read_text())
    rows = results["rows"]
    assert [(r["mode"], r["target"], r["subset"], r["status"]) for r in rows] == [
        ("zero_shot", "cells", "spec/test", "ok"), ("finetuned", "cells", "spec/test", "ok")]
    for row in rows:
        assert row["n_images"] == 2 and row["profile"] == "quick"
        for gt_mode in ("overlap", "resolved"):
            block = row["metrics"][gt_mode]
            assert block["n_gt"] == (138 if gt_mode == "overlap" else 137)  # 2-px frame rule; set45's nested cell
            for t in ("0.5", "0.75", "0.9"):
                pooled = block["pooled"][t]
                assert SCORES <= set(pooled) and pooled["tp"] + pooled["fn"] == block["n_gt"]
                assert abs(pooled["ap"] - pooled["f1"] / (2 - pooled["f1"])) < 1e-9 if pooled["f1"] else True
                assert "ci" in pooled
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["device"] == "cpu" and manifest["seed"] == 0 and "numpy" in manifest["versions"]
    import skimage

    notes = json.loads((out / "predictions" / "finetuned" / "cells" / "spec_test.models.json").read_text())
    assert notes["versions"] == {"scikit-image": skimage.__version__}  # the adapter's versions(), where it ran
    assert manifest["versions"]["scikit-image"] == skimage.__version__
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["model"]["model"] == "classical" and config["data"]["name"] == "sample"
    with (out / "per_image.csv").open() as handle:
        per_image = list(csv.DictReader(handle))
    assert len(per_image) == 2 * 2 * 2 * 3  # modes × images × GT modes × thresholds
    assert {"model", "mode", "subset", "gt_mode", "image", "threshold", "tp", "fp", "fn"} <= set(per_image[0])
    assert "Table 2" in proc.stdout and "Table 4" in proc.stdout and "| classical | finetuned | cells |" in proc.stdout
    preds = json.loads((out / "predictions" / "finetuned" / "cells" / "spec_test.json").read_text())
    assert {i["file_name"] for i in preds["images"]} == {"set28.tif", "set45.tif"}


def test_rerun_reuses_finished_stages(classical_run, subprocess_env) -> None:
    out, _ = classical_run
    before = json.loads((out / "results.json").read_text())
    proc = _bench(out, {**subprocess_env, "TQDM_DISABLE": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "stage classical/train/cells: reusing finished stage" in proc.stderr
    assert proc.stderr.count("reusing finished stage") == 6  # train, 2 predict, 2 evaluate, results
    assert json.loads((out / "results.json").read_text())["rows"] == before["rows"]


def test_changed_scoring_setting_reruns_only_downstream_stages(classical_run, subprocess_env, tmp_path) -> None:
    """A new bootstrap count changes the evaluate keys: training and prediction are reused, scoring redone."""
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(classical_run[0], out)
    proc = subprocess.run(
        [sys.executable, "-m", "harness", "bench", "--model", "classical", "--data", "sample", "--out", str(out),
         "--bootstrap", "20"], capture_output=True, text=True, env={**subprocess_env, "TQDM_DISABLE": "1"},
        timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    reused = sorted(line.split("stage ")[1].split(":")[0] for line in proc.stderr.splitlines()
                    if "reusing finished stage" in line)
    ran = sorted(line.split("stage ")[1].split(":")[0] for line in proc.stderr.splitlines() if ": start (key" in line)
    assert reused == ["classical/predict/finetuned/cells/spec_test", "classical/predict/zero_shot/cells/spec_test",
                      "classical/train/cells"]
    assert ran == ["classical/evaluate/finetuned/cells/spec_test", "classical/evaluate/zero_shot/cells/spec_test",
                   "classical/results"]


def test_missing_zero_shot_weights_are_recorded_as_skipped(tmp_path: Path, monkeypatch) -> None:
    """Zero-shot cellpose without cyto3 in the cache: skipped with the fetch command, nothing faked."""
    runner = Runner(BenchSpec(model="cellpose", data="sample", out=tmp_path / "r", modes=["zero_shot"],
                              device="cpu", bootstrap=0))
    runner.run()
    (row,) = json.loads((tmp_path / "r" / "results.json").read_text())["rows"]
    assert row["status"] == "skipped" and row["mode"] == "zero_shot" and row["metrics"] == {}
    assert "weights cyto3 not found" in row["reason"] and "c6bench weights fetch cyto3" in row["reason"]
    assert "skipped: weights cyto3 not found" in (tmp_path / "r" / "results.md").read_text()


def test_bad_requests_fail_before_any_work(tmp_path: Path) -> None:
    from harness.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown target"):
        Runner(BenchSpec(model="classical", data="sample", targets=["soma"], out=tmp_path))
    with pytest.raises(ConfigError, match="unknown model"):
        Runner(BenchSpec(model="nope", data="sample", out=tmp_path))
    with pytest.raises(ConfigError, match="no CUDA device"):
        Runner(BenchSpec(model="classical", data="sample", device="cuda", out=tmp_path))
