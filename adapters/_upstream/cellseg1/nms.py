"""Mask-IoU non-maximum suppression of the generator's candidates (CellSeg1's ``mask_nms``, not box NMS).

SAM's generator suppresses by box IoU, which removes touching cells (their boxes overlap); CellSeg1 suppresses
by mask IoU, highest score (predicted IoU × stability) first. The greedy loop is `metrics.matching.mask_nms`,
shared with the harness.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from adapters._upstream.cellseg1.amg import Candidate

logger = logging.getLogger(__name__)


def mask_iou_nms(cands: list[Candidate], thresh: float) -> list[Candidate]:
    """Greedy NMS by mask IoU, highest score first: a candidate overlapping a kept one by > `thresh` goes."""
    from metrics.matching import mask_nms

    return [cands[k] for k in mask_nms(cands, [c.score for c in cands], thresh)]


def keep(cands: list[Candidate], iou_thresh: float, nms_thresh: float) -> list[Candidate]:
    """The candidates at or above the predicted-IoU cut, then mask-IoU NMS."""
    return mask_iou_nms([c for c in cands if c.iou >= iou_thresh], nms_thresh)
