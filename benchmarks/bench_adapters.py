"""Adapter overhead: an adapter's `predict` vs the upstream library's own call on the same image and network.

Each entry of `PAIRS` builds, for one adapter, two zero-argument callables on the same model object and the
same settings: the adapter's ``predict(image)`` and the direct upstream call it wraps. Both run interleaved
in the same process, after a warm-up (numba/torch first-call costs), and the medians give the ratio
(goal <= 1.03). A random-init network predicts almost nothing, so each entry may also time the adapter's own
post-processing on a realistic output (the ground-truth label map of the image) and report it against the
direct call.

Add a model: write ``_<name>_pair(image, sample) -> Pair`` and put it in `PAIRS`.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness.data import Sample, load_coco

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
SAMPLE_TEST = REPO / "data" / "sample" / "spec" / "test" / "annotations.coco.json"


@dataclass
class Pair:
    """The adapter call, the direct upstream call, and optional extra timed callables (name → callable)."""

    adapter: Callable[[], Any]
    direct: Callable[[], Any]
    extra: dict[str, Callable[[], Any]] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)


def _gt_label_map(sample: Sample) -> np.ndarray:
    """Painter's-order label map of the ground truth (a realistic model output, for post-processing)."""
    labels = np.zeros((sample.height, sample.width), dtype=np.int32)
    for k, inst in enumerate(sample.instances, 1):
        y0, x0, y1, x1 = inst.bbox
        labels[y0:y1, x0:x1][inst.crop] = k
    return labels


def _cellpose_pair(image: np.ndarray, sample: Sample) -> Pair:
    import adapters
    from adapters.cellpose import instances_with_scores

    adapter = adapters.get("cellpose").build({}, weights=None, device="cpu")
    model = adapter.model()  # the very same CellposeModel (random init) for both calls
    settings = dict(
        channels=[0, 0], diameter=adapter.diameter, flow_threshold=adapter.flow_threshold,
        cellprob_threshold=adapter.cellprob_threshold, min_size=adapter.min_size,
        batch_size=adapter.batch_size,
        augment=adapter.augment, tile_overlap=adapter.tile_overlap, normalize=True,
    )
    gt = _gt_label_map(sample)
    logits = np.zeros(gt.shape, dtype=np.float32)
    return Pair(
        adapter=lambda: adapter.predict(image),
        direct=lambda: model.eval(image, **settings),
        extra={"postprocess_gt_s": lambda: instances_with_scores(gt, logits)},
        notes={"gt_instances": int(gt.max()), "init": "random"},
    )


PAIRS: dict[str, Callable[[np.ndarray, Sample], Pair]] = {"cellpose": _cellpose_pair}


def _median_times(calls: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    for call in calls.values():  # warm-up
        call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():  # interleaved, so drift in machine load hits both alike
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def run(quick: bool = False) -> dict[str, Any]:
    """Median adapter / direct predict times and their ratio per adapter, on one 1024x1022 test image."""
    samples, _ = load_coco(SAMPLE_TEST)
    sample = samples[0]
    image = sample.load_image()
    repeats = 2 if quick else 5
    out: dict[str, Any] = {"image": f"{sample.name} {image.shape[1]}x{image.shape[0]} {image.dtype}",
                           "repeats": repeats}
    for name, make in PAIRS.items():
        pair = make(image, sample)
        medians = _median_times({"adapter_s": pair.adapter, "direct_s": pair.direct, **pair.extra}, repeats)
        entry: dict[str, Any] = {key: round(value, 4) for key, value in medians.items()}
        entry["ratio"] = round(medians["adapter_s"] / medians["direct_s"], 4)
        for key in pair.extra:
            total = medians["direct_s"] + medians[key]
            entry[f"{key.removesuffix('_s')}_ratio"] = round(total / medians["direct_s"], 4)
        entry.update(pair.notes)
        out[name] = entry
        logger.info("%s: %s", name, entry)
    return out


if __name__ == "__main__":
    import json
    import sys

    logging.basicConfig(level=logging.INFO)
    sys.stdout.write(json.dumps(run(quick="--quick" in sys.argv), indent=2) + "\n")
