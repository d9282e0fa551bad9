"""`make gpu-check` (benchmarks/gpu_check.py) on CPU with a tiny setting: the device is named, every figure is
there and adds up. On a GPU machine the same command runs on CUDA (see README)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_gpu_check_on_cpu_prints_and_writes_every_figure(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    out = tmp_path / "gpu_check.json"
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--models", "classical,cellpose", "--steps", "1",
         "--size", "640x512", "--device", "cpu", "--weights", "random", "--out", str(out), "--work", str(tmp_path)],
        cwd=REPO, env={**subprocess_env, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert (report["device"], report["steps"], report["size"]) == ("cpu", 1, "640x512")
    assert report["weights"] == {"cyto3": "random, released layout", "nuclei": "random, released layout"}
    assert done.stdout.startswith("gpu-check: device cpu (CPU")
    assert "projected paper matrix on Glioma C6" in done.stdout and "all models:" in done.stdout
    classical, cellpose = report["models"]
    stages = {s["stage"]: s for s in cellpose["stages"]}
    assert {s["state"] for s in stages.values()} == {"done"}
    train = stages["train/cells"]
    assert train["optimizer_steps"] == 2  # 1 step + cellpose's LR-0 epoch 0
    assert train["s_per_step"] > 0 and train["peak_gpu_mib"] is None
    for mode in ("zero_shot", "finetuned"):
        assert stages[f"predict/{mode}/cells/spec_test"]["s_per_image"] > 0
        assert f"cellpose/predict/{mode}/cells/spec_test" in done.stdout
    projection = cellpose["projection"]
    assert (projection["units"], projection["paper_steps_per_unit"], projection["paper_samples_per_unit"]) == (
        4, 3996, 30000)
    # 4 units predict spec/test (11); cells also gen/test (30): 74 images per mode
    assert (projection["predict_zero_shot_images"], projection["predict_finetuned_images"]) == (74, 74)
    assert projection["total_s"] == round(projection["train_s"] + projection["predict_zero_shot_s"]
                                          + projection["predict_finetuned_s"], 1) > 0
    classical_train = next(s for s in classical["stages"] if s["kind"] == "train")
    assert classical_train["optimizer_steps"] == 0 and classical_train["s_per_step"] > 0  # grid settings
    assert report["projected_total_s"] == round(classical["projection"]["total_s"] + projection["total_s"], 1)
    data = json.loads((tmp_path / "data" / "spec" / "test" / "annotations.coco.json").read_text())
    assert (data["images"][0]["width"], data["images"][0]["height"]) == (640, 512)


@pytest.mark.slow
def test_gpu_check_measures_a_model_with_its_own_environment_under_it(tmp_path: Path,
                                                                    subprocess_env: dict[str, str]) -> None:
    """cellpose_sam's stages import cellpose 4: the check runs itself under that environment for it (real ViT-L)."""
    out = tmp_path / "gpu_check.json"
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--models", "classical,cellpose_sam", "--steps",
         "1", "--size", "512x512", "--device", "cpu", "--weights", "random", "--out", str(out), "--work",
         str(tmp_path)], cwd=REPO, env=subprocess_env, capture_output=True, text=True, timeout=3000)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["weights"] == {"cpsam": "random, released layout"}
    classical, sam = report["models"]
    assert classical["model"] == "classical" and sam["model"] == "cellpose_sam"
    stages = {s["stage"]: s for s in sam["stages"]}
    assert {s["state"] for s in stages.values()} == {"done"}, stages
    assert stages["train/cells"]["optimizer_steps"] == 2 and stages["train/cells"]["s_per_step"] > 0
    assert sam["projection"]["complete"] and sam["projection"]["paper_steps_per_unit"] == 99 * 30
