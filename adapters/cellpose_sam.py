"""Cellpose-SAM (cellpose 4, ``cpsam``): zero-shot generalist, fine-tuned per target with ``train_seg``.

Cellpose-SAM (Pachitariu, Rariden & Stringer 2025) replaces cyto3's U-Net with SAM's ViT-L image encoder (8-px
tokens, global attention, flows + cell probability read out per token); it is the generalist a lab tries first
today, so its zero-shot row is the baseline a fine-tuned model has to beat. It needs cellpose 4, which dropped
cyto3, and both are the import name ``cellpose``: this adapter declares ``requirements`` and runs in its own
environment (`harness.envs`: cellpose 4.2.1.1 layered in front of the project's torch/numpy, prepared by
``c6bench env prepare cellpose_sam``), while the ``cellpose`` adapter keeps cellpose 3 in the project's.

As for cyto3, one single-class model per target, trained on the label maps of samples the harness
has flattened (`harness.flatten`); prediction at full resolution (``diameter`` None: no rescaling), scores = mean
cell probability. Fine-tuning follows the authors' recommendation (cellpose 4 ``docs/train.rst``: AdamW,
learning rate 1e-5, weight decay 0.1, 100 epochs, batch 1, 256-px crops; ``train_seg``'s defaults). The
network is built by `adapters._upstream.cpsam`: the released ViT-L from a file, or random init of the encoder
named by ``scratch_encoder`` (``small`` = 4 blocks, width 256: the quick profile's CPU-sized variant). What it
shares with the cellpose adapter (offline import, training arrays, ``train_seg``, ``eval``, scores) is
`adapters._upstream.cellpose_common`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from adapters import register
from adapters._upstream.cellpose_common import CellposeBase, import_cellpose
from adapters.base import WeightSpec
from harness.errors import ConfigError

if TYPE_CHECKING:
    from harness.records import Sample

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
    """``cellpose.models`` of cellpose 4 (offline: `import_cellpose`); another cellpose fails clearly."""
    return import_cellpose("cellpose_sam", CELLPOSE_VERSION)


@register("cellpose_sam")
class CellposeSAMAdapter(CellposeBase):
    """Cellpose-SAM: SAM ViT encoder → flows + cell probability → label map; one model per target."""

    description = "Cellpose-SAM (cellpose 4: cpsam zero-shot; fine-tuned per target with train_seg)"
    weights = (CPSAM, CPSAM_V2)
    requirements = (f"cellpose=={CELLPOSE_VERSION}",)
    predict_params = frozenset({"diameter", "flow_threshold", "cellprob_threshold", "min_size",
                                "max_size_fraction", "batch_size", "augment", "tile_overlap"})
    limits = {"diameter": "> 0", "tile_overlap": "in [0, 1)", "max_size_fraction": "in (0, 1]",
              "batch_size": ">= 1", "min_size": ">= 0",
              "scratch_encoder": ("vit_l", "small", "tiny"), "epochs": ">= 2",
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
        scratch_encoder: the encoder built for random init (`adapters._upstream.cpsam.ENCODERS`): ``vit_l``
            (the released size), ``small`` (4 blocks, width 256: CPU minutes) or ``tiny`` (1 block, width 64).
            A weights file always brings its own size (read from its tensor shapes).
        """
        from adapters._upstream.cpsam import ENCODERS

        super().__init__(weights=weights, device=device)
        self.set_common(diameter=diameter, flow_threshold=flow_threshold,
                        cellprob_threshold=cellprob_threshold, min_size=min_size, batch_size=batch_size,
                        augment=augment, tile_overlap=tile_overlap)
        if scratch_encoder not in ENCODERS:
            raise ConfigError(f"model 'cellpose_sam': scratch_encoder {scratch_encoder!r} is not one of "
                              f"{', '.join(ENCODERS)}")
        if not 0.0 < max_size_fraction <= 1.0:
            raise ConfigError(f"model 'cellpose_sam': max_size_fraction must be in (0, 1], got "
                              f"{max_size_fraction!r}")
        self.max_size_fraction, self.bfloat16 = float(max_size_fraction), bfloat16
        self.scratch_encoder = scratch_encoder
        if self.weights_path is not None:  # resolved and checked by TorchAdapter
            from adapters._upstream import cpsam

            cpsam.read(self.weights_path)

    # ------------------------------------------------------------------ model

    def model(self) -> Any:
        """The ``CellposeModel``: from a checked local file, or cellpose 4's CPSAM with random values."""
        if self._model is None:
            from adapters._upstream import cpsam

            _cellpose()
            device = self.torch_device()
            bf16 = device.type == "cuda" if self.bfloat16 is None else self.bfloat16
            if self.weights_path is not None:
                self._model, encoder = cpsam.load(self.weights_path, device, bf16)
            else:
                encoder = cpsam.ENCODERS[self.scratch_encoder]
                self._model = cpsam.scratch(encoder, device, bf16)
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
        return self.fit(train_samples, val_samples, out_dir, epochs=epochs, learning_rate=learning_rate,
                        weight_decay=weight_decay, batch_size=batch_size, nimg_per_epoch=nimg_per_epoch,
                        rescale=rescale, scale_range=scale_range, min_train_masks=min_train_masks,
                        save_every=save_every, model_name=model_name)

    def eval_options(self) -> dict[str, Any]:
        """The diameter as given (None: full resolution) and the large-mask cut."""
        return {"diameter": self.diameter, "max_size_fraction": self.max_size_fraction}
