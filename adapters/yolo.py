"""YOLO11-seg (Ultralytics): one multi-class model, one mask per instance (overlaps kept), fully offline.

The paper trains ``yolo11l-seg`` on Glioma C6 as a single multi-class model (cell type A, cell type B,
soma) at 1024 px and predicts at the original resolution; this adapter does the same on the data layer's
YOLO export (`harness.convert.write_yolo_dataset`). A COCO-pretrained YOLO is not a cell model, so there is
no zero-shot row unless a user gives cell weights.

Ultralytics reaches for the network in many places (font download, AMP check asset, official weight
names, pip update check, telemetry, logger integrations) and changes process-wide state on import
(``OMP_NUM_THREADS=1``, ``cv2.setNumThreads(0)``) and on every train/predict (``torch.set_num_threads`` to
``cpu_count - 1``). `_ultralytics()` neutralises all of that once per process, *before* the import, so the
user never has to set anything and the other adapters in the same process keep their speed.
Everything below was checked against the code of ultralytics 8.4.190.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from adapters import register
from adapters.base import WeightSpec
from adapters.torch_base import TorchAdapter
from harness.errors import ConfigError, DataError, MissingWeightsError
from harness.io import atomic_path, write_text

if TYPE_CHECKING:
    import numpy as np

    from harness.data import Instance, Sample

logger = logging.getLogger(__name__)

SIZES = ("n", "s", "m", "l", "x")
AMP_MODES = ("auto", "bf16", "off")
_ASSETS = "https://github.com/ultralytics/assets/releases/download/v8.3.0"
#: Environment that makes ultralytics offline; set before its import (it reads them at import time).
OFFLINE_ENV = {"YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "0"}
#: Every settings key that can send data somewhere; all off.
_QUIET_SETTINGS = ("sync", "clearml", "comet", "dvc", "mlflow", "raytune", "tensorboard", "wandb",
                   "vscode_msg", "openvino_msg")
#: Torch thread count of the process before ultralytics touched it (restored around every call).
_THREADS: int | None = None


def _weight(size: str, what: str) -> WeightSpec:
    return WeightSpec(
        name=f"yolo11{size}-seg",
        file=f"yolo11{size}-seg.pt",
        url=f"{_ASSETS}/yolo11{size}-seg.pt",
        sha256=None,
        licence="AGPL-3.0 (Ultralytics; Enterprise licence available)",
        description=f"YOLO11{size}-seg, COCO-pretrained (80 classes, no cell class); {what}",
    )


# --------------------------------------------------------------------------------------------- offline setup


def _ultralytics() -> ModuleType:
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


def _check_no_platform_key(settings: Any) -> None:
    """An Ultralytics Platform API key makes every training upload its run; refuse instead of uploading."""
    if os.environ.get("ULTRALYTICS_API_KEY") or settings.get("api_key"):
        raise ConfigError(
            "an Ultralytics Platform API key is set (ULTRALYTICS_API_KEY or 'api_key' in "
            f"{settings.file}); ultralytics would upload this training run. Unset it, or point YOLO_CONFIG_DIR "
            "at another folder"
        )


def _thread_guard(yolo: Any) -> None:
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


# --------------------------------------------------------------------------------------------- adapter


@register("yolo11")
class YoloAdapter(TorchAdapter):
    """YOLO11-seg via ultralytics: multi-class, overlapping per-instance masks with scores."""

    description = "YOLO11-seg (Ultralytics, AGPL-3.0): one multi-class model, overlapping instance masks"
    multiclass = True
    needs_label_maps = False
    predict_params = frozenset({"predict_imgsz", "conf", "iou"})
    limits = {"conf": "in [0, 1]", "iou": "in [0, 1]", "max_det": ">= 1", "epochs": ">= 1", "batch": ">= 1",
              "patience": ">= 0", "close_mosaic": ">= 0", "nbs": ">= 1", "workers": ">= 0", "lr0": "> 0"}
    weights = tuple(_weight(s, w) for s, w in (("l", "the paper's fine-tuning start"), ("n", "small, for tests")))
    packages = ("torch", "ultralytics")

    def __init__(
        self,
        weights: str | None = None,
        device: str = "cpu",
        model_size: str = "l",
        imgsz: int = 1024,
        predict_imgsz: int | str | None = None,
        conf: float = 0.25,
        iou: float = 0.7,
        max_det: int = 2000,
        overlap_mask: bool = True,
        amp: str = "auto",
    ) -> None:
        """Args:
        weights: a known name (``yolo11l-seg``), a local ``.pt`` path, or None to build ``yolo11{size}-seg``
            from its YAML (random init, nothing downloaded). A weights file defines the architecture.
        model_size: n/s/m/l/x, used when building from the YAML (the paper: l).
        imgsz: network input size for training (images are letterboxed to it; the paper: 1024); also the
            prediction size unless `predict_imgsz` says otherwise, so objects have the scale they were trained at.
        predict_imgsz: None = `imgsz`; an int (multiple of 32); or ``"native"`` = the image's longer side
            rounded up to 32. Masks always come back at the original resolution (``retina_masks``).
        conf: confidence threshold (ultralytics and paper default 0.25). iou: NMS IoU threshold.
        max_det: detections kept per image (ultralytics' 300 is too few for dense cell images).
        overlap_mask: ultralytics' training target mode: True merges a sample's instances into one index
            mask (in overlaps the smaller instance wins), False keeps one mask per instance.
        amp: ``auto`` = bf16 autocast on CUDA with bf16 support, else off; ``bf16``; ``off``. fp16 AMP is
            not offered: ultralytics' fp16 AMP check loads ``yolo26n.pt`` and downloads it when missing.
        """
        super().__init__(weights=weights, device=device)
        if model_size not in SIZES:
            raise ConfigError(f"model '{self.name}': model_size {model_size!r} is not one of {', '.join(SIZES)}")
        for key, value in (("imgsz", imgsz), ("predict_imgsz", predict_imgsz)):
            if value is None or value == "native" and key == "predict_imgsz":
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 32 or value % 32:
                raise ConfigError(f"model '{self.name}': {key} must be a positive multiple of 32, got {value!r}"
                                  + (" (or 'native', or null)" if key == "predict_imgsz" else ""))
        if not 0.0 <= conf <= 1.0 or not 0.0 <= iou <= 1.0:
            raise ConfigError(f"model '{self.name}': conf and iou must lie in [0, 1], got conf={conf}, iou={iou}")
        if not isinstance(max_det, int) or max_det < 1:
            raise ConfigError(f"model '{self.name}': max_det must be a positive integer, got {max_det!r}")
        if amp not in AMP_MODES:
            raise ConfigError(f"model '{self.name}': amp {amp!r} is not one of {', '.join(AMP_MODES)}")
        if amp == "bf16" and not str(device).startswith("cuda"):
            raise ConfigError(f"model '{self.name}': amp 'bf16' needs a CUDA device, got {device!r}")
        self.model_size = model_size
        self.imgsz = imgsz
        self.predict_imgsz = predict_imgsz
        self.conf = float(conf)
        self.iou = float(iou)
        self.max_det = max_det
        self.overlap_mask = bool(overlap_mask)
        self.amp = amp
        if self.weights_path is not None:
            _check_pt(self.weights_path)
        self._yolo: Any = None
        self.classes: list[str] = []

    # ------------------------------------------------------------------ training

    @classmethod
    def rehearsal_schedule(cls, schedule: dict[str, Any], steps: int) -> dict[str, Any]:
        """`steps` epochs with an optimiser step on every batch: ``nbs = batch`` (ultralytics otherwise accumulates
        gradients up to ``nbs`` = 64 images; weight decay, scaled by batch x accumulate / nbs, is unchanged).
        Ultralytics caps the batch at the dataset size, so on the one-image split each step sees one mosaic image.
        ``close_mosaic`` becomes ``steps // 2``: the last epochs run without mosaic, as the real schedule's do."""
        full = cls.full_schedule(schedule)
        return {**schedule, "epochs": steps, "nbs": int(full["batch"]),
                "close_mosaic": min(int(full["close_mosaic"]), steps // 2)}

    @classmethod
    def schedule_size(cls, schedule: dict[str, Any], n_train: int) -> tuple[int, int]:
        """Nominal steps (one per ``nbs / batch`` batches; the warm-up's shorter accumulation is not counted)."""
        full = cls.full_schedule(schedule)
        batches = full["epochs"] * math.ceil(n_train / min(full["batch"], n_train))
        accumulate = min(max(round(full["nbs"] / full["batch"]), 1), batches)
        return math.ceil(batches / accumulate), full["epochs"] * n_train

    def train(
        self,
        train_samples: Sequence[Sample],
        val_samples: Sequence[Sample],
        out_dir: Path,
        *,
        epochs: int = 100,
        batch: int = 16,
        patience: int = 100,
        optimizer: str = "auto",
        lr0: float | None = None,
        close_mosaic: int = 10,
        nbs: int = 64,
        workers: int = 0,
    ) -> Path:
        """Export the samples as a YOLO dataset under `out_dir`, train, return ``best.pt``.

        Classes are the instance categories in first-appearance order (train, then validation samples);
        the multiclass contract gives them already renamed to the dataset's class names, and the names
        travel inside the checkpoint (``model.names``) and its side-car JSON.
        `lr0` needs an explicit `optimizer`: with ``auto`` ultralytics picks its own and ignores lr0.
        `nbs` is ultralytics' nominal batch size: gradients are accumulated over ``nbs / batch`` batches
        before each optimizer step, so on a 3-image sample with the default 64 an epoch is a fraction of
        one step; the quick profile sets ``nbs = batch``. Ultralytics seeds itself with the run's seed
        (``self.seed``, set by the harness).
        """
        if not train_samples or not val_samples:
            raise DataError(f"model '{self.name}': training needs training and validation samples "
                            f"(got {len(train_samples)} and {len(val_samples)}); ultralytics always validates")
        if lr0 is not None and optimizer == "auto":
            raise ConfigError(f"training schedule of model '{self.name}': lr0={lr0} is ignored by ultralytics "
                              "with optimizer 'auto'; set optimizer (e.g. SGD or AdamW) or drop lr0")
        if not isinstance(epochs, int) or epochs < 1:
            raise ConfigError(f"training schedule of model '{self.name}': epochs must be a positive integer, got {epochs!r}")
        if not isinstance(batch, int) or batch < 1:
            raise ConfigError(f"training schedule of model '{self.name}': batch must be a positive integer "
                              f"(ultralytics' AutoBatch is not used), got {batch!r}")
        from harness.convert import write_yolo_dataset

        ul = _ultralytics()
        from ultralytics.utils import SETTINGS

        _check_no_platform_key(SETTINGS)
        out_dir = Path(out_dir).resolve()
        classes = _classes_of([*train_samples, *val_samples])
        data_yaml = write_yolo_dataset({"train": train_samples, "val": val_samples}, out_dir / "yolo_data", classes)
        yolo = self._initial_model(ul)
        _thread_guard(yolo)
        logger.info("training %s on %d images (%d classes: %s), %d epochs at %d px on %s", self._arch(yolo),
                    len(train_samples), len(classes), ", ".join(classes), epochs, self.imgsz, self.device)
        yolo.train(
            data=str(Path(data_yaml).resolve()),
            project=str(out_dir),
            name="train",
            exist_ok=True,
            epochs=epochs,
            batch=batch,
            imgsz=self.imgsz,
            patience=patience,
            seed=self.seed,
            optimizer=optimizer,
            close_mosaic=close_mosaic,
            nbs=nbs,
            **({"lr0": lr0} if lr0 is not None else {}),
            device=self.device,
            workers=workers,
            amp=self._amp(),
            plots=False,
            overlap_mask=self.overlap_mask,
            max_det=self.max_det,
            pretrained=self.weights_path is not None,
            verbose=True,
        )
        weights_dir = out_dir / "train" / "weights"
        checkpoint = next((p for p in (weights_dir / "best.pt", weights_dir / "last.pt") if p.is_file()), None)
        if checkpoint is None:
            raise DataError(f"ultralytics finished training but wrote no best.pt or last.pt in {weights_dir}")
        write_text(_sidecar(checkpoint), json.dumps({
            "adapter": self.name,
            "classes": classes,
            "architecture": self._arch(yolo),
            "init": self.init,
            "imgsz": self.imgsz,
            "epochs": epochs,
            "ultralytics": ul.__version__,
        }, indent=2) + "\n")
        self.load(checkpoint)
        return checkpoint

    def _initial_model(self, ul: ModuleType) -> Any:
        """The model to train: the given weights file, else ``yolo11{size}-seg.yaml`` (random init)."""
        if self.weights_path is None:
            return ul.YOLO(f"yolo11{self.model_size}-seg.yaml", task="segment")
        yolo = _load_yolo(ul, self.weights_path)
        scale = self._arch(yolo)
        if scale != f"yolo11{self.model_size}-seg":
            logger.warning("model_size %r is overridden by the weights file %s, which holds %s",
                           self.model_size, self.weights_path, scale)
        return yolo

    def _amp(self) -> bool | str:
        """ultralytics' ``amp`` argument: never its fp16 path (its AMP check downloads ``yolo26n.pt``)."""
        if self.amp == "off" or not str(self.device).startswith("cuda"):
            return False
        if self.amp == "bf16":
            return "bf16"
        import torch

        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else False

    @staticmethod
    def _arch(yolo: Any) -> str:
        """The architecture a model was built from, e.g. ``yolo11l-seg`` (from its recorded YAML name)."""
        yaml = getattr(yolo.model, "yaml", None) or {}
        return Path(str(yaml.get("yaml_file") or "unknown")).stem

    # ------------------------------------------------------------------ loading

    def load(self, checkpoint: Path) -> None:
        """Load a YOLO segmentation ``.pt`` (ours or compatible); class names come from the checkpoint."""
        path = Path(checkpoint).expanduser()
        if not path.is_file():  # never let ultralytics see a missing path: official names are downloaded
            raise MissingWeightsError(f"checkpoint {path} does not exist")
        path = path.resolve()
        _check_pt(path)
        yolo = _load_yolo(_ultralytics(), path)
        names = yolo.names
        classes = [str(names[i]) for i in sorted(names)]
        sidecar = _sidecar(path)
        if sidecar.is_file():
            recorded = json.loads(sidecar.read_text()).get("classes")
            if recorded is not None and list(recorded) != classes:
                raise DataError(f"{path}: class names {classes} differ from {recorded} recorded in {sidecar}; "
                                "the side-car belongs to another checkpoint")
        _thread_guard(yolo)
        self._yolo, self.classes = yolo, classes
        logger.info("loaded %s (%s; classes %s)", path, self._arch(yolo), ", ".join(classes))

    # ------------------------------------------------------------------ prediction

    def predict(self, image: np.ndarray) -> list[Instance]:
        """Segment one image; one `Instance` (bbox crop, score, class name) per detection, overlaps kept."""
        import numpy as np

        from harness.data import Instance, to_uint8

        if self._yolo is None:
            if self.weights_path is None:
                raise ConfigError(f"model '{self.name}' has no weights to predict with: train or load a "
                                  "checkpoint first, or construct it with cell weights")
            self.load(self.weights_path)
        rgb = to_uint8(np.asarray(image))
        if rgb.ndim == 2:
            rgb = np.repeat(rgb[..., None], 3, axis=-1)
        bgr = np.ascontiguousarray(rgb[..., ::-1])  # numpy input is taken as BGR (OpenCV order), as in training
        height, width = bgr.shape[:2]
        result = self._yolo.predict(
            bgr,
            imgsz=self._predict_size(height, width),
            conf=self.conf,
            iou=self.iou,
            max_det=self.max_det,
            retina_masks=True,
            device=self.device,
            verbose=False,
            save=False,
        )[0]
        instances: list[Instance] = []
        if result.masks is None:
            return instances
        masks = result.masks.data  # (N, H, W) uint8 at the original size; each zero outside its box
        boxes = result.boxes.xyxy.cpu().numpy()
        scores = result.boxes.conf.cpu().numpy()
        labels = result.boxes.cls.cpu().numpy().astype(int)
        names = result.names
        for k in range(len(boxes)):
            x0, y0, x1, y1 = boxes[k]
            r0, r1 = max(0, math.floor(y0)), min(height, math.ceil(y1))
            c0, c1 = max(0, math.floor(x0)), min(width, math.ceil(x1))
            crop = masks[k, r0:r1, c0:c1].cpu().numpy().astype(bool)
            if not crop.any():
                continue
            instances.append(Instance.from_mask(str(names[int(labels[k])]), r0, c0, crop, height, width,
                                                order=len(instances), score=float(scores[k]), source="yolo11"))
        del result, masks
        return instances

    def _predict_size(self, height: int, width: int) -> int:
        if self.predict_imgsz is None:
            return self.imgsz
        if self.predict_imgsz == "native":
            return 32 * math.ceil(max(height, width) / 32)
        return int(self.predict_imgsz)


# --------------------------------------------------------------------------------------------- helpers


def _classes_of(samples: Sequence[Sample]) -> list[str]:
    """Instance categories in first-appearance order; no instances at all is a data error."""
    classes: dict[str, None] = {}
    for sample in samples:
        for inst in sample.instances:
            classes.setdefault(inst.category, None)
    if not classes:
        raise DataError("no annotated instances in the training and validation samples; nothing to train YOLO on")
    return list(classes)


def _check_pt(path: Path) -> None:
    if path.suffix.lower() != ".pt":
        raise ConfigError(f"{path}: not an ultralytics checkpoint (expected a .pt file written by YOLO training)")


def _load_yolo(ul: ModuleType, path: Path) -> Any:
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


def _sidecar(checkpoint: Path) -> Path:
    return checkpoint.with_name(checkpoint.name + ".json")
