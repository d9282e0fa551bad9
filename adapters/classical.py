"""Classical baseline: texture threshold + distance-transform watershed (scikit-image, no weights).

Phase-contrast cells are not brighter or darker than the background as a whole (halos are bright, flat
cytoplasm is grey), but they are *textured* while the background is smooth. So the foreground is a
threshold on the local standard deviation of the percentile-normalised image (Otsu, scaled), holes filled,
and touching cells are split by a watershed on the distance transform. `train` picks the threshold scale
and the seed distance by F1@0.5 on the training images and stores them in a small JSON checkpoint.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from adapters import register
from adapters.base import Adapter
from harness.errors import ConfigError

logger = logging.getLogger(__name__)

_FORMAT = "c6bench-classical-v1"
_TUNED = ("threshold_scale", "min_distance")


@register("classical")
class ClassicalAdapter(Adapter):
    """Smoothing, texture threshold (Otsu) and distance-transform watershed; a baseline row for every table."""

    description = "classical baseline: local-texture Otsu threshold + distance-transform watershed (no weights)"
    multiclass = False
    needs_label_maps = False

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

    def versions(self) -> dict[str, str]:
        import skimage

        return {"scikit-image": skimage.__version__}

    # ------------------------------------------------------------------ contract

    def train(
        self,
        train_samples: Sequence[Any],
        val_samples: Sequence[Any],
        out_dir: Path,
        *,
        threshold_scales: Sequence[float] = (0.7, 0.9, 1.1),
        min_distances: Sequence[int] = (20, 30, 45),
    ) -> Path:
        """Grid-search `threshold_scale` × `min_distance` by pooled F1@0.5 on the training images."""
        from tqdm import tqdm

        from harness.evaluate import evaluate

        images = [s.load_image() for s in train_samples]
        target = next((i.category for s in train_samples for i in s.instances), "cells")
        best: tuple[float, dict[str, Any]] = (-1.0, dict(self.params))
        grid = list(itertools.product(threshold_scales, min_distances))
        for scale, distance in tqdm(grid, desc="classical grid", unit="setting"):
            self.params.update(threshold_scale=float(scale), min_distance=int(distance))
            preds = [s.with_instances(self._segment(im, target)) for s, im in zip(train_samples, images, strict=True)]
            f1 = evaluate(train_samples, preds, {target: [target]}, thresholds=(0.5,)).targets[target].pooled[0].f1
            logger.debug("threshold_scale=%s min_distance=%s F1@0.5=%.4f", scale, distance, f1)
            if f1 > best[0]:
                best = (f1, dict(self.params))
        self.params = best[1]
        logger.info("classical: picked %s (train F1@0.5 %.3f)", {k: self.params[k] for k in _TUNED}, best[0])
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / "classical.json"
        path.write_text(json.dumps({"format": _FORMAT, "params": self.params, "train_f1": best[0]}, indent=2))
        return path

    def load(self, checkpoint: Path) -> None:
        try:
            data = json.loads(Path(checkpoint).read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{checkpoint}: not a classical-adapter checkpoint ({exc})") from exc
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            raise ConfigError(f"{checkpoint}: not a classical-adapter checkpoint (expected format {_FORMAT})")
        self.params.update(data["params"])

    def predict(self, image: np.ndarray) -> list[Any]:
        return self._segment(image, "cells")

    # ------------------------------------------------------------------ the method

    def label_image(self, image: np.ndarray) -> np.ndarray:
        """The int32 label map of one image."""
        from scipy import ndimage as ndi
        from skimage.feature import peak_local_max
        from skimage.filters import gaussian, threshold_otsu
        from skimage.morphology import remove_small_objects
        from skimage.segmentation import watershed

        from harness.data import normalize_percentile, to_gray

        p = self.params
        img = gaussian(normalize_percentile(to_gray(image)), sigma=p["sigma"])
        mean = gaussian(img, sigma=p["texture_sigma"])
        texture = np.sqrt(np.clip(gaussian(img * img, sigma=p["texture_sigma"]) - mean * mean, 0, None))
        fg = texture > threshold_otsu(texture) * p["threshold_scale"]
        fg = ndi.binary_fill_holes(fg)
        fg = remove_small_objects(fg, max_size=p["min_size"])
        distance = ndi.distance_transform_edt(fg)
        peaks = peak_local_max(distance, min_distance=p["min_distance"], labels=ndi.label(fg)[0],
                               exclude_border=False)
        markers = np.zeros(fg.shape, dtype=np.int32)
        markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
        labels = watershed(-distance, markers, mask=fg).astype(np.int32)
        sizes = np.bincount(labels.ravel())
        labels[sizes[labels] < p["min_size"]] = 0
        return labels

    def _segment(self, image: np.ndarray, category: str) -> list[Any]:
        from harness.convert import instances_from_label_map

        return instances_from_label_map(self.label_image(image), category)
