"""Adapter overhead: an adapter's `predict` vs the upstream library's own call on the same image and network.

Each entry of `PAIRS` builds, for one adapter, two zero-argument callables on the same model object and the
same settings: the adapter's ``predict(image)`` and the direct upstream call it wraps. Both run interleaved
in the same process, after a warm-up (numba/torch first-call costs), and the medians give the ratio
(goal <= 1.03). A random-init network predicts almost nothing, so the network entries also time the adapter's own
post-processing on a realistic output (the ground truth of the image: a label map, or SAM candidates at work
size) and report ``postprocess_gt_ratio`` = (direct + that post-processing) / direct.

Random-init networks predict anything from nothing to hundreds of instances, so each entry reports the instance
count of both sides (the direct call runs with the adapter's thresholds, so both do the same work) and a
``direct`` note saying what the direct call is. ``--quick`` times the 384x384 corner once (a smoke run).

Every registered model gets an entry (`planned`): its comparison, or a ``skipped`` reason. Add a model's
comparison: write ``_<name>_pair(image, sample) -> Pair`` and put it in `PAIRS`.
"""

from __future__ import annotations

import dataclasses
import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness.coco import load_coco
from harness.records import Sample

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
SAMPLE_TEST = REPO / "data" / "sample" / "spec" / "test" / "annotations.coco.json"


@dataclass
class Pair:
    """The adapter call, the direct upstream call, and optional extra timed callables (name → callable)."""

    adapter: Callable[[], Any]
    direct: Callable[[], Any]
    count_direct: Callable[[Any], int]  # instances in the direct call's output (the adapter's: len(list))
    extra: dict[str, Callable[[], Any]] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)


def _corner(image: np.ndarray, sample: Sample, size: int) -> tuple[np.ndarray, Sample]:
    """The top-left size x size of the image, with the GT instances that lie wholly inside it."""
    image = np.ascontiguousarray(image[:size, :size])
    inside = [i for i in sample.instances if i.bbox[2] <= size and i.bbox[3] <= size]
    return image, dataclasses.replace(sample.with_instances(inside), height=image.shape[0], width=image.shape[1])


def _gt_label_map(sample: Sample) -> np.ndarray:
    """Painter's-order label map of the ground truth (a realistic model output, for post-processing)."""
    labels = np.zeros((sample.height, sample.width), dtype=np.int32)
    for k, inst in enumerate(sample.instances, 1):
        y0, x0, y1, x1 = inst.bbox
        labels[y0:y1, x0:x1][inst.crop] = k
    return labels


def _cellpose_pair(image: np.ndarray, sample: Sample) -> Pair:
    import adapters
    from adapters._upstream.cellpose_common import CATEGORY
    from harness.convert import instances_from_logits

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
        count_direct=lambda result: int(np.asarray(result[0]).max()),
        extra={"postprocess_gt_s": lambda: instances_from_logits(gt, logits, CATEGORY)},
        notes={"direct": "CellposeModel.eval on the same model, image and settings (diameter, thresholds, "
                         "tiling); the adapter adds one crop + mean-probability score per instance",
               "gt_instances": int(gt.max()), "init": "random"},
    )


def _classical_pair(image: np.ndarray, sample: Sample) -> Pair:
    import adapters

    adapter = adapters.get("classical").build({}, device="cpu")
    return Pair(adapter=lambda: adapter.predict(image), direct=lambda: adapter.label_image(image),
                count_direct=lambda labels: int(labels.max()),
                notes={"direct": "the scikit-image pipeline (gaussian, Otsu, distance watershed) to a label map, "
                                 "same parameters; the adapter adds one bbox crop per instance"})


def _yolo_pair(image: np.ndarray, sample: Sample) -> Pair:
    import adapters
    from adapters._upstream.ultralytics import predict_size, ultralytics_offline
    from harness.images import to_uint8

    adapter = adapters.get("yolo11").build({"model_size": "n", "imgsz": 640, "conf": 1e-6, "max_det": 300},
                                           device="cpu")
    import torch

    torch.manual_seed(1)  # this seed's random head yields masks at conf 1e-6 (seed 0's yields none)
    adapter._yolo = adapter._initial_model(ultralytics_offline())  # random-init nano from its YAML, no weights here
    bgr = np.ascontiguousarray(np.repeat(to_uint8(image)[..., None], 3, axis=-1)[..., ::-1])
    settings = dict(imgsz=predict_size(adapter.imgsz, adapter.predict_imgsz, *image.shape[:2]), conf=adapter.conf, iou=adapter.iou,
                    max_det=adapter.max_det, retina_masks=True, device="cpu", verbose=False, save=False)
    return Pair(adapter=lambda: adapter.predict(image), direct=lambda: adapter._yolo.predict(bgr, **settings),
                count_direct=lambda results: 0 if results[0].masks is None else len(results[0].masks),
                notes={"direct": "ultralytics YOLO.predict on the same model, image (8-bit BGR) and settings "
                                 "(imgsz, conf, iou, max_det, retina_masks); the adapter adds normalisation and "
                                 "one crop per mask",
                       "model": "yolo11n-seg", "init": "random, torch seed 1, conf 1e-6 (so that masks exist)"})


def _mediar_pair(image: np.ndarray, sample: Sample) -> Pair:
    import torch
    from cellpose import dynamics

    import adapters
    from adapters._upstream.mediar.augment import mediar_normalize
    from adapters._upstream.mediar.sliding_window import CATEGORY, sliding_window
    from harness.convert import instances_from_logits

    image, sample = _corner(image, sample, 512)  # random-init flows make dynamics slow: one window's worth
    adapter = adapters.get("mediar").build({"encoder": "mit_b0"}, device="cpu")
    (net,) = adapter.networks()
    net.eval()
    threshold = float(np.log(adapter.cellprob_threshold / (1 - adapter.cellprob_threshold)))

    def direct() -> Any:
        with torch.inference_mode():
            out = sliding_window(net, torch.from_numpy(mediar_normalize(image)), adapter.window, adapter.overlap,
                                 adapter.window_batch).numpy()
        return dynamics.compute_masks(out[:2], out[2], niter=adapter.niter, cellprob_threshold=threshold,
                                      flow_threshold=adapter.flow_threshold, min_size=adapter.min_size,
                                      device=torch.device("cpu"))

    gt = _gt_label_map(sample)
    logits = np.zeros(gt.shape)  # probability 0.5
    return Pair(adapter=lambda: adapter.predict(image), direct=direct,
                count_direct=lambda labels: int(np.asarray(labels).max()),
                extra={"postprocess_gt_s": lambda: instances_from_logits(gt, logits, CATEGORY)},
                notes={"direct": "the network over MEDIAR's sliding window (512, overlap 0.6, Gaussian) + "
                                 "cellpose.dynamics.compute_masks, same thresholds; the adapter adds scores "
                                 "and crops",
                       "encoder": "mit_b0", "init": "random", "gt_instances": int(gt.max()),
                       "image": f"{image.shape[1]}x{image.shape[0]} top-left corner of the test image"})


def _gt_candidates(sample: Sample, size: int) -> list[Any]:
    """The ground truth as CellSeg1 candidates at its work size (a realistic generator output for NMS + resize)."""
    from adapters._upstream.cellseg1.amg import Candidate
    from adapters._upstream.cellseg1.augment import resize

    sy, sx = size / sample.height, size / sample.width
    out = []
    for inst in sample.instances:
        y0, x0, y1, x1 = inst.bbox
        wy0, wx0 = int(y0 * sy), int(x0 * sx)
        wy1, wx1 = max(wy0 + 1, int(np.ceil(y1 * sy))), max(wx0 + 1, int(np.ceil(x1 * sx)))
        crop = resize(inst.crop, wy1 - wy0, wx1 - wx0)
        if crop.any():
            out.append(Candidate(wy0, wx0, crop, 0.9, 0.9))
    return out


def _cellseg1_pair(image: np.ndarray, sample: Sample) -> Pair:
    import adapters
    from adapters._upstream.cellseg1 import amg, nms
    from adapters._upstream.cellseg1.tiles import squash, to_rgb_float

    params = {"image_size": 256, "scratch_variant": "small", "points_per_side": 16,
              "crop_n_layers": 0 if image.shape[0] <= QUICK_CROP else 1}  # --quick: the full view only
    adapter = adapters.get("cellseg1").build(params, device="cpu")
    rgb = to_rgb_float(image)
    gt_cands = _gt_candidates(sample, adapter.work_size)
    height, width = image.shape[:2]

    def postprocess() -> list[Any]:
        kept = nms.keep(gt_cands, 0.0, adapter.amg.mask_nms_thresh)
        return amg.to_instances(kept, adapter.work_size, height, width, "cells")

    return Pair(adapter=lambda: adapter.predict(image),
                direct=lambda: amg.candidates(adapter.model, squash(rgb, None, adapter.work_size)[0], adapter.amg,
                                              adapter.iou_thresh, adapter.n_layers, adapter.device),
                count_direct=len,
                extra={"postprocess_gt_s": postprocess},
                notes={"direct": "the adapter's generator built from segment_anything parts (image encoder, "
                                 "prompt encoder, mask decoder over the point grid and crop layers, its amg "
                                 "crop boxes/grids, same IoU and stability thresholds) = candidates before NMS; "
                                 "the adapter adds mask-IoU NMS and resizing back to full size",
                       "config": f"small random SAM, 256 px, 16x16 grid, {params['crop_n_layers']} crop layer(s)",
                       "gt_candidates": len(gt_cands)})


PAIRS: dict[str, Callable[[np.ndarray, Sample], Pair]] = {
    "classical": _classical_pair, "cellpose": _cellpose_pair, "yolo11": _yolo_pair, "mediar": _mediar_pair,
    "cellseg1": _cellseg1_pair,
}


def planned() -> dict[str, Callable[[np.ndarray, Sample], Pair] | str]:
    """Every registered model: its comparison, or why it has none (a new model gets a row saying so)."""
    import adapters

    out: dict[str, Callable[[np.ndarray, Sample], Pair] | str] = {}
    for name in adapters.names():
        if name in PAIRS:
            out[name] = PAIRS[name]
        elif adapters.get(name).requirements:
            out[name] = (f"runs in its own environment ({', '.join(adapters.get(name).requirements)}): its stages "
                         "are timed by `make gpu-check`, not in this process")
        else:
            out[name] = f"no comparison yet: write _{name}_pair in benchmarks/bench_adapters.py and add it to PAIRS"
    return out


def _median_times(calls: dict[str, Callable[[], Any]], repeats: int) -> tuple[dict[str, float], dict[str, Any]]:
    """Medians of interleaved timed calls after one warm-up each, and each call's warm-up output."""
    outputs = {name: call() for name, call in calls.items()}  # warm-up (numba, torch first-call costs)
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():  # interleaved, so drift in machine load hits both alike
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}, outputs


QUICK_CROP = 384  # --quick: the top-left 384x384 of the image, one timed repeat (a smoke run, not the figures)


def run(quick: bool = False) -> dict[str, Any]:
    """Median adapter / direct predict times, their ratio and instance counts per adapter, on one sample image
    (1024x1022; --quick: its 384x384 corner)."""
    samples, _ = load_coco(SAMPLE_TEST)
    sample = samples[0]
    image = sample.load_image()
    if quick:
        image, sample = _corner(image, sample, QUICK_CROP)
    repeats = 1 if quick else 3
    out: dict[str, Any] = {"image": f"{sample.name} {image.shape[1]}x{image.shape[0]} {image.dtype}",
                           "repeats": repeats}
    import torch

    for name, make in planned().items():
        if isinstance(make, str):
            out[name] = {"skipped": make}
            continue
        torch.manual_seed(0)  # the random-init networks, hence their instance counts, are the same every run
        try:
            pair = make(image, sample)
        except Exception as exc:  # noqa: BLE001 - one adapter's failure must not hide the others' figures
            logger.exception("adapter %s: cannot set up the comparison", name)
            out[name] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        try:
            medians, outputs = _median_times({"adapter_s": pair.adapter, "direct_s": pair.direct, **pair.extra},
                                             repeats)
        except Exception as exc:  # noqa: BLE001 - as above
            logger.exception("adapter %s: the comparison failed", name)
            out[name] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        entry: dict[str, Any] = {key: round(value, 4) for key, value in medians.items()}
        entry["ratio"] = round(medians["adapter_s"] / medians["direct_s"], 4)
        entry["instances_adapter"] = len(outputs["adapter_s"])
        entry["instances_direct"] = pair.count_direct(outputs["direct_s"])
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
