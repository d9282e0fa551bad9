"""The classical baseline's image steps: texture map → foreground → watershed label map (pure functions).

The project's own method, not a re-built upstream model (so not under `adapters._upstream`): scikit-image and
SciPy on NumPy arrays, nothing from the runner. `adapters.classical` is the adapter around it: its parameters,
the grid search that shares these steps between settings, the cache and the checkpoint.
"""

from __future__ import annotations

import logging

import numpy as np

logger = logging.getLogger(__name__)


def texture(image: np.ndarray, sigma: float, texture_sigma: float) -> np.ndarray:
    """Local standard deviation of the smoothed, percentile-normalised image (cells are textured)."""
    from skimage.filters import gaussian

    from harness.images import normalize_percentile, to_gray

    img = gaussian(normalize_percentile(to_gray(image)), sigma=sigma)
    mean = gaussian(img, sigma=texture_sigma)
    return np.sqrt(np.clip(gaussian(img * img, sigma=texture_sigma) - mean * mean, 0, None))


def foreground(texture_map: np.ndarray, scale: float, min_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Foreground mask (scaled Otsu on the texture, holes filled, specks removed) and its distance map."""
    from scipy import ndimage as ndi
    from skimage.filters import threshold_otsu
    from skimage.morphology import remove_small_objects

    fg = texture_map > threshold_otsu(texture_map) * scale
    fg = ndi.binary_fill_holes(fg)
    fg = remove_small_objects(fg, max_size=min_size)
    return fg, ndi.distance_transform_edt(fg)


def watershed(fg: np.ndarray, distance: np.ndarray, min_distance: int, min_size: int) -> np.ndarray:
    """int32 labels of a distance-transform watershed from seeds at least `min_distance` apart; pieces smaller
    than `min_size` pixels dropped."""
    from scipy import ndimage as ndi
    from skimage.feature import peak_local_max
    from skimage.segmentation import watershed as skimage_watershed

    peaks = peak_local_max(distance, min_distance=min_distance, labels=ndi.label(fg)[0], exclude_border=False)
    markers = np.zeros(fg.shape, dtype=np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    labels = skimage_watershed(-distance, markers, mask=fg).astype(np.int32)
    sizes = np.bincount(labels.ravel())
    labels[sizes[labels] < min_size] = 0
    return labels
