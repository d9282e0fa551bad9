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

if TYPE_CHECKING:
    from harness.data import Sample

logger = logging.getLogger(__name__)


def pick_generator_settings(adapter: Any, val_samples: Sequence[Sample], layers: Sequence[int],
                            thresholds: Sequence[float]) -> dict[str, Any] | None:
    """``{"crop_n_layers", "pred_iou_thresh", "f1", "scores"}`` of the best pair, or None when no pair finds a
    single validation cell (the caller then keeps its defaults). `adapter` is a `CellSeg1Adapter`."""
    from adapters.cellseg1 import to_rgb_float
    from harness.data import Sample as SampleT
    from harness.evaluate import evaluate

    cands = [(s, adapter._candidates(to_rgb_float(s.load_image()), min(thresholds), max(layers)))
             for s in val_samples]
    cats = sorted({i.category for s in val_samples for i in s.instances}) or [adapter.category]
    scores: dict[str, float] = {}
    best: tuple[float, int, float] | None = None
    for n in sorted(set(layers)):
        for t in sorted(set(thresholds), reverse=True):
            preds = [SampleT(s.image_path, s.height, s.width,
                             tuple(adapter._finish([c for c in cs if c.layer <= n], t, s.height, s.width,
                                                   cats[0])),
                             image_id=s.image_id, file_name=s.file_name) for s, cs in cands]
            f1 = evaluate(val_samples, preds, targets={"t": cats}).to_dict()["targets"]["t"]["pooled"]["0.5"]["f1"]
            scores[f"{n}/{t:g}"] = f1
            logger.info("cellseg1: crop_n_layers %d, pred_iou_thresh %.2f → validation F1@0.5 %.4f", n, t, f1)
            if best is None or f1 > best[0]:
                best = (f1, n, float(t))
    if best is None or best[0] <= 0:
        logger.warning("cellseg1: no (crop_n_layers, pred_iou_thresh) in %s x %s finds a validation cell; "
                       "keeping the defaults", sorted(set(layers)), sorted(set(thresholds)))
        return None
    f1, n, t = best
    logger.info("cellseg1: picked crop_n_layers %d, pred_iou_thresh %.2f (validation F1@0.5 %.4f, %d image(s))",
                n, t, f1, len(val_samples))
    return {"crop_n_layers": n, "pred_iou_thresh": t, "f1": f1, "scores": scores}
