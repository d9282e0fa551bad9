"""MEDIAR-Former (Lee et al. 2022, NeurIPS 2022 cell segmentation winner), rebuilt on segmentation-models-pytorch.

MEDIAR is a script folder, not a package, so its pieces are rebuilt in `adapters._upstream.mediar` (no MEDIAR code
is used): the network and its checkpoint files (``network``), normalisation and augmentations (``augment``), the
fine-tuning recipe (``recipe``) and sliding-window prediction with flip TTA and ensembles (``sliding_window``).
This file maps the harness's contract onto them. ``train`` returns ``model.pth``: a plain state dict in MEDIAR's
key layout, which MEDIAR's own code loads as well; with `load_ensemble` the networks' outputs are averaged
(MEDIAR's ``EnsemblePredictor``; the harness plans it from a list of weights in the model YAML).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapters import register
from adapters._upstream.mediar import network, recipe
from adapters._upstream.mediar.sliding_window import CATEGORY, masks_from_output, network_output
from adapters.torch_base import TorchAdapter
from harness.errors import ConfigError, DataError
from harness.io import write_json

if TYPE_CHECKING:
    import numpy as np

    from harness.records import Instance, Sample

logger = logging.getLogger(__name__)


@register("mediar")
class MediarAdapter(TorchAdapter):
    """MEDIAR-Former: MA-Net + SegFormer encoder predicting cellpose flows; one model per target."""

    description = "MEDIAR-Former (MA-Net + mit_b5; released from_phase1/from_phase2 weights; cellpose flows)"
    multiclass = False
    needs_label_maps = True
    predict_params = frozenset({"window", "overlap", "window_batch", "tta", "cellprob_threshold", "flow_threshold",
                                "niter", "min_size"})
    limits = {"encoder": network.ENCODERS, "window": ">= 32 and multiple of 32", "overlap": "in [0, 1)",
              "window_batch": ">= 1", "niter": ">= 1", "cellprob_threshold": "in (0, 1)", "min_size": ">= 0",
              "scale": "in (0, 4]",
              "epochs": ">= 1", "learning_rate": "> 0", "weight_decay": ">= 0", "batch_size": ">= 1",
              "crop_size": ">= 32 and multiple of 32", "crops_per_epoch": ">= 1", "t_max": ">= 1", "eta_min": ">= 0",
              "zoom_prob": "in [0, 1]"}
    weights = network.RELEASED
    supports_ensemble = True
    packages = ("torch", "segmentation-models-pytorch", "timm", "cellpose")

    def __init__(
        self,
        weights: str | None = None,
        device: str = "cpu",
        encoder: str = "mit_b5",
        window: int = 512,
        overlap: float = 0.6,
        window_batch: int = 4,
        tta: bool = False,
        cellprob_threshold: float = 0.5,
        flow_threshold: float = 0.4,
        niter: int = 200,
        min_size: int = 16,
        scale: float = 1.0,
    ) -> None:
        """Args (the schema of ``params`` in ``configs/models/mediar.yaml``; ranges in `limits`):
        weights: ``from_phase1``, ``from_phase2``, a MEDIAR-Former state-dict file, or None (random init).
        encoder: ``mit_b0`` ... ``mit_b5`` (MEDIAR and its released weights: mit_b5).
        window, overlap, window_batch: sliding-window inference (MEDIAR: 512, 0.6, 4 windows per batch).
        tta: average the plain, horizontally and vertically flipped passes (MEDIAR's ``use_tta``).
        cellprob_threshold: cell probability (after the sigmoid) above which pixels follow flows (MEDIAR: 0.5).
        flow_threshold, niter: cellpose's flow-error filter and number of dynamics steps (MEDIAR: 0.4, 200).
        min_size: masks below this many pixels are removed and holes filled (MEDIAR removes < 16 px).
        scale: images (and training label maps) are resized by this factor before the network, and its output
            is resized back to full resolution before the dynamics. MEDIAR works at native resolution (1.0);
            the quick CPU profile halves the pixels per cell to learn in minutes.
        """
        super().__init__(weights=weights, device=device)
        self.encoder, self.window, self.overlap, self.window_batch = encoder, int(window), float(overlap), window_batch
        self.tta, self.cellprob_threshold, self.flow_threshold = bool(tta), float(cellprob_threshold), flow_threshold
        self.niter, self.min_size = int(niter), int(min_size)
        self.scale = float(scale)
        if self.weights_path is not None:
            network.check_mediar_file(self.weights_path, encoder)
        self.ensemble_paths: list[Path] = []  # set by `load_ensemble`: the networks averaged at prediction
        self._nets: list[Any] | None = None

    # ------------------------------------------------------------------ networks

    def _network_from(self, path: Path | None) -> Any:
        net = network.build_network(self.encoder)
        if path is not None:
            network.load_strict(net, network.read_state_dict(path), str(path))
        return net.to(self.torch_device())

    def networks(self) -> list[Any]:
        """The network(s) that predict: the construction weights' one, or those given to `load_ensemble`."""
        if self._nets is None:
            self._nets = [self._network_from(self.weights_path)]
            logger.info("MEDIAR-Former %s on %s from %s", self.encoder, self.device, self.weights_path or "random init")
        return self._nets

    def load(self, checkpoint: Path) -> None:
        """Predict with a MEDIAR-Former state dict (from `train`, or a released one) from now on, alone."""
        self.load_ensemble([checkpoint])

    def load_ensemble(self, checkpoints: Sequence[Path]) -> None:
        """Predict with the average output of several state dicts (MEDIAR's EnsemblePredictor: TTA per network)."""
        if not checkpoints:
            raise ConfigError("model 'mediar': load_ensemble needs at least one checkpoint")
        paths = [Path(c).expanduser().resolve() for c in checkpoints]
        nets = [self._network_from(path) for path in paths]  # every file loads before anything is swapped in
        self.weights_path, self._nets = paths[0], nets
        self.ensemble_paths = paths if len(paths) > 1 else []
        if len(paths) > 1:
            logger.info("MEDIAR-Former %s: ensemble of %d networks (%s)%s", self.encoder, len(paths),
                        " + ".join(str(p) for p in paths), " with flip TTA each" if self.tta else "")

    # ------------------------------------------------------------------ train

    @classmethod
    def rehearsal_schedule(cls, schedule: dict[str, Any], steps: int) -> dict[str, Any]:
        """`steps` epochs of one optimiser step (``crops_per_epoch = batch_size`` on a one-image split); the cosine
        keeps its configured period, so the rehearsal's LRs are the real schedule's first ones."""
        full = cls.full_schedule(schedule)
        return {**schedule, "epochs": steps, "crops_per_epoch": int(full["batch_size"]),
                "t_max": full["t_max"] or full["epochs"]}

    @classmethod
    def schedule_size(cls, schedule: dict[str, Any], n_train: int) -> tuple[int, int]:
        """An epoch draws ``max(n_train, crops_per_epoch)`` crops in batches of ``batch_size``."""
        full = cls.full_schedule(schedule)
        crops = max(n_train, full["crops_per_epoch"])
        return full["epochs"] * math.ceil(crops / full["batch_size"]), full["epochs"] * crops

    def train(self, train_samples: Sequence[Sample], val_samples: Sequence[Sample], out_dir: Path, *,
              epochs: int = 100, learning_rate: float = 2e-5, weight_decay: float = 0.01, batch_size: int = 8,
              crop_size: int = 512, crops_per_epoch: int = 50, t_max: int | None = None, eta_min: float = 1e-7,
              augment: bool = True, zoom_prob: float = 0.5, amp: bool = True) -> Path:
        """Fine-tune (or train from random init) with MEDIAR's recipe (`recipe.fit`); returns ``out_dir/model.pth``.

        ``weight_decay`` 0.01 is AdamW's default, which MEDIAR keeps; the per-epoch validation loss is recorded in
        ``history.json`` and the last epoch is returned. Crops and initialisation come from the run's seed.
        """
        out_dir = Path(out_dir).resolve()
        out_dir.mkdir(parents=True, exist_ok=True)
        config = {
            "encoder": self.encoder, "init": str(self.weights_path) if self.weights_path else None,
            "scale": self.scale,
            "train": [s.name for s in train_samples], "valid": [s.name for s in val_samples],
            "epochs": epochs, "learning_rate": learning_rate, "weight_decay": weight_decay, "batch_size": batch_size,
            "crop_size": crop_size, "crops_per_epoch": crops_per_epoch, "t_max": t_max, "eta_min": eta_min,
            "augment": augment, "zoom_prob": zoom_prob, "amp": amp, "seed": self.seed,
        }
        train_set = recipe.training_set(train_samples, "train", self.scale)
        if not any(item.labels.any() for item in train_set):
            raise DataError(f"mediar train: none of the {len(train_samples)} training image(s) has an instance of "
                            "this target; check the target's categories")
        val_set = recipe.training_set(val_samples, "validation", self.scale)
        rng = self.seed_everything()
        net = self._network_from(self.weights_path)
        history = recipe.fit(net, train_set, val_set, out_dir, config=config, rng=rng, device=self.torch_device(),
                             save=self.save, desc=f"mediar train ({self.encoder})")
        checkpoint = self.save(net.state_dict(), out_dir / "model.pth")
        write_json(out_dir / "history.json", history, indent=1)
        logger.info("mediar: %d epoch(s), last train loss %.4f; model saved to %s", len(history),
                    history[-1]["loss"], checkpoint)
        self.load(checkpoint)  # predict exactly as a fresh adapter that loads the file does
        return checkpoint

    # ------------------------------------------------------------------ predict

    def predict(self, image: np.ndarray) -> list[Instance]:
        """Instances with mean-probability scores, from flows + probability via cellpose's dynamics."""
        from harness.convert import instances_from_logits

        output = self.raw_output(image)
        labels = masks_from_output(output, self.torch_device(), cellprob_threshold=self.cellprob_threshold,
                                   flow_threshold=self.flow_threshold, niter=self.niter, min_size=self.min_size)
        return instances_from_logits(labels, output[2], CATEGORY)  # score: mean sigmoid of the logit

    def raw_output(self, image: np.ndarray) -> np.ndarray:
        """The (ensemble-, TTA-) averaged network output (dY, dX, logit) at full resolution, float32 (3, H, W)."""
        return network_output(self.networks(), image, self.torch_device(), scale=self.scale, window=self.window,
                              overlap=self.overlap, batch=self.window_batch, tta=self.tta)
