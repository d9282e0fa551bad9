"""Classical baseline: texture threshold + distance-transform watershed (scikit-image, no weights).

Phase-contrast cells are not brighter or darker than the background as a whole (halos are bright, flat
cytoplasm is grey), but they are *textured* while the background is smooth. So the foreground is a
threshold on the local standard deviation of the percentile-normalised image (Otsu, scaled), holes filled,
and touching cells are split by a watershed on the distance transform (those steps: `adapters._classical`).
`train` picks the threshold scale and the seed distance by F1@0.5 on the training images and stores them in a
small JSON checkpoint.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from adapters import _classical as steps
from adapters import register
from adapters.base import Adapter
from harness.convert import instances_from_label_map
from harness.errors import ConfigError
from harness.io import write_text

logger = logging.getLogger(__name__)

_FORMAT = "c6bench-classical-v1"
_TUNED = ("threshold_scale", "min_distance")


@register("classical")
class ClassicalAdapter(Adapter):
    """Smoothing, texture threshold (Otsu) and distance-transform watershed; a baseline row for every table."""

    description = "classical baseline: local-texture Otsu threshold + distance-transform watershed (no weights)"
    packages = ("scikit-image",)  # versions() from the base class; single-class, no label maps: its defaults
    predict_params = frozenset(_TUNED)  # train overwrites them with the grid's best
    limits = {"sigma": "> 0", "texture_sigma": "> 0", "threshold_scale": "> 0", "min_distance": ">= 1",
              "min_size": ">= 0", "threshold_scales": "non-empty and > 0",
              "min_distances": "non-empty and >= 1"}

    def __init__(
        self,
        weights: str | None = None,
        device: str = "cpu",
        sigma: float = 2.0,
        texture_sigma: float = 3.0,
        threshold_scale: float = 1.0,
        min_distance: int = 30,
        min_size: int = 300,
    ) -> None:
        """Args:
        weights: must be None (this model has no weights).
        device: ignored (runs on the CPU).
        sigma: Gaussian smoothing before the texture measure (pixels).
        texture_sigma: window of the local standard deviation (pixels).
        threshold_scale: multiplies the Otsu threshold of the texture map.
        min_distance: minimum distance between watershed seeds (pixels).
        min_size: instances smaller than this (pixels) are dropped.
        """
        if weights is not None:
            raise ConfigError("model 'classical' has no weights; remove the weights setting")
        super().__init__(weights=None, device=device)
        self.params = {"sigma": sigma, "texture_sigma": texture_sigma, "threshold_scale": threshold_scale,
                       "min_distance": int(min_distance), "min_size": int(min_size)}

    @property
    def init(self) -> str:
        return "none (no weights)"

    # ------------------------------------------------------------------ contract

    @classmethod
    def rehearsal_schedule(cls, schedule: dict[str, Any], steps: int) -> dict[str, Any]:
        """The grid's first `steps` settings (at most): the first threshold scale × the first `steps` distances."""
        full = cls.full_schedule(schedule)
        return {**schedule, "threshold_scales": list(full["threshold_scales"])[:1],
                "min_distances": list(full["min_distances"])[:steps]}

    @classmethod
    def schedule_size(cls, schedule: dict[str, Any], n_train: int) -> tuple[int, int]:
        """A "step" is one grid setting, scored on every training image."""
        full = cls.full_schedule(schedule)
        settings = len(full["threshold_scales"]) * len(full["min_distances"])
        return settings, settings * n_train

    def train(
        self,
        train_samples: Sequence[Any],
        val_samples: Sequence[Any],
        out_dir: Path,
        *,
        threshold_scales: Sequence[float] = (0.7, 0.9, 1.1),
        min_distances: Sequence[int] = (20, 30, 45),
    ) -> Path:
        """Grid-search `threshold_scale` × `min_distance` by pooled F1@0.5 on the training images.

        Each image's texture map is computed once, its foreground once per threshold scale and its labels once
        per setting; label maps are cached by image content and setting (`harness.cache`), so the other
        targets' searches and the zero-shot predictions segment nothing twice.
        """
        from harness.tuning import first_best, grid_f1

        target = next((i.category for s in train_samples for i in s.instances), "cells")
        grid = [(float(scale), int(distance)) for scale, distance in itertools.product(threshold_scales,
                                                                                      min_distances)]
        f1s = grid_f1(train_samples, len(grid), lambda sample: [
            instances_from_label_map(labels, target) for labels in self._grid_label_maps(sample.load_image(), grid)
        ], [target], desc="classical grid")
        for (scale, distance), f1 in zip(grid, f1s, strict=True):
            logger.debug("threshold_scale=%s min_distance=%s F1@0.5=%.4f", scale, distance, f1)
        best = first_best(f1s)
        self.params = {**self.params, "threshold_scale": grid[best][0], "min_distance": grid[best][1]}
        logger.info("classical: picked %s (train F1@0.5 %.3f)", {k: self.params[k] for k in _TUNED}, f1s[best])
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / "classical.json"
        write_text(path, json.dumps({"format": _FORMAT, "params": self.params, "train_f1": f1s[best]}, indent=2))
        return path

    def load(self, checkpoint: Path) -> None:
        try:
            data = json.loads(Path(checkpoint).read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{checkpoint}: not a classical-adapter checkpoint ({exc})") from exc
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            raise ConfigError(f"{checkpoint}: not a classical-adapter checkpoint (expected format {_FORMAT})")
        params = data.get("params")
        if not isinstance(params, dict) or not params:
            raise ConfigError(f"{checkpoint}: classical checkpoint without 'params' (a mapping of "
                              f"{', '.join(self.params)}); re-run the training")
        unknown = sorted(set(params) - set(self.params))
        if unknown:
            raise ConfigError(f"{checkpoint}: unknown key(s) {', '.join(unknown)} in 'params'; a classical "
                              f"checkpoint holds {', '.join(self.params)}")
        ClassicalAdapter.check_params(params, f"{checkpoint}: params")  # the format, whatever the subclass
        self.params.update(params)

    def predict(self, image: np.ndarray) -> list[Any]:
        return instances_from_label_map(self.label_image(image), "cells")

    # ------------------------------------------------------------------ the method

    def label_image(self, image: np.ndarray) -> np.ndarray:
        """The int32 label map of one image with the current parameters (cached by content and parameters)."""
        p = self.params
        return self._grid_label_maps(image, [(p["threshold_scale"], p["min_distance"])])[0]

    def _grid_label_maps(self, image: np.ndarray, grid: Sequence[tuple[float, int]]) -> list[np.ndarray]:
        """Label maps of `image` for each (threshold_scale, min_distance), sharing the work the settings share."""
        from harness.cache import array_digest, cached_array

        p, digest = self.params, array_digest(np.asarray(image))
        texture: np.ndarray | None = None
        foregrounds: dict[float, tuple[np.ndarray, np.ndarray]] = {}

        def compute(scale: float, distance: int) -> np.ndarray:
            nonlocal texture
            if texture is None:
                texture = steps.texture(image, p["sigma"], p["texture_sigma"])
            if scale not in foregrounds:
                foregrounds[scale] = steps.foreground(texture, scale, p["min_size"])
            return steps.watershed(*foregrounds[scale], distance, p["min_size"])

        out = []
        for scale, distance in grid:
            key = {"image": digest, "version": _FORMAT, **self.params,
                   "threshold_scale": float(scale), "min_distance": int(distance)}
            out.append(cached_array("classical-labels", key, lambda s=scale, d=distance: compute(s, d)))
        return out
