"""Ultralytics, made offline and side-effect free for one process (checked against ultralytics 8.4.190).

Ultralytics reaches for the network in many places (font download, AMP check asset, official weight
names, pip update check, telemetry, logger integrations) and changes process-wide state on import
(``OMP_NUM_THREADS=1``, ``cv2.setNumThreads(0)``) and on every train/predict (``torch.set_num_threads`` to
``cpu_count - 1``). `ultralytics_offline()` neutralises all of that once per process, *before* the import, so the
user never has to set anything and the other adapters in the same process keep their speed. Also here: loading
and checking YOLO checkpoint files, the released COCO weights, and turning a result into `Instance`s.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from adapters.base import WeightSpec
from harness.errors import ConfigError, DataError
from harness.io import atomic_path

if TYPE_CHECKING:
    from harness.records import Instance, Sample

_ASSETS = "https://github.com/ultralytics/assets/releases/download/v8.3.0"
#: Environment that makes ultralytics offline; set before its import (it reads them at import time).
OFFLINE_ENV = {"YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "0"}
#: Every settings key that can send data somewhere; all off.
_QUIET_SETTINGS = ("sync", "clearml", "comet", "dvc", "mlflow", "raytune", "tensorboard", "wandb",
                   "vscode_msg", "openvino_msg")
#: Torch thread count of the process before ultralytics touched it (restored around every call).
_THREADS: int | None = None


def released(size: str, what: str) -> WeightSpec:
    """The COCO-pretrained ``yolo11{size}-seg.pt`` of Ultralytics' assets release (no hash published)."""
    return WeightSpec(
        name=f"yolo11{size}-seg",
        file=f"yolo11{size}-seg.pt",
        url=f"{_ASSETS}/yolo11{size}-seg.pt",
        sha256=None,
        licence="AGPL-3.0 (Ultralytics; Enterprise licence available)",
        description=f"YOLO11{size}-seg, COCO-pretrained (80 classes, no cell class); {what}",
    )


def ultralytics_offline() -> ModuleType:
    """Import ultralytics once per process with every network path and global side effect neutralised.

    - ``YOLO_OFFLINE=1`` makes ``ultralytics.utils.ONLINE`` False (no pip update check, no auto-install,
      no telemetry); ``YOLO_AUTOINSTALL=0`` as a second lock. Both are read at import.
    - ``YOLO_CONFIG_DIR`` (kept when the user set it, else ``$C6BENCH_WEIGHTS/ultralytics``) holds
      ``settings.json``, in which sync and every logger integration are switched off and the runs /
      weights / datasets folders are made absolute (the defaults point into the current git checkout).
    - A redistributable font (matplotlib's DejaVu Sans) is put where `check_font` looks for ``Arial.ttf``:
      `check_det_dataset` calls it on every training even with ``plots=False`` and would otherwise send an
      HTTP HEAD to GitHub and try to download.
    - ``OMP_NUM_THREADS`` (set to 1 by ``import ultralytics`` when unset), OpenCV's thread count and
      numpy's print options are restored; torch is imported first so it reads the user's value, not
      ultralytics' 1. (Left as ultralytics sets them: a retrying ``torch.save`` wrapper, some warning
      filters, and log-level variables for TF/Kineto/NumExpr.)
    """
    global _THREADS
    if "ultralytics" not in sys.modules:
        os.environ.update(OFFLINE_ENV)
        if not os.environ.get("YOLO_CONFIG_DIR"):
            from harness.weights import cache_dir

            os.environ["YOLO_CONFIG_DIR"] = str(cache_dir() / "ultralytics")
        Path(os.environ["YOLO_CONFIG_DIR"]).expanduser().mkdir(parents=True, exist_ok=True)
        omp = os.environ.get("OMP_NUM_THREADS")
        import cv2
        import numpy as np
        import torch

        _THREADS, cv_threads, np_print = torch.get_num_threads(), cv2.getNumThreads(), np.get_printoptions()
        import ultralytics

        if omp is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = omp
        cv2.setNumThreads(cv_threads)
        torch.set_num_threads(_THREADS)
        np.set_printoptions(**np_print)  # ultralytics sets a 320-column "%11.5g" float format process-wide
    import ultralytics
    from ultralytics.utils import ONLINE, SETTINGS, USER_CONFIG_DIR

    if _THREADS is None:  # imported by someone else first: keep whatever the process has now
        import torch

        _THREADS = torch.get_num_threads()
    if ONLINE:
        raise ConfigError(
            "ultralytics was imported before the yolo11 adapter could make it offline (YOLO_OFFLINE was unset at "
            "import), so it may reach the network; set YOLO_OFFLINE=1 in the environment or do not import "
            "ultralytics before using the adapter"
        )
    _quiet_settings(SETTINGS, Path(USER_CONFIG_DIR))
    _install_font(Path(USER_CONFIG_DIR))
    return ultralytics


def _quiet_settings(settings: Any, config_dir: Path) -> None:
    """Sync and integrations off, folders absolute under the config dir (written only when they differ)."""
    wanted: dict[str, Any] = dict.fromkeys(_QUIET_SETTINGS, False)
    wanted.update({sub: str(config_dir / sub.removesuffix("_dir")) for sub in ("runs_dir", "weights_dir", "datasets_dir")})
    changed = {k: v for k, v in wanted.items() if settings.get(k) != v}
    if changed:
        settings.update(changed)


def _install_font(config_dir: Path) -> None:
    """Copy matplotlib's bundled DejaVu Sans (free licence) to the names ultralytics looks up locally first."""
    import matplotlib

    source = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    for name in ("Arial.ttf", "Arial.Unicode.ttf"):
        target = config_dir / name
        if not target.is_file():
            with atomic_path(target) as partial:
                shutil.copyfile(source, partial)


def check_no_platform_key(settings: Any) -> None:
    """An Ultralytics Platform API key makes every training upload its run; refuse instead of uploading."""
    if os.environ.get("ULTRALYTICS_API_KEY") or settings.get("api_key"):
        raise ConfigError(
            "an Ultralytics Platform API key is set (ULTRALYTICS_API_KEY or 'api_key' in "
            f"{settings.file}); ultralytics would upload this training run. Unset it, or point YOLO_CONFIG_DIR "
            "at another folder"
        )


def thread_guard(yolo: Any) -> None:
    """Keep the process's torch thread count through ultralytics calls and drop its cached results.

    `select_device` sets ``torch.set_num_threads(min(8, cpu_count - 1))`` on CPU at the start of every
    trainer / validator / predictor; the callbacks below run right after it and put the count back.
    The predictor also keeps its last results (N full-size masks) alive until the next call; drop them.
    """
    import torch

    def restore(_: Any) -> None:
        torch.set_num_threads(_THREADS or torch.get_num_threads())

    def drop_results(predictor: Any) -> None:
        predictor.results = None
        predictor.batch = None

    for event in ("on_pretrain_routine_start", "on_train_start", "on_val_start", "on_predict_start"):
        yolo.add_callback(event, restore)
    yolo.add_callback("on_predict_end", drop_results)


def check_pt(path: Path) -> None:
    if path.suffix.lower() != ".pt":
        raise ConfigError(f"{path}: not an ultralytics checkpoint (expected a .pt file written by YOLO training)")


def load_yolo(ul: ModuleType, path: Path) -> Any:
    """``YOLO(path)`` for an existing absolute file; a foreign or non-segmentation file fails clearly."""
    try:
        yolo = ul.YOLO(str(path))
    except (TypeError, AttributeError, KeyError, ModuleNotFoundError, RuntimeError, AssertionError) as exc:
        raise DataError(f"{path}: not a loadable ultralytics YOLO checkpoint ({type(exc).__name__}: "
                        f"{str(exc).strip().splitlines()[0] if str(exc).strip() else exc!r})") from exc
    if getattr(yolo, "task", None) != "segment":
        raise DataError(f"{path}: an ultralytics {getattr(yolo, 'task', '?')} model, not a segmentation (-seg) "
                        "model; YOLO instance masks need a *-seg checkpoint")
    return yolo


def classes_of(samples: Sequence[Sample]) -> list[str]:
    """Instance categories in first-appearance order; no instances at all is a data error."""
    classes: dict[str, None] = {}
    for sample in samples:
        for inst in sample.instances:
            classes.setdefault(inst.category, None)
    if not classes:
        raise DataError("no annotated instances in the training and validation samples; nothing to train YOLO on")
    return list(classes)


def sidecar(checkpoint: Path) -> Path:
    return checkpoint.with_name(checkpoint.name + ".json")


def architecture(yolo: Any) -> str:
    """The architecture a model was built from, e.g. ``yolo11l-seg`` (from its recorded YAML name)."""
    yaml = getattr(yolo.model, "yaml", None) or {}
    return Path(str(yaml.get("yaml_file") or "unknown")).stem


def amp_arg(amp: str, device: str) -> bool | str:
    """ultralytics' ``amp`` argument: never its fp16 path (its AMP check downloads ``yolo26n.pt``)."""
    if amp == "off" or not str(device).startswith("cuda"):
        return False
    if amp == "bf16":
        return "bf16"
    import torch

    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else False


def predict_size(imgsz: int, predict_imgsz: int | str | None, height: int, width: int) -> int:
    """The network size at prediction: `imgsz` (None), ``"native"`` (longer side rounded up to 32) or the int."""
    if predict_imgsz is None:
        return imgsz
    if predict_imgsz == "native":
        return 32 * math.ceil(max(height, width) / 32)
    return int(predict_imgsz)


def instances_from_result(result: Any, height: int, width: int, source: str) -> list[Instance]:
    """One `Instance` (bbox crop, score, class name) per detection of an ultralytics result; overlaps kept."""
    from harness.records import Instance

    instances: list[Instance] = []
    if result.masks is None:
        return instances
    masks = result.masks.data  # (N, H, W) uint8 at the original size; each zero outside its box
    boxes = result.boxes.xyxy.cpu().numpy()
    scores = result.boxes.conf.cpu().numpy()
    labels = result.boxes.cls.cpu().numpy().astype(int)
    for k in range(len(boxes)):
        x0, y0, x1, y1 = boxes[k]
        r0, r1 = max(0, math.floor(y0)), min(height, math.ceil(y1))
        c0, c1 = max(0, math.floor(x0)), min(width, math.ceil(x1))
        crop = masks[k, r0:r1, c0:c1].cpu().numpy().astype(bool)
        if not crop.any():
            continue
        instances.append(Instance.from_mask(str(result.names[int(labels[k])]), r0, c0, crop, height, width,
                                            order=len(instances), score=float(scores[k]), source=source))
    return instances
