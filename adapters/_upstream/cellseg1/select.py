"""Mask-generator settings picked on the validation split: crop layers and the predicted-IoU cut, jointly.

CellSeg1 fixes ``crop_n_layers: 1`` and ``pred_iou_thresh: 0.8``; the Glioma C6 paper found more crop
resolutions worth +0.15 AP@0.5 for CellSeg1, and the right cut depends on the trained model. `train` therefore
scores every (layers, cut) pair of its grids by pooled F1@0.5 on the validation images and keeps the best;
ties go to fewer layers (cheaper), then to the higher cut. The masks of ``n`` layers are a subset of those of
``max(grid)`` layers (the crop boxes of a layer do not depend on how many follow), so the model runs once per
image at the largest setting and each pair only re-runs the threshold, NMS and scoring.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from adapters._upstream.cellseg1 import amg, nms
from adapters._upstream.cellseg1.tiles import squash, to_rgb_float

if TYPE_CHECKING:
    from harness.records import Instance, Sample

logger = logging.getLogger(__name__)

DEFAULT_LAYERS, DEFAULT_THRESH = 1, 0.8  # CellSeg1's example_config.yaml, used until validation picks


def pick_generator_settings(adapter: Any, val_samples: Sequence[Sample], layers: Sequence[int],
                            thresholds: Sequence[float]) -> dict[str, Any] | None:
    """``{"crop_n_layers", "pred_iou_thresh", "f1", "scores"}`` of the best pair, or None when no pair finds a
    single validation cell (the caller then keeps its defaults). `adapter` is a `CellSeg1Adapter`; the pairs
    are scored by `harness.tuning.grid_f1`."""
    from harness.tuning import first_best, grid_f1

    cats = sorted({i.category for s in val_samples for i in s.instances}) or [adapter.category]
    grid = [(n, float(t)) for n in sorted(set(layers)) for t in sorted(set(thresholds), reverse=True)]
    gen, size = adapter.amg, adapter.work_size

    def predict(sample: Sample) -> list[list[Instance]]:
        work, _ = squash(to_rgb_float(sample.load_image()), None, size)
        cands = amg.candidates(adapter.model, work, gen, min(thresholds), max(layers), adapter.device)
        return [amg.to_instances(nms.keep([c for c in cands if c.layer <= n], t, gen.mask_nms_thresh), size,
                                 sample.height, sample.width, cats[0]) for n, t in grid]

    f1s = grid_f1(val_samples, len(grid), predict, cats, desc="cellseg1 selection")
    scores: dict[str, float] = {}
    for (n, t), f1 in zip(grid, f1s, strict=True):
        scores[f"{n}/{t:g}"] = f1
        logger.info("cellseg1: crop_n_layers %d, pred_iou_thresh %.2f → validation F1@0.5 %.4f", n, t, f1)
    best = first_best(f1s)
    if f1s[best] <= 0:
        logger.warning("cellseg1: no (crop_n_layers, pred_iou_thresh) in %s x %s finds a validation cell; "
                       "keeping the defaults", sorted(set(layers)), sorted(set(thresholds)))
        return None
    (n, t), f1 = grid[best], f1s[best]
    logger.info("cellseg1: picked crop_n_layers %d, pred_iou_thresh %.2f (validation F1@0.5 %.4f, %d image(s))",
                n, t, f1, len(val_samples))
    return {"crop_n_layers": n, "pred_iou_thresh": t, "f1": f1, "scores": scores}
