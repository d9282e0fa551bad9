"""The one interface every model implements.

An adapter is a thin translation layer: images and `Sample`s in, `Instance`s out. The constructor's
keyword arguments are the schema of the model block of a config (unknown keys fail before any GPU work),
and the keyword-only arguments of `train` are the schema of a training schedule. Upstream libraries
(torch, cellpose, ultralytics, ...) are imported inside methods only, so importing an adapter is free.
"""

from __future__ import annotations

import abc
import importlib.metadata
import inspect
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from harness.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np

    from harness.records import Instance, Sample

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WeightSpec:
    """One downloadable weights file, declared by its adapter (``weights = (WeightSpec(...), ...)``).

    ``file`` is the path inside the weights cache (``$C6BENCH_WEIGHTS``); ``sha256`` / ``md5``: the full digest
    where one is published or recorded (None = none); a hash prefix in ``file``'s name is found by itself
    (`harness.integrity`). With no hash at all, ``c6bench weights fetch`` logs the sha256 it computed so it can be
    pinned here, and runs record it in their manifest. ``adapter`` is filled in by the registry.
    A recorded digest may be a prefix: torchvision and torch.hub publish only the first 8 hex digits of a file's
    sha256 (``maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth``), SAM the first 6 of its md5.
    Defined here, beside `Adapter`, so that the adapters need nothing from the harness to declare weights.
    """

    name: str
    file: str
    url: str
    sha256: str | None
    licence: str
    description: str = ""
    adapter: str = ""
    md5: str | None = None

    def __post_init__(self) -> None:
        for algorithm, value, shortest, full in (("sha256", self.sha256, 8, 64), ("md5", self.md5, 6, 32)):
            if value is not None and not re.fullmatch(f"[0-9a-f]{{{shortest},{full}}}", value):
                raise ValueError(f"WeightSpec {self.name!r}: {algorithm} must be {shortest} to {full} lowercase hex "
                                 f"digits (a full digest or a published prefix), got {value!r}")


class Adapter(abc.ABC):
    """Common train/predict surface over one upstream model.

    Class attributes:
        name: registry name (set by ``@register``).
        description: one line for ``c6bench models``.
        multiclass: True when one model learns every class (YOLO); False when the harness trains one
            single-class model per target (CellPose, as in the paper).
        needs_label_maps: True when training needs priority-resolved, non-overlapping label maps: the harness then
            flattens the overlaps of the training and validation samples (the config's ``label_maps`` rule;
            `harness.flatten`) before `train` sees them, which paints them with `harness.flatten.label_image`.
        weights: known pretrained weights of this model (`WeightSpec`s; fetched by ``c6bench weights fetch``).
        supports_ensemble: True when `load_ensemble` can predict with several checkpoints at once (the
            harness's ensembles: a list of zero-shot weights or of fine-tuning inits in the model YAML).
        predict_params: constructor params that `train` never reads (thresholds, tiling, TTA, ...). The key of
            a training stage leaves them out, so changing one re-runs prediction but not training. When in
            doubt, leave a param out of this set: the cost is a retraining, never a stale checkpoint.
        limits: ranges of constructor params and schedule keys, checked with their annotated types before
            any stage runs (`harness.checks`: ``{"sigma": "> 0", "generator": ("cellseg1", "sam")}``).
        requirements: pip requirements this model needs beyond the project's environment (e.g.
            ``("cellpose==4.2.1.1",)``); non-empty = its train/predict stages run in a child process under its
            own environment, prepared once by ``c6bench env prepare <name>`` (see `harness.envs`).
        packages: distribution names whose versions `versions()` reports (the run manifest records them).

    Instance attribute set by the harness (`build`): ``seed``, the run's seed (``--seed``; member k of an
    ensemble gets seed + k). A trainer seeds its random generators from it and from nothing else.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    multiclass: ClassVar[bool] = False
    needs_label_maps: ClassVar[bool] = False
    weights: ClassVar[tuple[WeightSpec, ...]] = ()
    supports_ensemble: ClassVar[bool] = False
    predict_params: ClassVar[frozenset[str]] = frozenset()
    limits: ClassVar[dict[str, Any]] = {}
    requirements: ClassVar[tuple[str, ...]] = ()
    packages: ClassVar[tuple[str, ...]] = ()
    seed: int = 0

    def __init__(self, weights: str | None = None, device: str = "cpu") -> None:
        """Args:
        weights: a known weights name, a local file path, or None for random initialisation.
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (already resolved from ``auto`` by the harness).
        """
        self.weights_arg = weights
        self.device = device

    # ------------------------------------------------------------------ the contract

    @abc.abstractmethod
    def train(self, train_samples: Sequence[Sample], val_samples: Sequence[Sample], out_dir: Path, **schedule: Any) -> Path:
        """Fine-tune on `train_samples` (validate on `val_samples`), write into `out_dir`, return the checkpoint.

        Subclasses declare their schedule as keyword-only arguments (epochs, learning rate, ...); the random seed
        is not one of them: it is ``self.seed`` (the run's). For single-class adapters every instance's category
        is already the target name; for multiclass adapters categories are the dataset's class names. With
        ``needs_label_maps`` the samples' instances are already disjoint.
        """

    @abc.abstractmethod
    def load(self, checkpoint: Path) -> None:
        """Load a checkpoint written by `train` (or a compatible file); fail loudly on a foreign one."""

    def load_ensemble(self, checkpoints: Sequence[Path]) -> None:
        """Predict with the average of several checkpoints from now on (only with ``supports_ensemble``)."""
        raise ConfigError(f"model '{self.name}' cannot predict with an ensemble of {len(checkpoints)} checkpoints; "
                          "list one weights name in its YAML (zero_shot.weights / finetune.init)")

    @abc.abstractmethod
    def predict(self, image: np.ndarray) -> list[Instance]:
        """Segment one image (as read by `harness.images.read_image`); overlapping output allowed.

        Instances carry scores where the model has them. Multiclass adapters set the class name as
        category; single-class adapters may use any category (the harness assigns the target).
        """

    # ------------------------------------------------------------------ helpers shared by all adapters

    @property
    def init(self) -> str:
        """What the weights were at construction: ``pretrained:<name>`` or ``scratch`` (recorded in results)."""
        return f"pretrained:{self.weights_arg}" if self.weights_arg else "scratch"

    @property
    def run_note(self) -> str:
        """How the weights run, when that is more than the weights: appended to a zero-shot row's init
        (cellpose: `` (diameter 30 px)``); empty by default."""
        return ""

    def versions(self) -> dict[str, str]:
        """Versions of the upstream packages this adapter uses (`packages`; for the run manifest)."""
        return {name: importlib.metadata.version(name) for name in self.packages}

    @classmethod
    def build(cls, params: dict[str, Any] | None = None, *, seed: int = 0, **fixed: Any) -> Adapter:
        """Construct from a config mapping: unknown keys, values of the wrong type or out of `limits` fail first
        (`check_params`), so a constructor only stores its values.

        `seed` is the run's seed (the harness passes ``--seed``, + k for ensemble member k).
        """
        params = dict(params or {})
        check_keys(cls.__init__, {**params, **fixed}, f"model '{cls.name}'")
        cls.check_params(params)
        adapter = cls(**params, **fixed)
        adapter.seed = int(seed)
        return adapter

    @classmethod
    def check_params(cls, params: dict[str, Any], where: dict[str, str] | str | None = None) -> None:
        """Fail early on an unknown constructor param, a value of the wrong type or out of `limits`.

        `where` names each key's place in a config file (default: ``model '<name>'.<key>``).
        """
        from harness.checks import check_values

        check_keys(cls.__init__, params, f"model '{cls.name}'")
        check_values(cls.__init__, params, cls.limits, where or f"model '{cls.name}'")

    @classmethod
    def check_schedule(cls, schedule: dict[str, Any], where: dict[str, str] | str | None = None) -> None:
        """Fail early when a training schedule names a key `train` does not accept, or a bad value."""
        from harness.checks import check_values

        check_keys(cls.train, schedule, f"training schedule of model '{cls.name}'", skip=4)
        check_values(cls.train, schedule, cls.limits, where or f"training schedule of model '{cls.name}'", skip=4)

    # ------------------------------------------------------------------ rehearsal (``c6bench bench --rehearse N``)

    @classmethod
    def rehearsal_schedule(cls, schedule: dict[str, Any], steps: int) -> dict[str, Any]:
        """`schedule` cut to `steps` optimiser steps, everything else (batch, crop size, LR) as configured.

        A rehearsal runs a profile's real recipe in minutes, so a broken stage shows before a GPU-day is spent.
        Only the adapter knows what one optimiser step is for its trainer; the harness cuts every split to its
        first image, so each implementation may assume a one-image training split.
        """
        raise ConfigError(f"model '{cls.name}' cannot be rehearsed: its adapter does not define "
                          "rehearsal_schedule(schedule, steps) (see adapters/base.py)")

    @classmethod
    def schedule_size(cls, schedule: dict[str, Any], n_train: int) -> tuple[int, int]:
        """``(optimiser steps, training samples drawn)`` of `schedule` on `n_train` training images.

        Samples are what one forward pass sees per item (a crop, a tile, an image); `make gpu-check` scales
        the rehearsal's measured seconds per sample to the full schedule with it.
        """
        raise ConfigError(f"model '{cls.name}' does not define schedule_size(schedule, n_train) "
                          "(see adapters/base.py)")

    @classmethod
    def full_schedule(cls, schedule: dict[str, Any]) -> dict[str, Any]:
        """`schedule` with `train`'s defaults filled in for the keys it leaves out."""
        params = list(inspect.signature(cls.train).parameters.values())[4:]
        return {**{p.name: p.default for p in params if p.default is not p.empty}, **schedule}


def check_keys(func: Any, given: dict[str, Any], what: str, skip: int = 1) -> None:
    """Raise `ConfigError` naming the unknown keys and the allowed ones (taken from `func`'s signature)."""
    params = list(inspect.signature(func).parameters.values())[skip:]
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return
    allowed = [p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise ConfigError(f"{what}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}")
