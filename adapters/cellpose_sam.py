"""Cellpose-SAM (cellpose 4, ``cpsam``): zero-shot generalist, fine-tuned per target with ``train_seg``.

Cellpose-SAM (Pachitariu, Rariden & Stringer 2025) replaces cyto3's U-Net with SAM's ViT-L image encoder (8-px
tokens, global attention, flows + cell probability read out per token); it is the generalist a lab tries first
today, so its zero-shot row is the baseline a fine-tuned model has to beat. It needs cellpose 4, which dropped
cyto3, and both are the import name ``cellpose``: this adapter declares ``requirements`` and runs in its own
environment (`harness.envs`: cellpose 4.2.1.1 layered in front of the project's torch/numpy, prepared by
``c6bench env prepare cellpose_sam``), while the ``cellpose`` adapter keeps cellpose 3 in the project's.

As for cyto3, one single-class model per target, trained on priority-resolved label maps
(`harness.convert.label_map`); prediction at full resolution (``diameter`` None: no rescaling), scores = mean
cell probability. Fine-tuning follows the authors' recommendation (cellpose 4 ``docs/train.rst``: AdamW,
learning rate 1e-5, weight decay 0.1, 100 epochs, batch 1, 256-px crops; ``train_seg``'s defaults). The
network is built by `adapters._upstream.cpsam`: the released ViT-L from a file, or random init of the encoder named by
``scratch_encoder`` (``small`` = 4 blocks, width 256: the quick profile's CPU-sized variant of the same
class).

Offline as the cellpose adapter: weights are resolved to a checked local file before cellpose sees them,
``CELLPOSE_LOCAL_MODELS_PATH`` points at an empty harness folder, and ``cellpose.utils.download_url_to_file``
is replaced by a guard, so cellpose's silent "model not found, using default model" download cannot happen.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from adapters import register
from adapters.base import Adapter
from adapters.cellpose import LABEL_RULES, _EpochProgress, _guarded_download, instances_with_scores
from harness.errors import ConfigError, DataError
from harness.weights import WeightSpec, cache_dir, resolve

if TYPE_CHECKING:
    import numpy as np

    from harness.data import Instance, Sample

logger = logging.getLogger(__name__)

CELLPOSE_VERSION = "4.2.1.1"  # newest cellpose 4 on PyPI; needs nothing the project's environment lacks
_URL = "https://huggingface.co/mouseland/cellpose-sam/resolve/main"
_LICENCE = ("code BSD-3-Clause; weights (huggingface.co/mouseland/cellpose-sam) trained on the Cellpose "
            "datasets, which include non-commercial (CC-BY-NC) data: check the model card before "
            "commercial use")
# sha256=None: neither cellpose (models.cache_model_path downloads unchecked) nor its docs record a digest;
# `c6bench weights fetch` prints the one it computes so it can be pinned here.
CPSAM = WeightSpec(name="cpsam", file="cpsam", url=f"{_URL}/cpsam", sha256=None, licence=_LICENCE,
                   description="Cellpose-SAM generalist (cellpose 4; zero-shot and fine-tuning start point)")
CPSAM_V2 = WeightSpec(name="cpsam_v2", file="cpsam_v2", url=f"{_URL}/cpsam_v2", sha256=None, licence=_LICENCE,
                      description="Cellpose-SAM v2 (cellpose >= 4.2's default; same architecture as cpsam)")


def _cellpose() -> ModuleType:
    """``cellpose.models`` of cellpose 4, its model folder pinned to an empty folder and downloads disabled.

    Fails clearly in a process that has another cellpose (the project's cellpose 3): adapters of models with
    an environment run through ``c6bench bench`` / ``c6bench stage``, which start it.
    """
    if "cellpose.models" not in sys.modules:
        home = cache_dir() / "cellpose-home"
        home.mkdir(parents=True, exist_ok=True)
        os.environ["CELLPOSE_LOCAL_MODELS_PATH"] = str(home)
    import cellpose

    if getattr(cellpose, "version", None) != CELLPOSE_VERSION:
        raise ConfigError(
            f"model cellpose_sam needs cellpose {CELLPOSE_VERSION}, but this process imported cellpose "
            f"{getattr(cellpose, 'version', '?')} from {Path(cellpose.__file__).parent}; run it through "
            "`c6bench bench` (its stages start under its environment: `c6bench env prepare cellpose_sam`)"
        )
    silence = logging.getLogger("cellpose")  # cellpose 4.2 warns at import that its optional DINO is absent
    level = silence.level
    silence.setLevel(logging.ERROR)
    try:
        import cellpose.models
        import cellpose.utils
    finally:
        silence.setLevel(level)
    cellpose.utils.download_url_to_file = _guarded_download
    return cellpose.models


@contextlib.contextmanager
def _quiet_upstream() -> Iterator[None]:
    """cellpose 4 warns on every CPU call that float32 autocast is off, torch that sparse checks are off."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="In CPU autocast", category=UserWarning)
        warnings.filterwarnings("ignore", message="Sparse invariant checks", category=UserWarning)
        yield


@register("cellpose_sam")
class CellposeSAMAdapter(Adapter):
    """Cellpose-SAM: SAM ViT encoder → flows + cell probability → label map; one model per target."""

    description = "Cellpose-SAM (cellpose 4: cpsam zero-shot; fine-tuned per target with train_seg)"
    multiclass = False
    needs_label_maps = True
    weights = (CPSAM, CPSAM_V2)
    requirements = (f"cellpose=={CELLPOSE_VERSION}",)
    predict_params = frozenset({"diameter", "flow_threshold", "cellprob_threshold", "min_size",
                                "max_size_fraction", "batch_size", "augment", "tile_overlap"})
    limits = {"diameter": "> 0", "tile_overlap": "in [0, 1)", "max_size_fraction": "in (0, 1]",
              "batch_size": ">= 1", "min_size": ">= 0", "min_pixels": ">= 0",
              "scratch_encoder": ("vit_l", "small", "tiny"), "label_rule": LABEL_RULES, "epochs": ">= 2",
              "learning_rate": "> 0", "weight_decay": ">= 0", "nimg_per_epoch": ">= 1", "scale_range": ">= 0",
              "min_train_masks": ">= 0", "save_every": ">= 1"}

    def __init__(
        self,
        weights: str | None = None,
        device: str = "cpu",
        diameter: float | None = None,
        flow_threshold: float = 0.4,
        cellprob_threshold: float = 0.0,
        min_size: int = 15,
        max_size_fraction: float = 0.4,
        batch_size: int = 8,
        augment: bool = False,
        tile_overlap: float = 0.1,
        bfloat16: bool | None = None,
        scratch_encoder: str = "vit_l",
        label_rule: str = "last",
        min_pixels: int = 10,
    ) -> None:
        """Args (the schema of ``params`` in ``configs/models/cellpose_sam.yaml``):
        weights: ``cpsam``, ``cpsam_v2``, a Cellpose-SAM file, or None (random init of `scratch_encoder`).
        device: ``cpu`` or ``cuda[:N]``.
        diameter: cell diameter in pixels to rescale images to cpsam's 30 px; None = full resolution (cpsam is
            trained to be size-invariant).
        flow_threshold, cellprob_threshold, min_size, max_size_fraction: mask post-processing (``eval``).
        batch_size: 256-px tiles per network batch at prediction.
        augment, tile_overlap: test-time flip augmentation and tile overlap.
        bfloat16: network weights in bfloat16 (cellpose 4's default); None = on CUDA only (float32 on CPU).
        scratch_encoder: the encoder built for random init (`adapters._upstream.cpsam.ENCODERS`): ``vit_l`` (the
        released
            size), ``small`` (4 blocks, width 256: CPU minutes) or ``tiny`` (1 block, width 64: smoke tests).
            A weights file always brings its own size (read from its tensor shapes).
        label_rule, min_pixels: how overlapping annotations are flattened for training.
        """
        from adapters._upstream.cpsam import ENCODERS

        super().__init__(weights=weights, device=device)
        name = "model 'cellpose_sam'"
        if label_rule not in LABEL_RULES:
            raise ConfigError(f"{name}: label_rule {label_rule!r} is not one of {', '.join(LABEL_RULES)}")
        if scratch_encoder not in ENCODERS:
            raise ConfigError(f"{name}: scratch_encoder {scratch_encoder!r} is not one of "
                              f"{', '.join(ENCODERS)}")
        if diameter is not None and not diameter > 0:
            raise ConfigError(f"{name}: diameter must be > 0 pixels or null, got {diameter!r}")
        if not 0.0 <= tile_overlap < 1.0 or not 0.0 < max_size_fraction <= 1.0:
            raise ConfigError(f"{name}: tile_overlap must be in [0, 1) and max_size_fraction in (0, 1]")
        if batch_size < 1 or min_size < 0 or min_pixels < 0:
            raise ConfigError(f"{name}: batch_size must be >= 1, min_size and min_pixels >= 0")
        self.diameter = diameter
        self.flow_threshold, self.cellprob_threshold = float(flow_threshold), float(cellprob_threshold)
        self.min_size, self.max_size_fraction = int(min_size), float(max_size_fraction)
        self.batch_size, self.augment, self.tile_overlap = int(batch_size), bool(augment), float(tile_overlap)
        self.bfloat16 = bfloat16
        self.scratch_encoder = scratch_encoder
        self.label_rule, self.min_pixels = label_rule, int(min_pixels)
        self.weights_path: Path | None = resolve(weights) if weights else None
        if self.weights_path is not None:
            from adapters._upstream import cpsam

            cpsam.read(self.weights_path)
        self._model: Any = None

    # ------------------------------------------------------------------ model

    def _torch_device(self) -> Any:
        import torch

        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"device {self.device!r} requested but torch sees no CUDA device; use cpu")
        return torch.device(self.device)

    def model(self) -> Any:
        """The ``CellposeModel``: from a checked local file, or cellpose 4's CPSAM with random values."""
        if self._model is None:
            import torch

            from adapters._upstream import cpsam

            _cellpose()
            device = self._torch_device()
            bf16 = device.type == "cuda" if self.bfloat16 is None else self.bfloat16
            if self.weights_path is not None:
                self._model, encoder = cpsam.load(self.weights_path, device, bf16)
            else:
                encoder = cpsam.ENCODERS[self.scratch_encoder]
                net = cpsam.build(encoder, torch.float32).to(device)
                if bf16:
                    net.dtype = torch.bfloat16
                self._model = cpsam.wrap(net, device, None)
            source = self.weights_path or "random init"
            logger.info("cellpose_sam model on %s from %s (%s, %s)", device, source, encoder.describe(),
                        "bfloat16" if bf16 else "float32")
        return self._model

    @property
    def run_note(self) -> str:
        """How the weights run, appended to a zero-shot row's init: at full resolution, or rescaled."""
        return " (full resolution)" if self.diameter is None else f" (diameter {self.diameter:g} px)"

    def load(self, checkpoint: Path) -> None:
        """Use a Cellpose-SAM network file (from `train`, or cpsam) from now on."""
        from adapters._upstream import cpsam

        checkpoint = Path(checkpoint).expanduser().resolve()
        if not checkpoint.is_file():
            raise ConfigError(f"{checkpoint}: cellpose_sam checkpoint not found")
        cpsam.read(checkpoint)
        self.weights_path, self._model = checkpoint, None

    # ------------------------------------------------------------------ train

    @classmethod
    def rehearsal_schedule(cls, schedule: dict[str, Any], steps: int) -> dict[str, Any]:
        """`steps` optimiser steps that move the weights (as cellpose: train_seg's epoch 0 runs at LR 0)."""
        batch = int(cls.full_schedule(schedule)["batch_size"])
        return {**schedule, "epochs": steps + 1, "nimg_per_epoch": batch}

    @classmethod
    def schedule_size(cls, schedule: dict[str, Any], n_train: int) -> tuple[int, int]:
        """Steps after epoch 0 (LR 0); samples = the 256-px crops of all epochs (``nimg_per_epoch`` each)."""
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
        learning_rate: float = 1e-5,
        weight_decay: float = 0.1,
        batch_size: int = 1,
        nimg_per_epoch: int | None = None,
        rescale: bool = False,
        scale_range: float = 0.5,
        min_train_masks: int = 5,
        save_every: int = 100,
        model_name: str = "cellpose_sam_finetuned",
    ) -> Path:
        """Fine-tune (or train from random init) with cellpose 4's ``train_seg``; returns the network file.

        Keys map one to one onto ``train_seg`` (``epochs`` → ``n_epochs``); the optimiser is always AdamW and
        crops are 256 px (cpsam's fixed tile). The LR ramps up linearly over the first 10 epochs from 0, so
        ``epochs`` must be at least 2 for the weights to change.
        """
        if epochs < 2:
            raise ConfigError("cellpose_sam training needs epochs >= 2 (its LR warm-up uses LR 0 in epoch 0)")
        model = self.model()
        from cellpose import train as cp_train

        train_images, train_labels = self._training_arrays(train_samples, "train", min_train_masks)
        val_images, val_labels = self._training_arrays(val_samples, "validation", 1, required=False)
        out_dir = Path(out_dir).resolve()
        out_dir.mkdir(parents=True, exist_ok=True)
        logger.info("cellpose_sam: training on %d image(s) (%d validation) for %d epochs into %s",
                    len(train_images), len(val_images), epochs, out_dir)
        with _EpochProgress(epochs), _quiet_upstream():
            filename, train_losses, _ = cp_train.train_seg(
                model.net, train_data=train_images, train_labels=train_labels,
                test_data=val_images or None, test_labels=val_labels or None, normalize=True,
                save_path=str(out_dir), model_name=model_name, n_epochs=int(epochs),
                learning_rate=float(learning_rate), weight_decay=float(weight_decay),
                batch_size=int(batch_size), nimg_per_epoch=nimg_per_epoch, rescale=bool(rescale),
                scale_range=float(scale_range),
                min_train_masks=int(min_train_masks), save_every=int(save_every),
            )
        logger.info("cellpose_sam: final train loss %.4f; network saved to %s", float(train_losses[-1]),
                    filename)
        self.load(Path(filename))  # predict exactly as a fresh adapter that loads the file would
        return Path(filename)

    def _training_arrays(
        self, samples: Sequence[Sample], what: str, min_masks: int, required: bool = True
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Float32 grayscale images and priority-resolved 2-D int32 label maps (train_seg normalises)."""
        from tqdm import tqdm

        from harness.convert import label_map
        from harness.data import to_gray

        images, labels, skipped = [], [], []
        for sample in tqdm(samples, desc=f"cellpose_sam {what} label maps", unit="img"):
            labels_k, resolution = label_map(sample, rule=self.label_rule, min_pixels=self.min_pixels)
            if resolution.dropped:
                logger.info("%s: %d instance(s) dropped while flattening overlaps (rule %s)", sample.name,
                            len(resolution.dropped), self.label_rule)
            if len(resolution.instances) < max(min_masks, 1):
                skipped.append(f"{sample.name} ({len(resolution.instances)})")
                continue
            images.append(to_gray(sample.load_image()).astype("float32", copy=False))
            labels.append(labels_k.astype("int32", copy=True))
        if skipped:
            logger.warning("cellpose_sam %s: %d of %d image(s) with fewer than %d instance(s) left out: %s",
                           what, len(skipped), len(samples), max(min_masks, 1), ", ".join(skipped))
        if required and not images:
            raise DataError(f"cellpose_sam {what}: no image has at least {max(min_masks, 1)} instance(s) of "
                            f"this target ({len(samples)} image(s) given); lower min_train_masks or check "
                            "the target's categories")
        return images, labels

    # ------------------------------------------------------------------ predict

    def predict(self, image: np.ndarray) -> list[Instance]:
        """Full-resolution label map → instances, each scored by its mean cell probability (sigmoid)."""
        masks, cellprob = self.predict_raw(image)
        return instances_with_scores(masks, cellprob)

    def predict_raw(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Cellpose-SAM's label map and cell-probability logits for one image (both at full resolution)."""
        from harness.data import to_gray

        if image.ndim not in (2, 3):
            raise DataError(f"cellpose_sam expects a 2-D grayscale or HxWx3 image, got shape {image.shape}")
        model = self.model()
        with _quiet_upstream():
            masks, flows, _ = model.eval(
                to_gray(image), diameter=self.diameter, flow_threshold=self.flow_threshold,
                cellprob_threshold=self.cellprob_threshold, min_size=self.min_size,
                max_size_fraction=self.max_size_fraction, batch_size=self.batch_size, augment=self.augment,
                tile_overlap=self.tile_overlap, normalize=True,
            )
        if masks.shape != image.shape[:2] or flows[2].shape != image.shape[:2]:
            raise DataError(f"cellpose_sam returned masks {masks.shape} for an image of shape "
                            f"{image.shape[:2]}")
        return masks, flows[2]

    def versions(self) -> dict[str, str]:
        import cellpose
        import torch

        return {"cellpose": str(cellpose.version), "torch": torch.__version__}
