"""CellPose 3 (cyto3 / nuclei): one single-class model per target, fine-tuned with ``train_seg``'s recipe.

As in the paper, every target (cells, type A, type B, soma) is its own model: the harness hands over
samples already filtered to one target. CellPose learns from non-overlapping label maps, so the harness
flattens the overlapping Glioma C6 annotations first (`harness.flatten`, the config's ``label_maps``: the same
priority rule the metrics' non-overlap mode uses) and the adapter only paints them. Training runs in our own
loop (`adapters._upstream.cellpose_train`): train_seg's semantics and final weights, with flow targets cached by
content, memory bounded to one image at a time, and checkpoints every ``checkpoint_minutes`` that a stage run
again resumes from. What this adapter shares with Cellpose-SAM (offline import, training samples, ``eval``,
scores) is `adapters._upstream.cellpose_common`; the network files' checks and diameters are
`adapters._upstream.cellpose_files`.

cellpose 3 pitfalls handled here: ``mkldnn=False`` (mkldnn swaps modules in place and breaks training after a
CPU eval), ``channels=[0, 0]`` (grayscale; without it images would be normalised row-wise).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapters import register
from adapters._upstream.cellpose_common import CellposeBase, import_cellpose
from adapters._upstream.cellpose_files import check_cellpose_file, settle_diameters
from adapters.base import WeightSpec
from harness.errors import ConfigError

if TYPE_CHECKING:
    from harness.records import Sample

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


@register("cellpose")
class CellposeAdapter(CellposeBase):
    """Cellpose 3 residual U-Net: flows + cell probability → label map; one model per target."""

    description = "Cellpose 3 (cyto3 / nuclei zero-shot; fine-tuned per target with train_seg on label maps)"
    predict_params = frozenset({"diameter", "flow_threshold", "cellprob_threshold", "min_size", "batch_size",
                                "augment", "tile_overlap"})
    limits = {"diameter": "> 0", "tile_overlap": "in [0, 1)", "batch_size": ">= 1", "min_size": ">= 0",
              "epochs": ">= 2", "learning_rate": "> 0", "weight_decay": ">= 0",
              "nimg_per_epoch": ">= 1", "bsize": ">= 16 and multiple of 16", "scale_range": ">= 0",
              "min_train_masks": ">= 0", "checkpoint_minutes": ">= 0"}
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
        """
        super().__init__(weights=weights, device=device)
        self.set_common(diameter=diameter, flow_threshold=flow_threshold,
                        cellprob_threshold=cellprob_threshold, min_size=min_size, batch_size=batch_size,
                        augment=augment, tile_overlap=tile_overlap)
        self._file_diameters: dict[str, Any] = {}
        if self.weights_path is not None:  # resolved and checked by TorchAdapter
            self._use_file(self.weights_path)

    def _use_file(self, path: Path) -> None:
        """Check a network file and keep the diameters it holds (the tensors are loaded by cellpose)."""
        state = check_cellpose_file(path)
        self.weights_path = path
        self._file_diameters = {k: state[k] for k in ("diam_mean", "diam_labels") if k in state}

    def model(self) -> Any:
        """The ``CellposeModel`` (built on first use from a checked local file, or randomly initialised)."""
        if self._model is None:
            models = import_cellpose(self.name)
            device = self.torch_device()
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
        checkpoint_minutes: float = 5.0,
        model_name: str = "cellpose_finetuned",
    ) -> Path:
        """Fine-tune (or train from random init) with ``train_seg``'s recipe; returns the network file.

        Schedule keys are ``train_seg``'s (``epochs`` → ``n_epochs``, ``sgd`` → ``SGD``), run by our own loop
        (`adapters._upstream.cellpose_train`: the same weights as train_seg, flow targets cached by content,
        one image in memory at a time) that writes a checkpoint after the first epoch that ends
        ``checkpoint_minutes`` after the last one (0 = every epoch) and resumes from it when the training runs
        again in the same folder. cellpose warms the learning rate up linearly over the first 10 epochs
        (epoch 0 uses LR 0), so ``epochs`` must be at least 2 for the weights to change.
        """
        from adapters._upstream.cellpose_train import Schedule

        if bsize % 16:
            raise ConfigError(f"cellpose bsize must be a multiple of 16, got {bsize}")
        schedule = Schedule(epochs=int(epochs), learning_rate=float(learning_rate),
                            weight_decay=float(weight_decay), batch_size=int(batch_size), sgd=bool(sgd),
                            nimg_per_epoch=nimg_per_epoch, rescale=bool(rescale), scale_range=float(scale_range),
                            bsize=int(bsize), min_train_masks=int(min_train_masks),
                            checkpoint_minutes=float(checkpoint_minutes))
        return self.fit_own(train_samples, val_samples, out_dir, schedule, model_name)

    def eval_options(self) -> dict[str, Any]:
        """Grayscale channels, and the diameter the model settled on (`prediction_diameter`)."""
        return {"channels": [0, 0], "diameter": self.prediction_diameter()}
