"""Settings picked by pooled F1@0.5 on annotated images: the one grid search the adapters share.

The classical baseline picks its threshold scale × seed distance on the training images, CellSeg1 its crop
layers × predicted-IoU cut on the validation images; both the same way: every setting's predictions on every
image, scored together as the benchmark scores them (`harness.evaluate.evaluate`: counts pooled over the
images, F1 at IoU 0.5), and the first best setting in the caller's order kept (`first_best`). The caller's
`predict` returns one image's predictions for every setting at once, so work the settings share (a texture
map, a forward pass) is done once per image.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from harness.records import Instance, Sample

logger = logging.getLogger(__name__)

TARGET = "selection"  # the target name in `evaluate`'s logs


def grid_f1(samples: Sequence[Sample], n_settings: int, predict: Callable[[Sample], Sequence[Sequence[Instance]]],
            categories: Sequence[str], desc: str = "grid search") -> list[float]:
    """Pooled F1@0.5 over `samples` of each of `n_settings` settings; `predict(sample)` gives the instances of
    every setting, in order. Ground truth of `categories` is scored; predictions must carry one of them."""
    from tqdm import tqdm

    from harness.evaluate import evaluate

    per_setting: list[list[Sample]] = [[] for _ in range(n_settings)]
    for sample in tqdm(samples, desc=desc, unit="img"):
        outputs = predict(sample)
        if len(outputs) != n_settings:
            raise ValueError(f"grid_f1: predict gave {len(outputs)} predictions for {n_settings} settings")
        for k, instances in enumerate(outputs):
            per_setting[k].append(sample.with_instances(instances))
    targets = {TARGET: list(categories)}
    return [evaluate(samples, preds, targets, thresholds=(0.5,)).targets[TARGET].pooled[0].f1
            for preds in per_setting]


def first_best(scores: Sequence[float]) -> int:
    """Index of the highest score, the first one on ties (the caller orders its grid by preference)."""
    if not scores:
        raise ValueError("first_best: no score to pick from")
    return max(range(len(scores)), key=lambda k: scores[k])
