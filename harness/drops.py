"""Loud accounting of what scoring drops: a number computed from almost nothing must not pass silently.

Before matching, instances can be dropped (empty masks, the frame rule, GT resolution) and ground truth can be
crowd regions. When that removes most of a target's ground truth or predictions the counts are logged as a
warning; when it removes *all* of the ground truth the scores would be 0 whatever the model did, so that is a
`DataError` naming the target and the counts (typical causes: polygons in 0..1 instead of pixels, a frame
wider than the objects' distance to the border).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from harness.errors import DataError

logger = logging.getLogger(__name__)

MOST = 0.5  # dropping more than this fraction is worth a warning


def check(name: str, totals: Mapping[str, Any], boundary: int, n_images: int) -> None:
    """Warn or fail on what was dropped for one target (`totals` = ``TargetResult.to_dict()``)."""
    gt_dropped = {
        "rasterise to 0 px": totals["n_gt_empty"],
        f"touch the {boundary}-px frame": totals["n_gt_boundary"],
        "were lost resolving overlaps": totals["n_gt_resolve_dropped"],
    }
    gt_in = totals["n_gt"] + sum(gt_dropped.values())
    detail = ", ".join(f"{n} {why}" for why, n in gt_dropped.items() if n)
    if gt_in == 0:
        crowd = totals.get("n_gt_crowd", 0)
        logger.warning(
            "target %s: no ground-truth instance in %d image(s)%s; every score is 0",
            name,
            n_images,
            f" ({crowd} crowd region(s) only)" if crowd else "",
        )
    elif totals["n_gt"] == 0:
        raise DataError(
            f"target {name}: all {gt_in} ground-truth instances of {n_images} image(s) were dropped before "
            f"matching ({detail}); the scores would be 0 whatever was predicted. Check that polygon coordinates "
            "are in pixels (not 0..1) and that the frame (--boundary) is narrower than the images' margins"
        )
    elif gt_in - totals["n_gt"] > MOST * gt_in:
        logger.warning(
            "target %s: %d of %d ground-truth instances dropped before matching (%s); scores rest "
            "on the %d left",
            name,
            gt_in - totals["n_gt"],
            gt_in,
            detail,
            totals["n_gt"],
        )
    pred_dropped = {
        "are empty": totals["n_pred_empty"],
        f"touch the {boundary}-px frame": totals["n_pred_boundary"],
    }
    pred_in = totals["n_pred"] + sum(pred_dropped.values())
    if pred_in == 0 and gt_in:
        logger.warning("target %s: no predicted instance in %d image(s); every score is 0", name, n_images)
    elif pred_in and pred_in - totals["n_pred"] > MOST * pred_in:
        logger.warning(
            "target %s: %d of %d predicted instances dropped before matching (%s)",
            name,
            pred_in - totals["n_pred"],
            pred_in,
            ", ".join(f"{n} {why}" for why, n in pred_dropped.items() if n),
        )
