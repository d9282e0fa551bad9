"""What the cellpose 3 (``cellpose``: cyto3) and Cellpose-SAM (``cellpose_sam``: cellpose 4) adapters share.

Both models are cellpose models: flows + cell probability → label map, trained on label maps of samples the
harness has flattened (`harness.flatten`), one single-class model per target (the harness hands over samples
already filtered to one target). cellpose 3 trains in our own loop (`fit_own` → `adapters._upstream.cellpose_train`:
train_seg's recipe and weights, cached flow targets, bounded memory, checkpoints and resume); Cellpose-SAM keeps
cellpose 4's own ``train_seg`` (`fit`: its recipe differs — AdamW only, bfloat16 handling, 256-px tiles — and its
trainings are short fine-tunes), with a labelled epoch bar that opens when training starts and cellpose's inner
bars off. `CellposeBase` holds what the two adapters do the same way; each adapter file keeps only what differs
(its weights, how its network is built and loaded, its training/``eval`` options). cellpose is imported inside
functions only, so this module loads under either cellpose version.

Offline by construction (cellpose would otherwise download a built-in model in several situations):
- weights are resolved (and integrity-checked) by `TorchAdapter` to an existing file *before* cellpose sees
  them and passed as an absolute ``str`` (cellpose silently falls back to downloading its default model when a
  path does not exist, and slices the path as a string, so a ``Path`` breaks it);
- ``CELLPOSE_LOCAL_MODELS_PATH`` points at an empty, harness-owned folder before cellpose is imported (it is
  read at import), so no user model list or cached built-in model is picked up by name;
- ``cellpose.utils.download_url_to_file`` — the one function through which cellpose downloads models — is
  replaced by a guard that raises `NetworkDisabledError`, so even a future code path that asks cellpose for a
  built-in name fails loudly instead of reaching the network.

Other cellpose pitfalls handled here: label maps are 2-D (a 3-D stack would be taken as precomputed flows)
and copied (``labels_to_flows`` renumbers in place), ``save_path`` is created first (cellpose does not create
parents), the model is built (and cellpose imported with the guard) before ``cellpose.train`` is imported.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from adapters.torch_base import TorchAdapter
from harness.errors import ConfigError, DataError, NetworkDisabledError
from harness.weights import cache_dir

if TYPE_CHECKING:
    import numpy as np

    from harness.records import Instance, Sample

logger = logging.getLogger(__name__)

CATEGORY = "cell"


def guarded_download(url: str, dst: str, progress: bool = True) -> None:  # noqa: ARG001 - cellpose's signature
    raise NetworkDisabledError(
        f"cellpose tried to download {url} to {dst}; the harness never downloads at run time — fetch weights "
        "explicitly with `c6bench weights fetch NAME` and pass the name or a local file"
    )


def import_cellpose(model: str, version: str | None = None) -> ModuleType:
    """``cellpose.models`` with its model folder pinned to an empty folder and downloads disabled.

    `version`: the cellpose version `model` needs; a process that imported another cellpose (the project's
    cellpose 3 for Cellpose-SAM) fails clearly: models with an environment run through ``c6bench bench`` /
    ``c6bench stage``, which start it.
    """
    if "cellpose.models" not in sys.modules:
        home = cache_dir() / "cellpose-home"
        home.mkdir(parents=True, exist_ok=True)
        os.environ["CELLPOSE_LOCAL_MODELS_PATH"] = str(home)
    import cellpose

    if version is not None and getattr(cellpose, "version", None) != version:
        raise ConfigError(
            f"model {model} needs cellpose {version}, but this process imported cellpose "
            f"{getattr(cellpose, 'version', '?')} from {Path(cellpose.__file__).parent}; run it through "
            f"`c6bench bench` (its stages start under its environment: `c6bench env prepare {model}`)"
        )
    silence = logging.getLogger("cellpose")  # cellpose 4.2 warns at import that its optional DINO is absent
    level = silence.level
    silence.setLevel(logging.ERROR)
    try:
        import cellpose.models
        import cellpose.utils
    finally:
        silence.setLevel(level)
    cellpose.utils.download_url_to_file = guarded_download
    return cellpose.models


@contextlib.contextmanager
def quiet_upstream() -> Iterator[None]:
    """cellpose warns on every CPU call that float32 autocast is off, torch that sparse checks are off."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="In CPU autocast", category=UserWarning)
        warnings.filterwarnings("ignore", message="Sparse invariant checks", category=UserWarning)
        yield


@contextlib.contextmanager
def quiet_logger(name: str, level: int = logging.WARNING) -> Iterator[None]:
    """Raise a cellpose logger's level (``cellpose.dynamics`` logs a line per label map between bar updates)."""
    log = logging.getLogger(name)
    before = log.level
    log.setLevel(max(level, log.getEffectiveLevel()))
    try:
        yield
    finally:
        log.setLevel(before)


class CellposeBase(TorchAdapter):
    """A cellpose model: label maps in for ``train_seg``, ``eval``'s label map + cell probability out.

    Subclasses build the ``CellposeModel`` (`model`), load files (`load`) and pass their own ``train_seg``
    options (`fit`) and ``eval`` options (`eval_options`).
    """

    multiclass = False
    needs_label_maps = True
    packages = ("cellpose", "torch")

    def set_common(self, *, diameter: float | None, flow_threshold: float, cellprob_threshold: float,
                   min_size: int, batch_size: int, augment: bool, tile_overlap: float) -> None:
        """Check and keep the post-processing params both cellpose adapters take."""
        name = f"model '{self.name}'"
        if diameter is not None and not diameter > 0:
            raise ConfigError(f"{name}: diameter must be > 0 pixels or null, got {diameter!r}")
        if not 0.0 <= tile_overlap < 1.0:
            raise ConfigError(f"{name}: tile_overlap must be in [0, 1), got {tile_overlap!r}")
        if batch_size < 1 or min_size < 0:
            raise ConfigError(f"{name}: batch_size must be >= 1 and min_size >= 0")
        self.diameter = diameter
        self.flow_threshold, self.cellprob_threshold = float(flow_threshold), float(cellprob_threshold)
        self.min_size, self.batch_size = int(min_size), int(batch_size)
        self.augment, self.tile_overlap = bool(augment), float(tile_overlap)
        self._model: Any = None

    def model(self) -> Any:
        """The ``CellposeModel`` (built on first use)."""
        raise NotImplementedError

    def eval_options(self) -> dict[str, Any]:
        """``eval`` keywords beyond the shared post-processing params (diameter, channels, ...)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ train

    @classmethod
    def rehearsal_schedule(cls, schedule: dict[str, Any], steps: int) -> dict[str, Any]:
        """`steps` optimiser steps that move the weights, at the configured batch and crop size.

        ``train_seg`` ramps the LR linearly from 0 over its first 10 epochs, so epoch 0 runs at LR 0 and
        changes nothing. The rehearsal runs ``steps + 1`` epochs of one batch each (``nimg_per_epoch =
        batch_size``, images drawn with replacement): steps + 1 optimiser calls, the first at LR 0, then the
        ramp's lr/9, 2·lr/9…
        """
        batch = int(cls.full_schedule(schedule)["batch_size"])
        return {**schedule, "epochs": steps + 1, "nimg_per_epoch": batch}

    @classmethod
    def schedule_size(cls, schedule: dict[str, Any], n_train: int) -> tuple[int, int]:
        """Steps after epoch 0 (LR 0); samples = the crops of all epochs (``nimg_per_epoch`` or all)."""
        full = cls.full_schedule(schedule)
        per_epoch = int(full["nimg_per_epoch"] or n_train)
        return (full["epochs"] - 1) * -(-per_epoch // full["batch_size"]), full["epochs"] * per_epoch

    def fit(self, train_samples: Sequence[Sample], val_samples: Sequence[Sample], out_dir: Path, *,
            epochs: int, learning_rate: float, weight_decay: float, batch_size: int,
            nimg_per_epoch: int | None, rescale: bool, scale_range: float, min_train_masks: int,
            save_every: int, model_name: str, **options: Any) -> Path:
        """``train_seg`` on the label maps of `train_samples` (`options`: the subclass's own keywords); what
        Cellpose-SAM (cellpose 4) trains with.

        The returned network file is loaded, so this object predicts exactly as a fresh adapter that loads it
        (cellpose 3's ``train_seg`` updates ``net.diam_labels``, not the model's own that ``eval`` rescales by).
        """
        if epochs < 2:
            raise ConfigError(f"{self.name} training needs epochs >= 2 (its LR warm-up uses LR 0 in epoch 0)")
        model = self.model()
        from cellpose import train as cp_train

        train_images, train_labels = self._training_arrays(train_samples, "train", min_train_masks)
        val_images, val_labels = self._training_arrays(val_samples, "validation", 1, required=False)
        out_dir = Path(out_dir).resolve()
        out_dir.mkdir(parents=True, exist_ok=True)
        logger.info("%s: training on %d image(s) (%d validation) for %d epochs into %s", self.name,
                    len(train_images), len(val_images), epochs, out_dir)
        with _EpochProgress(epochs), quiet_upstream():
            filename, train_losses, _ = cp_train.train_seg(
                model.net, train_data=train_images, train_labels=train_labels,
                test_data=val_images or None, test_labels=val_labels or None, normalize=True,
                save_path=str(out_dir), model_name=model_name, n_epochs=int(epochs),
                learning_rate=float(learning_rate), weight_decay=float(weight_decay),
                batch_size=int(batch_size), nimg_per_epoch=nimg_per_epoch, rescale=bool(rescale),
                scale_range=float(scale_range), min_train_masks=int(min_train_masks),
                save_every=int(save_every), **options,
            )
        checkpoint = Path(filename)
        logger.info("%s: final train loss %.4f; network saved to %s", self.name, float(train_losses[-1]),
                    checkpoint)
        self.load(checkpoint)
        return checkpoint

    def fit_own(self, train_samples: Sequence[Sample], val_samples: Sequence[Sample], out_dir: Path,
                schedule: Any, model_name: str) -> Path:
        """Our loop (`adapters._upstream.cellpose_train`: train_seg's recipe, cached targets, resume) on the
        label maps of `train_samples`; `schedule` is its `Schedule`. Writes ``training.json`` (what it took).

        One image is in memory at a time while targets are prepared (a labelled bar over train + validation
        images), then one crop's inputs at a time; the returned network file is loaded as in `fit`.
        """
        from tqdm import tqdm

        from adapters._upstream import cellpose_train as ct
        from harness.io import write_json

        if schedule.epochs < 2:
            raise ConfigError(f"{self.name} training needs epochs >= 2 (its LR warm-up uses LR 0 in epoch 0)")
        model = self.model()
        train = self._kept(train_samples, "train", schedule.min_train_masks)
        val = self._kept(val_samples, "validation", 1, required=False)
        out_dir = Path(out_dir).resolve()
        out_dir.mkdir(parents=True, exist_ok=True)
        device, start = model.net.device, time.perf_counter()
        with (tqdm(total=len(train) + len(val), desc="cellpose flows", unit="img") as bar, quiet_upstream(),
              quiet_logger("cellpose.dynamics")):
            train_set = ct.prepare(((s.name, *self._pair(s)) for s in train), device, "train", bar)
            val_set = ct.prepare(((s.name, *self._pair(s)) for s in val), device, "validation", bar)
        flows_s = time.perf_counter() - start
        logger.info("%s: training on %d image(s) (%d validation) for %d epochs into %s", self.name,
                    len(train_set), len(val_set), schedule.epochs, out_dir)
        init = str(self.weights_path) if self.weights_path else "scratch"
        with tqdm(total=schedule.epochs, desc="cellpose train", unit="epoch") as bar, quiet_upstream():
            checkpoint, losses, info = ct.train(model.net, train_set, val_set or None, schedule, out_dir,
                                                model_name, init, bar)
        write_json(out_dir / "training.json", {
            "images": len(train_set), "validation_images": len(val_set), "flows_s": round(flows_s, 2),
            "cached": train_set.cached + val_set.cached, "epochs": schedule.epochs, **info}, indent=2)
        logger.info("%s: final train loss %.4f; network saved to %s", self.name, float(losses[-1]), checkpoint)
        self.load(checkpoint)
        return checkpoint

    def _kept(self, samples: Sequence[Sample], what: str, min_masks: int, required: bool = True) -> list[Sample]:
        """The samples with at least `min_masks` (and 1) instances; the others are named in a warning."""
        least = max(min_masks, 1)
        kept = [s for s in samples if len(s.instances) >= least]
        skipped = [f"{s.name} ({len(s.instances)})" for s in samples if len(s.instances) < least]
        if skipped:
            logger.warning("%s %s: %d of %d image(s) with fewer than %d instance(s) left out: %s", self.name,
                           what, len(skipped), len(samples), least, ", ".join(skipped))
        if required and not kept:
            raise DataError(f"{self.name} {what}: no image has at least {least} instance(s) of this target "
                            f"({len(samples)} image(s) given); lower min_train_masks or check the target's "
                            "categories")
        return kept

    @staticmethod
    def _pair(sample: Sample) -> tuple[np.ndarray, np.ndarray]:
        """A flattened sample's float32 grayscale image and its 2-D int32 label map (a fresh array)."""
        from harness.flatten import label_image
        from harness.images import to_gray

        return to_gray(sample.load_image()).astype("float32", copy=False), label_image(sample)

    def _training_arrays(
        self, samples: Sequence[Sample], what: str, min_masks: int, required: bool = True
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Float32 grayscale images and 2-D int32 label maps of the flattened samples (train_seg normalises).

        The harness has flattened the overlaps (`harness.flatten`, the config's ``label_maps``); the samples are
        only painted here, each into a fresh array (``labels_to_flows`` renumbers in place).
        """
        from tqdm import tqdm

        pairs = [self._pair(s) for s in tqdm(self._kept(samples, what, min_masks, required),
                                             desc=f"{self.name} {what} label maps", unit="img")]
        return [image for image, _ in pairs], [labels for _, labels in pairs]

    # ------------------------------------------------------------------ predict

    def predict(self, image: np.ndarray) -> list[Instance]:
        """Full-resolution label map → instances, each scored by its mean cell probability (sigmoid)."""
        from harness.convert import instances_from_logits

        masks, cellprob = self.predict_raw(image)
        return instances_from_logits(masks, cellprob, CATEGORY)

    def predict_raw(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The model's label map and cell-probability logits for one image (both at full resolution)."""
        from harness.images import to_gray

        if image.ndim not in (2, 3):
            raise DataError(f"{self.name} expects a 2-D grayscale or HxWx3 image, got shape {image.shape}")
        model = self.model()
        with quiet_upstream():
            masks, flows, _ = model.eval(
                to_gray(image), flow_threshold=self.flow_threshold,
                cellprob_threshold=self.cellprob_threshold, min_size=self.min_size,
                batch_size=self.batch_size, augment=self.augment, tile_overlap=self.tile_overlap,
                normalize=True, **self.eval_options(),
            )
        if masks.shape != image.shape[:2] or flows[2].shape != image.shape[:2]:
            raise DataError(f"{self.name} returned masks {masks.shape} for an image of shape "
                            f"{image.shape[:2]}")
        return masks, flows[2]


class _EpochProgress:
    """A tqdm bar over ``train_seg``'s epochs, driven by cellpose's own progress log lines; its inner bars off.

    ``train_seg`` has no callback; it logs ``">>> n_epochs=..."`` once its flows are computed and
    ``"<epoch>, train_loss=..."`` at epochs 0, 5, 10, 20, ..., so the bar opens when training starts (not before
    the flow computation) and advances in those steps without touching cellpose's loop. cellpose's own unlabeled
    ``trange`` bars (flows, diameters) are disabled meanwhile.
    """

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def __enter__(self) -> _EpochProgress:
        import functools

        import cellpose.dynamics
        import cellpose.train
        from tqdm import trange

        self.bar: Any = None
        self.modules = (cellpose.train, cellpose.dynamics)
        self.trange = [m.trange for m in self.modules]
        for module in self.modules:
            module.trange = functools.partial(trange, disable=True)
        self.logger = logging.getLogger("cellpose.train")
        self.level = self.logger.level
        self.handler = _EpochHandler(self)
        self.logger.addHandler(self.handler)
        if self.logger.getEffectiveLevel() > logging.INFO:
            self.logger.setLevel(logging.INFO)
        return self

    def open(self) -> Any:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=self.epochs, desc="cellpose train", unit="epoch")
        return self.bar

    def __exit__(self, *exc: object) -> None:
        self.logger.removeHandler(self.handler)
        self.logger.setLevel(self.level)
        for module, original in zip(self.modules, self.trange, strict=True):
            module.trange = original
        if exc[0] is None:
            self.open().update(self.epochs - self.bar.n)
        if self.bar is not None:
            self.bar.close()


class _EpochHandler(logging.Handler):
    def __init__(self, progress: _EpochProgress) -> None:
        super().__init__(level=logging.INFO)
        self.progress = progress

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith(">>> n_epochs="):
            self.progress.open()
        head, _, rest = message.partition(", train_loss=")
        if rest and head.strip().isdigit():
            bar = self.progress.open()
            bar.update(int(head) + 1 - bar.n)
            bar.set_postfix_str(rest.split(", time")[0])
