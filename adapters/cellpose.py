"""CellPose 3 (cyto3 / nuclei): one single-class model per target, fine-tuned with ``train_seg``.

As in the paper, every target (cells, type A, type B, soma) is its own model: the harness hands over
samples already filtered to one target. CellPose learns from non-overlapping label maps, so the
overlapping Glioma C6 annotations are flattened with the shared priority rule (`harness.convert.label_map`,
rule ``label_rule``) — the same code the metrics' non-overlap mode uses.

Offline by construction (cellpose 3.1.1.3 would otherwise download cyto3 in several situations):
- weights are resolved by `harness.weights.resolve` to an existing file *before* cellpose sees them and
  passed as an absolute ``str`` (cellpose silently falls back to downloading cyto3 when a path does not
  exist, and slices the path as a string, so a ``Path`` breaks it);
- ``CELLPOSE_LOCAL_MODELS_PATH`` points at an empty, harness-owned folder before cellpose is imported (it is
  read at import), so no user model list or cached built-in model is picked up by name;
- ``cellpose.utils.download_url_to_file`` — the one function through which cellpose downloads models — is
  replaced by a guard that raises `NetworkDisabledError`, so even a future code path that asks cellpose for a
  built-in name fails loudly instead of reaching the network.

Other cellpose pitfalls handled here: ``mkldnn=False`` (mkldnn swaps modules in place and breaks training
after a CPU eval), ``channels=[0, 0]`` (grayscale; without it images would be normalised row-wise), label maps
are 2-D (a 3-D stack would be taken as precomputed flows) and copied (``labels_to_flows`` renumbers in place),
``save_path`` is created first (cellpose does not create parents).
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from adapters import register
from adapters._upstream.cellpose_files import check_cellpose_file, settle_diameters
from adapters.base import Adapter
from harness.errors import ConfigError, DataError, NetworkDisabledError
from harness.weights import WeightSpec, cache_dir, resolve

if TYPE_CHECKING:
    import numpy as np

    from harness.data import Instance, Sample

logger = logging.getLogger(__name__)

_MODEL_URL = "https://www.cellpose.org/models"
_LICENCE = "code BSD-3-Clause; weights trained partly on CC-BY-NC data (cellpose README): non-commercial use"
# sha256=None: cellpose publishes no checksums for its model files (cellpose 3.1.1.3 downloads them unchecked
# in models.cache_model_path, and no digest is recorded in its code or docs); `c6bench weights fetch` prints
# the digest it computes so it can be pinned here.
CYTO3 = WeightSpec(
    name="cyto3", file="cyto3", url=f"{_MODEL_URL}/cyto3", sha256=None, licence=_LICENCE,
    description="Cellpose 3 generalist cytoplasm model (zero-shot cells; fine-tuning start point)",
)
# The file keeps cellpose's own name: cellpose recognises the nuclei model by the path ending in
# "nucleitorch_0" and then uses its diameter of 17 px (models.get_model_params).
NUCLEI = WeightSpec(
    name="nuclei", file="nucleitorch_0", url=f"{_MODEL_URL}/nucleitorch_0", sha256=None, licence=_LICENCE,
    description="Cellpose nuclei model (zero-shot soma, as the paper's CellPose-nuclei row)",
)

LABEL_RULES = ("last", "first", "smallest")
_CATEGORY = "cell"


# --------------------------------------------------------------------------------------------- offline import


def _guarded_download(url: str, dst: str, progress: bool = True) -> None:  # noqa: ARG001 - cellpose's signature
    raise NetworkDisabledError(
        f"cellpose tried to download {url} to {dst}; the harness never downloads at run time — fetch weights "
        "explicitly with `c6bench weights fetch NAME` and pass the name or a local file"
    )


def _cellpose() -> ModuleType:
    """Import ``cellpose.models`` with its model folder pinned to an empty folder and downloads disabled."""
    if "cellpose.models" not in sys.modules:
        home = cache_dir() / "cellpose-home"
        home.mkdir(parents=True, exist_ok=True)
        os.environ["CELLPOSE_LOCAL_MODELS_PATH"] = str(home)
    import cellpose.models
    import cellpose.utils

    if cellpose.utils.download_url_to_file is not _guarded_download:
        cellpose.utils.download_url_to_file = _guarded_download
    return cellpose.models


# --------------------------------------------------------------------------------------------- adapter


@register("cellpose")
class CellposeAdapter(Adapter):
    """Cellpose 3 residual U-Net: flows + cell probability → label map; one model per target."""

    description = "Cellpose 3 (cyto3 / nuclei zero-shot; fine-tuned per target with train_seg on label maps)"
    multiclass = False
    needs_label_maps = True
    predict_params = frozenset({"diameter", "flow_threshold", "cellprob_threshold", "min_size", "batch_size",
                                "augment", "tile_overlap"})
    limits = {"diameter": "> 0", "tile_overlap": "in [0, 1)", "batch_size": ">= 1", "min_size": ">= 0",
              "min_pixels": ">= 0", "epochs": ">= 2", "learning_rate": "> 0", "weight_decay": ">= 0",
              "nimg_per_epoch": ">= 1", "bsize": ">= 16 and multiple of 16", "scale_range": ">= 0",
              "min_train_masks": ">= 0", "save_every": ">= 1"}
    weights = (CYTO3, NUCLEI)

    def __init__(
        self,
        weights: str | None = None,
        device: str = "cpu",
        diameter: float | None = None,
        flow_threshold: float = 0.4,
        cellprob_threshold: float = 0.0,
        min_size: int = 15,
        batch_size: int = 8,
        augment: bool = False,
        tile_overlap: float = 0.1,
        label_rule: str = "last",
        min_pixels: int = 10,
    ) -> None:
        """Args (the schema of ``params`` in ``configs/models/cellpose.yaml``):
        weights: ``cyto3``, ``nuclei``, a cellpose file, or None (random init).
        device: ``cpu`` or ``cuda[:N]``.
        diameter: expected object diameter in pixels at prediction (cellpose rescales by diam_mean /
            diameter); None = the file's ``diam_labels`` (the mean training diameter after fine-tuning), or its
            ``diam_mean`` when it has none (no rescale) — the same on every device (`settle_diameters`).
        flow_threshold, cellprob_threshold, min_size: cellpose's mask post-processing (``eval``).
        batch_size: 224-px tiles per network batch at prediction.
        augment, tile_overlap: cellpose's test-time flip augmentation and tile overlap.
        label_rule, min_pixels: how overlapping annotations are flattened for training
            (`harness.convert.label_map`).
        """
        super().__init__(weights=weights, device=device)
        if label_rule not in LABEL_RULES:
            raise ConfigError(f"model 'cellpose': label_rule {label_rule!r} is not one of "
                              f"{', '.join(LABEL_RULES)}")
        if diameter is not None and not diameter > 0:
            raise ConfigError(f"model 'cellpose': diameter must be > 0 pixels or null, got {diameter!r}")
        if not 0.0 <= tile_overlap < 1.0:
            raise ConfigError(f"model 'cellpose': tile_overlap must be in [0, 1), got {tile_overlap!r}")
        if batch_size < 1 or min_size < 0 or min_pixels < 0:
            raise ConfigError("model 'cellpose': batch_size must be >= 1, min_size and min_pixels >= 0")
        self.diameter = diameter
        self.flow_threshold = float(flow_threshold)
        self.cellprob_threshold = float(cellprob_threshold)
        self.min_size = int(min_size)
        self.batch_size = int(batch_size)
        self.augment = bool(augment)
        self.tile_overlap = float(tile_overlap)
        self.label_rule = label_rule
        self.min_pixels = int(min_pixels)
        self.weights_path: Path | None = None
        self._file_diameters: dict[str, Any] = {}
        if weights:
            self._use_file(resolve(weights))
        self._model: Any = None

    def _use_file(self, path: Path) -> None:
        """Check a network file and keep the diameters it holds (the tensors are loaded by cellpose)."""
        state = check_cellpose_file(path)
        self.weights_path = path
        self._file_diameters = {k: state[k] for k in ("diam_mean", "diam_labels") if k in state}

    # ------------------------------------------------------------------ model

    def _torch_device(self) -> Any:
        import torch

        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"device {self.device!r} requested but torch sees no CUDA device; use cpu")
        return torch.device(self.device)

    def model(self) -> Any:
        """The ``CellposeModel`` (built on first use from a checked local file, or randomly initialised)."""
        if self._model is None:
            models = _cellpose()
            device = self._torch_device()
            path = self.weights_path
            self._model = models.CellposeModel(
                gpu=device.type == "cuda", device=device, pretrained_model=str(path) if path else None,
                mkldnn=False, nchan=2,
            )
            diam_mean, diam_labels = settle_diameters(self._model, self._file_diameters if path else None)
            logger.info("cellpose model on %s from %s (diam_mean %.1f, diam_labels %.1f%s); predicting at "
                        "diameter %.1f px", device, path or "random init", diam_mean, diam_labels,
                        "" if "diam_labels" in self._file_diameters or not path else ": not in the file",
                        self.prediction_diameter())
        return self._model

    def prediction_diameter(self) -> float:
        """The object diameter (px) passed to cellpose at prediction: `diameter`, else the model's diam_labels."""
        return float(self.diameter) if self.diameter is not None else float(self.model().diam_labels)

    @property
    def run_note(self) -> str:
        """`` (diameter D px)``: the scale the weights run at, appended to a zero-shot row's init."""
        return f" (diameter {self.prediction_diameter():g} px)"

    def load(self, checkpoint: Path) -> None:
        """Use a cellpose network file (from `train`, or cyto3/nuclei) from now on."""
        self._use_file(Path(checkpoint).expanduser().resolve())
        self._model = None

    # ------------------------------------------------------------------ train

    @classmethod
    def rehearsal_schedule(cls, schedule: dict[str, Any], steps: int) -> dict[str, Any]:
        """`steps` optimiser steps that move the weights, at the configured batch and crop size.

        ``train_seg`` ramps the LR linearly from 0 over its first 10 epochs, so epoch 0 runs at LR 0 and changes
        nothing. The rehearsal runs ``steps + 1`` epochs of one batch each (``nimg_per_epoch = batch_size``,
        images drawn with replacement): steps + 1 optimiser calls, the first at LR 0, then the ramp's lr/9, 2·lr/9…
        """
        return {**schedule, "epochs": steps + 1, "nimg_per_epoch": int(cls.full_schedule(schedule)["batch_size"])}

    @classmethod
    def schedule_size(cls, schedule: dict[str, Any], n_train: int) -> tuple[int, int]:
        """Steps after epoch 0 (LR 0); samples = 224-px crops of every epoch (``nimg_per_epoch`` or all images)."""
        full = cls.full_schedule(schedule)
        per_epoch = int(full["nimg_per_epoch"] or n_train)
        return (full["epochs"] - 1) * -(-per_epoch // full["batch_size"]), full["epochs"] * per_epoch

    def train(
        self,
        train_samples: Sequence[Sample],
        val_samples: Sequence[Sample],
        out_dir: Path,
        *,
        epochs: int = 100,
        learning_rate: float = 0.1,
        weight_decay: float = 1e-4,
        batch_size: int = 8,
        sgd: bool = True,
        nimg_per_epoch: int | None = None,
        bsize: int = 224,
        rescale: bool = True,
        scale_range: float = 0.5,
        min_train_masks: int = 5,
        save_every: int = 100,
        model_name: str = "cellpose_finetuned",
    ) -> Path:
        """Fine-tune (or train from random init) with ``cellpose.train.train_seg``; returns the network file.

        Schedule keys map one to one onto ``train_seg`` (``epochs`` → ``n_epochs``, ``sgd`` → ``SGD``).
        cellpose warms the learning rate up linearly over the first 10 epochs (epoch 0 uses LR 0), so
        ``epochs`` must be at least 2 for the weights to change.
        """
        from cellpose import train as cp_train

        if epochs < 2:
            raise ConfigError("cellpose training needs epochs >= 2 (its LR warm-up uses LR 0 in epoch 0)")
        if bsize % 16:
            raise ConfigError(f"cellpose bsize must be a multiple of 16, got {bsize}")
        model = self.model()
        train_images, train_labels = self._training_arrays(train_samples, "train", min_train_masks)
        val_images, val_labels = self._training_arrays(val_samples, "validation", 1, required=False)
        out_dir = Path(out_dir).resolve()
        out_dir.mkdir(parents=True, exist_ok=True)
        logger.info("cellpose: training on %d image(s) (%d validation) for %d epochs into %s",
                    len(train_images), len(val_images), epochs, out_dir)
        with _EpochProgress(epochs):
            filename, train_losses, _ = cp_train.train_seg(
                model.net, train_data=train_images, train_labels=train_labels,
                test_data=val_images or None, test_labels=val_labels or None,
                channels=[0, 0], normalize=True, save_path=str(out_dir), model_name=model_name,
                n_epochs=int(epochs), learning_rate=float(learning_rate), weight_decay=float(weight_decay),
                batch_size=int(batch_size), SGD=bool(sgd), nimg_per_epoch=nimg_per_epoch, bsize=int(bsize),
                rescale=bool(rescale), scale_range=float(scale_range), min_train_masks=int(min_train_masks),
                save_every=int(save_every),
            )
        checkpoint = Path(filename)
        logger.info("cellpose: final train loss %.4f; network saved to %s", float(train_losses[-1]),
                    checkpoint)
        # Reload so this object predicts exactly like a fresh adapter that loads the file (train_seg updates
        # net.diam_labels, but not the model's own diam_labels that eval uses for rescaling).
        self.load(checkpoint)
        return checkpoint

    def _training_arrays(
        self, samples: Sequence[Sample], what: str, min_masks: int, required: bool = True
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Float32 grayscale images and priority-resolved 2-D int32 label maps (cellpose normalises)."""
        from tqdm import tqdm

        from harness.convert import label_map
        from harness.data import to_gray

        images, labels, skipped = [], [], []
        for sample in tqdm(samples, desc=f"cellpose {what} label maps", unit="img"):
            labels_k, resolution = label_map(sample, rule=self.label_rule, min_pixels=self.min_pixels)
            if resolution.dropped:
                logger.info("%s: %d instance(s) dropped while flattening overlaps (rule %s)", sample.name,
                            len(resolution.dropped), self.label_rule)
            n_masks = len(resolution.instances)
            if n_masks < max(min_masks, 1):
                skipped.append(f"{sample.name} ({n_masks})")
                continue
            images.append(to_gray(sample.load_image()).astype("float32", copy=False))
            labels.append(labels_k.astype("int32", copy=True))
        if skipped:
            logger.warning("cellpose %s: %d image(s) with fewer than %d instance(s) left out: %s", what,
                           len(skipped), max(min_masks, 1), ", ".join(skipped))
        if required and not images:
            raise DataError(
                f"cellpose {what}: no image has at least {max(min_masks, 1)} instance(s) of this target "
                f"({len(samples)} image(s) given); lower min_train_masks or check the target's categories"
            )
        return images, labels

    # ------------------------------------------------------------------ predict

    def predict(self, image: np.ndarray) -> list[Instance]:
        """Full-resolution label map → instances, each scored by its mean cell probability (sigmoid)."""
        masks, cellprob = self.predict_raw(image)
        return instances_with_scores(masks, cellprob)

    def predict_raw(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Cellpose's label map and cell-probability logits for one image (both at full resolution)."""
        from harness.data import to_gray

        if image.ndim not in (2, 3):
            raise DataError(f"cellpose expects a 2-D grayscale or HxWx3 image, got shape {image.shape}")
        masks, flows, _ = self.model().eval(
            to_gray(image), channels=[0, 0], diameter=self.prediction_diameter(), flow_threshold=self.flow_threshold,
            cellprob_threshold=self.cellprob_threshold, min_size=self.min_size, batch_size=self.batch_size,
            augment=self.augment, tile_overlap=self.tile_overlap, normalize=True,
        )
        if masks.shape != image.shape[:2] or flows[2].shape != image.shape[:2]:
            raise DataError(f"cellpose returned masks {masks.shape} for an image of shape {image.shape[:2]}")
        return masks, flows[2]

    def versions(self) -> dict[str, str]:
        return {pkg: importlib.metadata.version(pkg) for pkg in ("cellpose", "torch")}


# --------------------------------------------------------------------------------------------- helpers


def instances_with_scores(masks: np.ndarray, cellprob: np.ndarray) -> list[Instance]:
    """Label map → instances; score = mean of sigmoid(cell-probability logit) over the instance's pixels."""
    import numpy as np
    from scipy import ndimage

    ids = np.unique(masks)
    ids = ids[ids > 0]
    if ids.size == 0:
        return []
    prob = 1.0 / (1.0 + np.exp(-np.clip(cellprob.astype(np.float64), -50.0, 50.0)))
    means = ndimage.mean(prob, labels=masks, index=ids)
    scores = {int(k): float(v) for k, v in zip(ids, means, strict=True)}
    from harness.convert import instances_from_label_map

    return instances_from_label_map(masks, _CATEGORY, scores)


class _EpochProgress:
    """A tqdm bar over training epochs, driven by cellpose's own progress log lines.

    ``train_seg`` has no callback; it logs ``"<epoch>, train_loss=..."`` at epochs 0, 5, 10, 20, ..., so the
    bar advances in those steps (and shows the last losses) without touching cellpose's loop.
    """

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def __enter__(self) -> _EpochProgress:
        from tqdm import tqdm

        self.bar = tqdm(total=self.epochs, desc="cellpose train", unit="epoch")
        self.logger = logging.getLogger("cellpose.train")
        self.level = self.logger.level
        self.handler = _EpochHandler(self.bar)
        self.logger.addHandler(self.handler)
        if self.logger.getEffectiveLevel() > logging.INFO:
            self.logger.setLevel(logging.INFO)
        return self

    def __exit__(self, *exc: object) -> None:
        self.logger.removeHandler(self.handler)
        self.logger.setLevel(self.level)
        if exc[0] is None:
            self.bar.update(self.epochs - self.bar.n)
        self.bar.close()


class _EpochHandler(logging.Handler):
    def __init__(self, bar: Any) -> None:
        super().__init__(level=logging.INFO)
        self.bar = bar

    def emit(self, record: logging.LogRecord) -> None:
        head, _, rest = record.getMessage().partition(", train_loss=")
        if rest and head.strip().isdigit():
            self.bar.update(int(head) + 1 - self.bar.n)
            self.bar.set_postfix_str(rest.split(", time")[0])
