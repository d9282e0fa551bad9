"""MEDIAR's prediction: sliding windows with Gaussian weighting, flip TTA, ensemble average, flows → instances.

Follows MEDIAR's ``core/MEDIAR/Predictor.py`` and ``EnsemblePredictor.py`` (MONAI ``sliding_window_inference`` with
``mode="gaussian"``, re-implemented in torch): 512-px windows, overlap 0.6, the plain and flipped passes averaged
(flows sign-corrected), several networks averaged, then ``cellpose.dynamics.compute_masks`` turns flows +
probability into a label map; each instance's score is its mean cell probability.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from adapters._upstream.mediar.augment import mediar_normalize, scaled_size

CATEGORY = "cell"  # the one category of a single-class model's instances


def window_starts(length: int, window: int, overlap: float) -> list[int]:
    """Window origins covering ``[0, length)`` with stride ``int(window * (1 - overlap))``, as MONAI's."""
    if length <= window:
        return [0]
    step = max(1, int(window * (1.0 - overlap)))
    return [*range(0, length - window, step), length - window]


@functools.cache
def importance_map(window: int, sigma_scale: float = 0.125) -> np.ndarray:
    """Gaussian window weights (MONAI ``mode="gaussian"``: sigma = 0.125 x window, peak 1)."""
    centre, sigma = (window - 1) / 2.0, sigma_scale * window
    profile = np.exp(-0.5 * ((np.arange(window) - centre) / sigma) ** 2)
    weights = np.outer(profile, profile)
    return (weights / weights.max()).astype(np.float32)  # corners ~1e-7: small, never zero


def sliding_window(net: Any, image: Any, window: int, overlap: float, batch: int) -> Any:
    """Network output (3, H, W) for a (3, H, W) tensor: zero-padded to >= window, Gaussian-weighted windows."""
    import torch
    import torch.nn.functional as F

    _, height, width = image.shape
    dy, dx = max(window - height, 0), max(window - width, 0)
    padded = F.pad(image, (dx // 2, dx - dx // 2, dy // 2, dy - dy // 2)) if dy or dx else image
    full_h, full_w = padded.shape[1:]
    origins = [(y, x) for y in window_starts(full_h, window, overlap) for x in window_starts(full_w, window, overlap)]
    weight = torch.from_numpy(importance_map(window)).to(image.device)
    total = torch.zeros((3, full_h, full_w), dtype=torch.float32, device=image.device)
    norm = torch.zeros((full_h, full_w), dtype=torch.float32, device=image.device)
    for first in range(0, len(origins), batch):
        chunk = origins[first : first + batch]
        outputs = net(torch.stack([padded[:, y : y + window, x : x + window] for y, x in chunk])).float()
        for (y, x), out in zip(chunk, outputs, strict=True):
            total[:, y : y + window, x : x + window] += out * weight
            norm[y : y + window, x : x + window] += weight
    total /= norm
    return total[:, dy // 2 : dy // 2 + height, dx // 2 : dx // 2 + width]


def flip_tta(net: Any, image: Any, window: int, overlap: float, batch: int) -> Any:
    """Mean of the plain, horizontally and vertically flipped passes, flows sign-corrected (MEDIAR's TTA)."""
    plain = sliding_window(net, image, window, overlap, batch)
    hflip = sliding_window(net, image.flip(2), window, overlap, batch).flip(2)
    vflip = sliding_window(net, image.flip(1), window, overlap, batch).flip(1)
    hflip[1] = -hflip[1]  # a horizontal flip reverses dX
    vflip[0] = -vflip[0]  # a vertical flip reverses dY
    return (plain + hflip + vflip) / 3.0


def network_output(nets: Sequence[Any], image: np.ndarray, device: Any, *, scale: float, window: int, overlap: float,
                   batch: int, tta: bool) -> np.ndarray:
    """The (ensemble-, TTA-) averaged network output (dY, dX, logit) at full resolution, float32 (3, H, W)."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(mediar_normalize(image)).to(device)
    height, width = x.shape[1:]
    if scale != 1.0:  # the same resizing as the training images (`rescale_train_image`)
        x = F.interpolate(x[None], size=scaled_size((height, width), scale), mode="area")[0]
    run = flip_tta if tta else sliding_window
    with torch.inference_mode():
        outputs = []
        for net in nets:
            net.eval()
            outputs.append(run(net, x, window, overlap, batch))
        mean = torch.stack(outputs).mean(dim=0)
        if scale != 1.0:  # flows are unit-length x 5 at any size: only their grid changes
            mean = F.interpolate(mean[None], size=(height, width), mode="bilinear", align_corners=False)[0]
    return mean.cpu().numpy().astype(np.float32)


def masks_from_output(output: np.ndarray, device: Any, *, cellprob_threshold: float, flow_threshold: float,
                      niter: int, min_size: int) -> np.ndarray:
    """Label map from (dY, dX, logit) with cellpose 3's dynamics (flows are 5x unit vectors, as trained)."""
    from cellpose import dynamics

    logit_threshold = math.log(cellprob_threshold / (1.0 - cellprob_threshold))
    masks = dynamics.compute_masks(output[:2], output[2], niter=niter, cellprob_threshold=logit_threshold,
                                   flow_threshold=flow_threshold, min_size=min_size, device=device)
    return np.asarray(masks, dtype=np.int32)
