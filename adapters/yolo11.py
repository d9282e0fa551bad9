"""YOLO11-seg (Ultralytics): one multi-class model, one mask per instance (overlaps kept), fully offline.

The paper trains ``yolo11l-seg`` on Glioma C6 as a single multi-class model (cell type A, cell type B,
soma) at 1024 px and predicts at the original resolution; this adapter does the same on the data layer's
YOLO export (`harness.convert.write_yolo_dataset`). A COCO-pretrained YOLO is not a cell model, so there is
no zero-shot row unless a user gives cell weights. Ultralytics is imported offline and without its
process-wide side effects by `adapters._upstream.ultralytics` (the sandbox; read its docstring).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapters import register
from adapters._upstream import ultralytics as ul_sandbox
from adapters._upstream.ultralytics import architecture, check_pt, load_yolo, sidecar, ultralytics_offline
from adapters.torch_base import TorchAdapter
from harness.errors import ConfigError, DataError, MissingWeightsError
from harness.io import write_text

if TYPE_CHECKING:
    import numpy as np

    from harness.records import Instance, Sample

logger = logging.getLogger(__name__)


@register("yolo11")
class Yolo11Adapter(TorchAdapter):
    """YOLO11-seg via ultralytics: multi-class, overlapping per-instance masks with scores."""

    description = "YOLO11-seg (Ultralytics, AGPL-3.0): one multi-class model, overlapping instance masks"
    multiclass = True
    needs_label_maps = False
    predict_params = frozenset({"predict_imgsz", "conf", "iou"})
    limits = {"model_size": ("n", "s", "m", "l", "x"), "imgsz": ">= 32 and multiple of 32",
              "predict_imgsz": ">= 32 and multiple of 32", "conf": "in [0, 1]", "iou": "in [0, 1]", "max_det": ">= 1",
              "amp": ("auto", "bf16", "off"), "epochs": ">= 1", "batch": ">= 1", "patience": ">= 0",
              "close_mosaic": ">= 0", "nbs": ">= 1", "workers": ">= 0", "lr0": "> 0"}
    weights = tuple(ul_sandbox.released(s, w) for s, w in (("l", "the paper's fine-tuning start"),
                                                           ("n", "small, for tests")))
    packages = ("torch", "ultralytics")

    def __init__(self, weights: str | None = None, device: str = "cpu", model_size: str = "l", imgsz: int = 1024,
                 predict_imgsz: int | str | None = None, conf: float = 0.25, iou: float = 0.7, max_det: int = 2000,
                 overlap_mask: bool = True, amp: str = "auto") -> None:
        """Args (ranges in `limits`):
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
        if isinstance(predict_imgsz, str) and predict_imgsz != "native":
            raise ConfigError(f"model '{self.name}': predict_imgsz must be a multiple of 32, 'native' or null, "
                              f"got {predict_imgsz!r}")
        if amp == "bf16" and not str(device).startswith("cuda"):
            raise ConfigError(f"model '{self.name}': amp 'bf16' needs a CUDA device, got {device!r}")
        self.model_size, self.imgsz, self.predict_imgsz = model_size, imgsz, predict_imgsz
        self.conf, self.iou, self.max_det = float(conf), float(iou), max_det
        self.overlap_mask, self.amp = bool(overlap_mask), amp
        if self.weights_path is not None:
            check_pt(self.weights_path)
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

    def train(self, train_samples: Sequence[Sample], val_samples: Sequence[Sample], out_dir: Path, *,
              epochs: int = 100, batch: int = 16, patience: int = 100, optimizer: str = "auto",
              lr0: float | None = None, close_mosaic: int = 10, nbs: int = 64, workers: int = 0) -> Path:
        """Export the samples as a YOLO dataset under `out_dir`, train, return ``best.pt``.

        Classes are the instance categories in first-appearance order (train, then validation samples), already
        the dataset's class names (multiclass contract); they travel in the checkpoint (``model.names``) and its
        side-car JSON. `lr0` needs an explicit `optimizer` (``auto`` ignores lr0). `nbs` is ultralytics' nominal
        batch: gradients are accumulated over ``nbs / batch`` batches per optimizer step, so with the default 64 a
        3-image epoch is a fraction of a step (the quick profile sets ``nbs = batch``). Seeded with the run's seed.
        """
        if not train_samples or not val_samples:
            raise DataError(f"model '{self.name}': training needs training and validation samples "
                            f"(got {len(train_samples)} and {len(val_samples)}); ultralytics always validates")
        if lr0 is not None and optimizer == "auto":
            raise ConfigError(f"training schedule of model '{self.name}': lr0={lr0} is ignored by ultralytics "
                              "with optimizer 'auto'; set optimizer (e.g. SGD or AdamW) or drop lr0")
        from harness.convert import write_yolo_dataset

        ul = ultralytics_offline()
        from ultralytics.utils import SETTINGS

        ul_sandbox.check_no_platform_key(SETTINGS)
        out_dir = Path(out_dir).resolve()
        classes = ul_sandbox.classes_of([*train_samples, *val_samples])
        data_yaml = write_yolo_dataset({"train": train_samples, "val": val_samples}, out_dir / "yolo_data", classes)
        yolo = self._initial_model(ul)
        ul_sandbox.thread_guard(yolo)
        logger.info("training %s on %d images (%d classes: %s), %d epochs at %d px on %s", architecture(yolo),
                    len(train_samples), len(classes), ", ".join(classes), epochs, self.imgsz, self.device)
        yolo.train(data=str(Path(data_yaml).resolve()), project=str(out_dir), name="train", exist_ok=True,
                   epochs=epochs, batch=batch, imgsz=self.imgsz, patience=patience, seed=self.seed, optimizer=optimizer,
                   close_mosaic=close_mosaic, nbs=nbs, **({"lr0": lr0} if lr0 is not None else {}), device=self.device,
                   workers=workers, amp=ul_sandbox.amp_arg(self.amp, self.device), plots=False,
                   overlap_mask=self.overlap_mask, max_det=self.max_det, pretrained=self.weights_path is not None,
                   verbose=True)
        weights_dir = out_dir / "train" / "weights"
        checkpoint = next((p for p in (weights_dir / "best.pt", weights_dir / "last.pt") if p.is_file()), None)
        if checkpoint is None:
            raise DataError(f"ultralytics finished training but wrote no best.pt or last.pt in {weights_dir}")
        write_text(sidecar(checkpoint), json.dumps({
            "adapter": self.name, "classes": classes, "architecture": architecture(yolo), "init": self.init,
            "imgsz": self.imgsz, "epochs": epochs, "ultralytics": ul.__version__,
        }, indent=2) + "\n")
        self.load(checkpoint)
        return checkpoint

    def _initial_model(self, ul: Any) -> Any:
        """The model to train: the given weights file, else ``yolo11{size}-seg.yaml`` (random init)."""
        if self.weights_path is None:
            return ul.YOLO(f"yolo11{self.model_size}-seg.yaml", task="segment")
        yolo = load_yolo(ul, self.weights_path)
        if architecture(yolo) != f"yolo11{self.model_size}-seg":
            logger.warning("model_size %r is overridden by the weights file %s, which holds %s",
                           self.model_size, self.weights_path, architecture(yolo))
        return yolo

    # ------------------------------------------------------------------ loading + prediction

    def load(self, checkpoint: Path) -> None:
        """Load a YOLO segmentation ``.pt`` (ours or compatible); class names come from the checkpoint."""
        path = Path(checkpoint).expanduser()
        if not path.is_file():  # never let ultralytics see a missing path: official names are downloaded
            raise MissingWeightsError(f"checkpoint {path} does not exist")
        path = path.resolve()
        check_pt(path)
        yolo = load_yolo(ultralytics_offline(), path)
        classes = [str(yolo.names[i]) for i in sorted(yolo.names)]
        recorded = json.loads(sidecar(path).read_text()).get("classes") if sidecar(path).is_file() else None
        if recorded is not None and list(recorded) != classes:
            raise DataError(f"{path}: class names {classes} differ from {recorded} recorded in {sidecar(path)}; "
                            "the side-car belongs to another checkpoint")
        ul_sandbox.thread_guard(yolo)
        self._yolo, self.classes = yolo, classes
        logger.info("loaded %s (%s; classes %s)", path, architecture(yolo), ", ".join(classes))

    def predict(self, image: np.ndarray) -> list[Instance]:
        """Segment one image; one `Instance` (bbox crop, score, class name) per detection, overlaps kept."""
        import numpy as np

        from harness.images import to_uint8

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
        size = ul_sandbox.predict_size(self.imgsz, self.predict_imgsz, height, width)
        result = self._yolo.predict(bgr, imgsz=size, conf=self.conf, iou=self.iou, max_det=self.max_det,
                                    retina_masks=True, device=self.device, verbose=False, save=False)[0]
        return ul_sandbox.instances_from_result(result, height, width, source="yolo11")  # frees the N masks
