"""Content-keyed resume: after an edit, a re-run recomputes exactly the stages that read what changed.

The real CLI runs on a copy of the project (sources, configs and the bundled sample), so the test can edit
annotations, images, weights and code without touching the checkout. The model is the classical baseline
plus one thing it lacks, a weights file (``adapters/toyweights.py``, written into the copy): its zero-shot row
reads its parameters from a JSON weights file, so a replaced weights file can be tested.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from harness import keys

REPO = Path(__file__).resolve().parents[2]
NONET = Path(__file__).resolve().parents[1] / "_nonet"

TOY_ADAPTER = '''
"""The classical baseline with a weights file (for the resume tests): zero-shot params come from a JSON file."""
import json

from adapters import register
from adapters.classical import ClassicalAdapter
from harness.weights import resolve


@register("toyweights")
class ToyWeights(ClassicalAdapter):
    def __init__(self, weights: str | None = None, device: str = "cpu", sigma: float = 2.0,
                 threshold_scale: float = 1.0, min_distance: int = 30) -> None:
        super().__init__(None, device, sigma=sigma, threshold_scale=threshold_scale, min_distance=min_distance)
        if weights:
            self.params.update(json.loads(resolve(weights).read_text()))
'''
TOY_CONFIG = """model: toyweights
params: {{sigma: {sigma}, threshold_scale: {scale}, min_distance: 30}}
zero_shot: {{weights: {weights}}}
finetune: {{init: null}}
profiles:
  quick:
    train: {{threshold_scales: [0.8, 1.1], min_distances: [30]}}
"""

STAGES = {
    "train": "toyweights/train/cells",
    "predict_zs": "toyweights/predict/zero_shot/cells/spec_test",
    "predict_ft": "toyweights/predict/finetuned/cells/spec_test",
    "evaluate_zs": "toyweights/evaluate/zero_shot/cells/spec_test",
    "evaluate_ft": "toyweights/evaluate/finetuned/cells/spec_test",
    "results": "toyweights/results",
}


class Project:
    """A copy of the project with a run dir; `bench()` re-runs and returns the ids of the stages it ran."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.run_dir = root / "runs" / "toy"
        self.weights = root / "weights" / "toy.json"
        for part in ("harness", "adapters", "metrics", "configs"):
            shutil.copytree(REPO / part, root / part, ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copytree(REPO / "data" / "sample", root / "data" / "sample")
        (root / "adapters" / "toyweights.py").write_text(TOY_ADAPTER)
        self.weights.parent.mkdir()
        self.weights.write_text(json.dumps({"sigma": 2.0}))
        self.configure(sigma=2.0, scale=1.0)

    def configure(self, sigma: float, scale: float) -> None:
        (self.root / "configs" / "models" / "toyweights.yaml").write_text(
            TOY_CONFIG.format(sigma=sigma, scale=scale, weights=self.weights)
        )

    def bench(self) -> set[str]:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(NONET), str(self.root)]), TQDM_DISABLE="1")
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "harness",
                "bench",
                "--model",
                "toyweights",
                "--data",
                "sample",
                "--out",
                str(self.run_dir),
                "--bootstrap",
                "0",
                "--device",
                "cpu",
                "--threads",
                "1",
            ],
            cwd=self.root,
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        ran = {
            line.split("stage ")[1].split(":")[0]
            for line in proc.stderr.splitlines()
            if ": start (key" in line
        }
        reused = {
            line.split("stage ")[1].split(":")[0]
            for line in proc.stderr.splitlines()
            if "reusing finished stage" in line
        }
        assert ran | reused == set(STAGES.values()) and not ran & reused, (ran, reused)
        return {name for name, stage_id in STAGES.items() if stage_id in ran}

    def edit_polygon(self, split: str) -> None:
        path = self.root / "data" / "sample" / "spec" / split / "annotations.coco.json"
        data = json.loads(path.read_text())
        polygon = data["annotations"][5]["segmentation"][0]
        polygon[0] += 3  # one vertex moves 3 px
        path.write_text(json.dumps(data))


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    project = Project(tmp_path_factory.mktemp("copy"))
    assert project.bench() == set(STAGES)
    return project


def test_untouched_rerun_reuses_every_stage(project: Project) -> None:
    assert project.bench() == set()


def test_replaced_weights_file_reruns_the_zero_shot_row_only(project: Project) -> None:
    project.weights.write_text(json.dumps({"sigma": 2.5}))  # same name, new content
    assert project.bench() == {"predict_zs", "evaluate_zs", "results"}


def test_edited_test_annotation_rescores_without_predicting_again(project: Project) -> None:
    project.edit_polygon("test")
    assert project.bench() == {"evaluate_zs", "evaluate_ft", "results"}


def test_edited_training_annotation_retrains_and_reruns_the_finetuned_row(project: Project) -> None:
    project.edit_polygon("train")
    assert project.bench() == {"train", "predict_ft", "evaluate_ft", "results"}


def test_replaced_test_image_predicts_again(project: Project) -> None:
    import tifffile

    path = project.root / "data" / "sample" / "spec" / "test" / "images" / "set28.tif"
    image = tifffile.imread(path)
    image[:50, :50] = image[:50, :50][::-1]  # same size, other pixels
    tifffile.imwrite(path, image)
    assert project.bench() == {"predict_zs", "predict_ft", "evaluate_zs", "evaluate_ft", "results"}


def test_code_change_reruns_the_stages_whose_code_changed(project: Project) -> None:
    with (project.root / "harness" / "predictions.py").open("a") as handle:
        handle.write("\n# an edit to the prediction writer\n")
    assert project.bench() == {"predict_zs", "predict_ft", "evaluate_zs", "evaluate_ft", "results"}


def test_replaced_checkpoint_predicts_again_without_retraining(project: Project) -> None:
    """The key of a prediction holds the digest of the checkpoint it loads, not its path."""
    record = json.loads((project.run_dir / "stages" / "train__cells.stage.json").read_text())
    checkpoint = project.run_dir / record["outputs"]["checkpoint"]
    data = json.loads(checkpoint.read_text())
    data["params"]["min_distance"] += 5
    checkpoint.write_text(json.dumps(data))
    assert project.bench() == {"predict_ft", "evaluate_ft", "results"}


def test_predict_only_param_does_not_retrain(project: Project) -> None:
    project.configure(sigma=2.0, scale=0.9)  # threshold_scale: predict-only (train overwrites it)
    assert project.bench() == {"predict_zs", "predict_ft", "evaluate_zs", "evaluate_ft", "results"}
    project.configure(sigma=2.2, scale=0.9)  # sigma: used by training
    assert project.bench() == set(STAGES)


def test_code_keys_follow_the_imports_of_each_stage_kind() -> None:
    """An edit in metrics/ re-runs scoring but not a cellpose training or prediction; an adapter edit re-runs
    only that adapter's stages. The classical baseline's training does read metrics/ (it picks its threshold
    by F1), so its training key includes them."""
    rel = {
        kind: {str(p.relative_to(REPO)) for p in keys.code_files(kind, "cellpose")}
        for kind in keys.STAGE_ROOTS
    }
    assert "adapters/cellpose.py" in rel["train"] and "adapters/cellpose.py" in rel["predict"]
    assert not any(p.startswith("metrics/") for p in rel["train"] | rel["predict"])
    assert {"metrics/matching.py", "metrics/scores.py", "harness/evaluate.py"} <= rel["evaluate"]
    models = {f"adapters/{name}.py" for name in ("cellpose", "classical", "mediar", "cellseg1", "yolo11")}
    assert not models & rel["evaluate"]  # (the registry and base are imported by the weights cache lookup)
    assert "harness/predictions.py" in rel["predict"] and "harness/predictions.py" not in rel["train"]
    assert "harness/predictions.py" not in {str(p.relative_to(REPO)) for p in keys.code_files("train", "classical")}
    runner = {"harness/run.py", "harness/planner.py", "harness/plan.py"}  # the stage bodies and what they read
    assert runner <= rel["train"] and {*runner, "harness/results.py"} <= rel["results"]  # results.md's renderer
    assert not models & rel["results"] and not any(p.startswith("metrics/") for p in rel["results"])
    yolo = {str(p.relative_to(REPO)) for p in keys.code_files("predict", "yolo11")}
    assert {"adapters/yolo11.py", "adapters/_upstream/ultralytics.py"} <= yolo  # registry name = module = yolo11
    classical = {str(p.relative_to(REPO)) for p in keys.code_files("train", "classical")}
    assert "metrics/scores.py" in classical and "adapters/cellpose.py" not in classical


def test_outputs_digest_covers_folder_contents(tmp_path: Path) -> None:
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "a.bin").write_bytes(np.arange(10, dtype=np.uint8).tobytes())
    first = keys.outputs_digest(tmp_path, {"checkpoint": "ckpt"})
    (tmp_path / "ckpt" / "a.bin").write_bytes(np.arange(1, 11, dtype=np.uint8).tobytes())
    assert keys.outputs_digest(tmp_path, {"checkpoint": "ckpt"}) != first
