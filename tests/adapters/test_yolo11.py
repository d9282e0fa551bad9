"""YOLO11-seg adapter: schema, offline guarantees, a real 1-epoch train + predict + save/load round trip.

Training data are two 160 px crops of the bundled Usiigaci sample (real phase-contrast cells); the model is
``yolo11n-seg`` built from its YAML (random init), trained 1 epoch at 160 px. The offline test records
every socket connection / DNS lookup and every ultralytics download entry point during training and
prediction, and asserts that none happened.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import adapters
from harness.coco import load_coco
from harness.errors import ConfigError, DataError, MissingWeightsError
from harness.records import Instance, Sample

CROP = 160
ORIGIN = (300, 300)  # (y, x) of the crop window in the 1024x1022 sample images
#: The contract test's tiny settings (tests/adapters/test_contract.py): nano model, one epoch of one image at 64 px.
CONTRACT = {"params": {"model_size": "n", "imgsz": 64, "conf": 0.001, "max_det": 40},
            "train": {"epochs": 1, "batch": 1, "nbs": 1}}


def crop_samples(sample_dir: Path, out: Path, names: tuple[str, ...]) -> list[Sample]:
    """CROP x CROP windows of real sample images with their polygons shifted and clamped into the window."""
    import tifffile

    samples, _ = load_coco(sample_dir / "spec" / "train" / "annotations.coco.json")
    out.mkdir(parents=True, exist_ok=True)
    y0, x0 = ORIGIN
    crops = []
    for sample in (s for s in samples if s.name in names):
        path = out / f"{sample.name}_crop.tif"
        tifffile.imwrite(path, sample.load_image()[y0 : y0 + CROP, x0 : x0 + CROP])
        instances = []
        for inst in sample.instances:
            parts = [np.clip(p - (x0, y0), 0, CROP) for p in inst.polygons]
            parts = [p for p in parts if np.ptp(p[:, 0]) >= 4 and np.ptp(p[:, 1]) >= 4]
            if parts:
                instances.append(Instance("cells", CROP, CROP, order=len(instances), polygons=tuple(parts)))
        crops.append(Sample(path, CROP, CROP, tuple(instances), image_id=len(crops), file_name=path.name))
    return crops


def same_instances(a: list[Instance], b: list[Instance]) -> bool:
    return len(a) == len(b) and all(
        x.category == y.category and x.bbox == y.bbox and x.score == y.score and np.array_equal(x.crop, y.crop)
        for x, y in zip(a, b)
    )


# --------------------------------------------------------------------------------------------- schema


def test_registered_with_schema_and_weights_table() -> None:
    cls = adapters.get("yolo11")
    assert (cls.multiclass, cls.needs_label_maps) == (True, False)
    assert [w.name for w in cls.weights] == ["yolo11l-seg", "yolo11n-seg"]
    assert cls.weights[0].url == "https://github.com/ultralytics/assets/releases/download/v8.3.0/yolo11l-seg.pt"
    with pytest.raises(ConfigError, match="unknown key.*colour"):
        cls.build({"colour": "red"})
    with pytest.raises(ConfigError, match=r"model 'yolo11'.model_size: must be one of 'n', 's', 'm', 'l', 'x', got 'q'"):
        cls.build({"model_size": "q"})
    with pytest.raises(ConfigError, match=r"model 'yolo11'.imgsz: must be >= 32 and multiple of 32, got 1000"):
        cls.build({"imgsz": 1000})
    with pytest.raises(ConfigError, match=r"predict_imgsz must be a multiple of 32, 'native' or null, got 'full'"):
        cls.build({"predict_imgsz": "full"})
    with pytest.raises(ConfigError, match="bf16.*CUDA"):
        cls.build({"amp": "bf16"})
    with pytest.raises(ConfigError, match="unknown key.*imgsz"):
        cls.check_schedule({"epochs": 1, "imgsz": 640})  # the network size is a model param, not a schedule key


def test_missing_weights_name_the_fetch_command() -> None:
    with pytest.raises(MissingWeightsError, match="c6bench weights fetch yolo11l-seg"):
        adapters.get("yolo11").build(weights="yolo11l-seg")


def test_lr0_without_optimizer_fails_before_any_work(tmp_path: Path) -> None:
    adapter = adapters.get("yolo11").build({"model_size": "n", "imgsz": 160})
    sample = Sample(tmp_path / "x.tif", 8, 8, ())
    with pytest.raises(ConfigError, match="lr0=0.01 is ignored"):
        adapter.train([sample], [sample], tmp_path, lr0=0.01)
    assert not any(tmp_path.iterdir())


def test_load_rejects_foreign_files(tmp_path: Path) -> None:
    import torch

    adapter = adapters.get("yolo11").build({"model_size": "n"})
    with pytest.raises(MissingWeightsError, match="does not exist"):
        adapter.load(tmp_path / "yolo11n-seg.pt")  # an official name must not trigger a download
    state = tmp_path / "state.pt"
    torch.save({"weight": torch.zeros(3)}, state)
    with pytest.raises(DataError, match="state.pt: not a loadable ultralytics YOLO checkpoint"):
        adapter.load(state)
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    with pytest.raises(DataError, match="notes.pt: not a loadable ultralytics YOLO checkpoint"):
        adapter.load(text)
    with pytest.raises(ConfigError, match="expected a .pt file"):
        adapter.load(Path(__file__))


# --------------------------------------------------------------------------------------------- offline


def test_import_is_offline_and_keeps_thread_settings(subprocess_env: dict[str, str], tmp_path: Path) -> None:
    """In a fresh process: env set, settings quiet, font in place, OMP_NUM_THREADS and torch threads untouched."""
    env = {k: v for k, v in subprocess_env.items() if k not in ("YOLO_CONFIG_DIR", "YOLO_OFFLINE", "OMP_NUM_THREADS")}
    env["C6BENCH_WEIGHTS"] = str(tmp_path)
    code = (
        "import json, os, torch; n = torch.get_num_threads(); import cv2; c = cv2.getNumThreads()\n"
        "from adapters._upstream.ultralytics import ultralytics_offline; ultralytics_offline()\n"
        "from ultralytics.utils import ONLINE, SETTINGS, USER_CONFIG_DIR\n"
        "print(json.dumps({'omp': os.environ.get('OMP_NUM_THREADS'), 'threads': torch.get_num_threads() == n,"
        " 'cv2': cv2.getNumThreads() == c, 'np': __import__('numpy').get_printoptions()['linewidth'], 'offline': os.environ['YOLO_OFFLINE'], 'online': ONLINE,"
        " 'autoinstall': os.environ['YOLO_AUTOINSTALL'], 'dir': str(USER_CONFIG_DIR),"
        " 'settings': {k: SETTINGS[k] for k in ('sync', 'mlflow', 'comet', 'clearml', 'dvc', 'raytune', 'runs_dir')}}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    config = tmp_path / "ultralytics" / "Ultralytics"
    assert got == {
        "omp": None, "threads": True, "cv2": True, "np": 75, "offline": "1", "online": False, "autoinstall": "0",
        "dir": str(config),
        "settings": {"sync": False, "mlflow": False, "comet": False, "clearml": False, "dvc": False,
                     "raytune": False, "runs_dir": str(config / "runs")},
    }
    assert (config / "Arial.ttf").read_bytes()[:4] == b"\x00\x01\x00\x00"  # a TrueType font
    assert (config / "Arial.Unicode.ttf").is_file()


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, sample_dir: Path) -> dict[str, Any]:
    """Train 1 epoch at 160 px with every network path recorded; predict; all under the offline guard."""
    import torch

    from adapters._upstream.ultralytics import ultralytics_offline

    root = tmp_path_factory.mktemp("yolo")
    patch = pytest.MonkeyPatch()
    for var, sub in (("YOLO_CONFIG_DIR", "yolo"), ("C6BENCH_WEIGHTS", "weights")):  # as conftest's isolated_caches
        (tmp_path_factory.getbasetemp() / "caches" / sub).mkdir(parents=True, exist_ok=True)
        patch.setenv(var, str(tmp_path_factory.getbasetemp() / "caches" / sub))
    ultralytics_offline()
    import ultralytics.data.utils as data_utils
    import ultralytics.engine.trainer as trainer
    import ultralytics.utils.checks as checks
    import ultralytics.utils.downloads as downloads

    attempts: list[str] = []

    def refuse(what: str):
        def fn(*args: Any, **kwargs: Any) -> Any:
            attempts.append(f"{what}{args}")
            raise AssertionError(f"network path reached: {what}{args}")
        return fn

    real_asset, real_is_url = downloads.attempt_download_asset, downloads.is_url
    patch.setattr(downloads, "attempt_download_asset",
                  lambda f, *a, **k: real_asset(f) if Path(str(f)).is_file() else refuse("attempt_download_asset")(f))
    patch.setattr(downloads, "is_url", lambda u, check=False: refuse("is_url")(u) if check else real_is_url(u))
    for module, name in ((downloads, "safe_download"), (downloads, "get_github_assets"), (downloads, "download"),
                         (data_utils, "safe_download"), (data_utils, "download"), (trainer, "check_amp"),
                         (checks, "check_latest_pypi_version")):
        patch.setattr(module, name, refuse(f"{module.__name__}.{name}"))
    real_connect, real_getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def connect(sock: socket.socket, address: Any) -> Any:
        if sock.family != getattr(socket, "AF_UNIX", None):
            attempts.append(f"connect{address!r}")
        return real_connect(sock, address)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        attempts.append(f"getaddrinfo({host!r})")
        return real_getaddrinfo(host, *args, **kwargs)

    patch.setattr(socket.socket, "connect", connect)
    patch.setattr(socket, "getaddrinfo", getaddrinfo)
    omp, threads = os.environ.get("OMP_NUM_THREADS"), torch.get_num_threads()
    try:
        samples = crop_samples(sample_dir, root / "crops", ("set18", "set30"))
        adapter = adapters.get("yolo11").build({"model_size": "n", "imgsz": CROP, "conf": 0.001, "max_det": 40})
        checkpoint = adapter.train(samples, samples[:1], root / "run", epochs=1, batch=2, nbs=2)
        image = samples[0].load_image()
        preds = adapter.predict(image)
        again = adapter.predict(image)
        fresh = adapters.get("yolo11").build({"model_size": "n", "imgsz": CROP, "conf": 0.001, "max_det": 40})
        fresh.load(checkpoint)
        reloaded = fresh.predict(image)
    finally:
        patch.undo()
    return {"attempts": attempts, "checkpoint": checkpoint, "root": root, "samples": samples, "preds": preds,
            "again": again, "reloaded": reloaded, "env": (os.environ.get("OMP_NUM_THREADS"), torch.get_num_threads()),
            "env_before": (omp, threads), "offline": os.environ.get("YOLO_OFFLINE")}


def test_training_and_prediction_attempt_no_download(trained: dict[str, Any]) -> None:
    assert trained["attempts"] == []
    assert trained["offline"] == "1"
    assert trained["env"] == trained["env_before"]  # OMP_NUM_THREADS and torch threads as before


def test_train_writes_under_out_dir_with_classes(trained: dict[str, Any]) -> None:
    root, checkpoint = trained["root"], trained["checkpoint"]
    assert checkpoint == root / "run" / "train" / "weights" / "best.pt"
    assert sorted(p.name for p in (root / "run" / "yolo_data" / "images" / "train").iterdir()) == [
        "set18_crop.png", "set30_crop.png"]
    side = json.loads((checkpoint.parent / "best.pt.json").read_text())
    assert (side["classes"], side["architecture"], side["init"], side["imgsz"], side["epochs"]) == (
        ["cells"], "yolo11n-seg", "scratch", CROP, 1)
    assert not (Path.cwd() / "runs").exists() or not any((Path.cwd() / "runs").glob("segment*"))


def test_predict_gives_scored_overlapping_crops(trained: dict[str, Any]) -> None:
    preds: list[Instance] = trained["preds"]
    assert 0 < len(preds) <= 40
    assert {p.category for p in preds} == {"cells"}
    assert all(0.001 <= p.score <= 1.0 for p in preds)
    for p in preds:
        y0, x0, y1, x1 = p.bbox
        assert 0 <= y0 < y1 <= CROP and 0 <= x0 < x1 <= CROP
        assert p.crop.shape == (y1 - y0, x1 - x0) and p.crop.any(axis=1).all() and p.crop.any(axis=0).all()
    boxes = [p.bbox for p in preds]
    overlapping = sum(
        1 for i, a in enumerate(boxes) for b in boxes[i + 1 :] if a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]
    )
    assert overlapping > 0  # overlapping detections are kept as separate instances


def test_save_load_round_trip_is_identical(trained: dict[str, Any]) -> None:
    assert same_instances(trained["preds"], trained["again"])
    assert same_instances(trained["preds"], trained["reloaded"])


def test_load_rejects_sidecar_of_another_checkpoint(trained: dict[str, Any], tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "best.pt"
    shutil.copyfile(trained["checkpoint"], copy)
    (tmp_path / "best.pt.json").write_text(json.dumps({"classes": ["type_a", "type_b"]}))
    with pytest.raises(DataError, match="differ from"):
        adapters.get("yolo11").build().load(copy)


def test_predict_without_weights_fails_clearly() -> None:
    with pytest.raises(ConfigError, match="no weights to predict with"):
        adapters.get("yolo11").build().predict(np.zeros((64, 64), dtype=np.uint16))
