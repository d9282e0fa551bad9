"""Conversion speed: polygons → crops → priority-resolved label map on a Glioma-C6-sized image.

One synthetic 2592×1944 image (fixed seed) with 240 irregular cell polygons (64 vertices, radius 20–60 px,
~45 % placed against a neighbour so they overlap) and 30 somas nested inside cells: 270 polygons. Timed
stages (median of repeats, single process, single thread):

- ``rasterise``: polygons → bbox crops (`harness.masks.rasterize_polygons`, the harness's one rasteriser);
- ``resolve``: `harness.convert.resolve_priority` on already rasterised instances (rules ``last``, ``smallest``);
- ``label_map``: end to end from fresh polygons (rasterise + resolve + paint) — the figure behind the goal;
- ``rle_decode``: `harness.masks.rle_to_crop` (bbox columns only) vs ``pycocotools.mask.decode`` + crop.

Goal: the 75 Glioma C6 images' worth of label maps in ≤ 15 s on 2 cores (projected from one core here).
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from harness.convert import label_map, resolve_priority
from harness.masks import rle_to_crop
from harness.records import Instance, Sample

logger = logging.getLogger(__name__)

HEIGHT, WIDTH = 1944, 2592
N_CELLS, N_SOMA = 240, 30
N_IMAGES = 75
GOAL_S = 15.0
SEED = 2025


def _blob(cy: float, cx: float, radius: float, rng: np.random.Generator, n: int = 64) -> np.ndarray:
    """An irregular star-shaped polygon (x, y), clipped to the image (pixel-corner coordinates)."""
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    wobble = 1 + 0.25 * np.sin(3 * t + rng.uniform(0, 6)) + 0.08 * rng.standard_normal(n)
    r = radius * np.clip(wobble, 0.4, 1.6)
    x = np.clip(cx + r * np.cos(t), 0, WIDTH)
    y = np.clip(cy + r * np.sin(t), 0, HEIGHT)
    return np.stack([x, y], axis=1)


def make_polygons(seed: int = SEED) -> list[tuple[str, np.ndarray]]:
    """(category, polygon) list: cells, some against a neighbour, then somas nested in random cells."""
    rng = np.random.default_rng(seed)
    centres: list[tuple[float, float, float]] = []
    shapes: list[tuple[str, np.ndarray]] = []
    for _ in range(N_CELLS):
        radius = rng.uniform(20, 60)
        if centres and rng.random() < 0.45:
            py, px, pr = centres[int(rng.integers(len(centres)))]
            d, phi = rng.uniform(0.7, 1.2) * (pr + radius), rng.uniform(0, 2 * np.pi)
            cy, cx = py + d * np.sin(phi), px + d * np.cos(phi)
        else:
            cy, cx = rng.uniform(0, HEIGHT), rng.uniform(0, WIDTH)
        cy, cx = float(np.clip(cy, 0, HEIGHT)), float(np.clip(cx, 0, WIDTH))
        centres.append((cy, cx, radius))
        shapes.append(("cell", _blob(cy, cx, radius, rng)))
    for k in rng.choice(N_CELLS, N_SOMA, replace=False):
        cy, cx, radius = centres[int(k)]
        shapes.append(("soma", _blob(cy, cx, radius * 0.3, rng, n=32)))
    return shapes


def _instances(shapes: list[tuple[str, np.ndarray]]) -> list[Instance]:
    """Fresh (not yet rasterised) instances."""
    return [
        Instance(category=cat, height=HEIGHT, width=WIDTH, order=k, polygons=(poly,))
        for k, (cat, poly) in enumerate(shapes)
    ]


def _median_time(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _rasterise(shapes: list[tuple[str, np.ndarray]]) -> list[Instance]:
    instances = _instances(shapes)
    for inst in instances:
        _ = inst.crop
    return instances


def run(quick: bool = False) -> dict[str, Any]:
    """Figures for perf.json under ``convert``."""
    from pycocotools import mask as mask_utils

    repeats = 1 if quick else 5
    shapes = make_polygons()
    n = len(shapes)
    rasterised = _rasterise(shapes)
    t_raster = _median_time(lambda: _rasterise(shapes), repeats)
    t_last = _median_time(lambda: resolve_priority(rasterised, HEIGHT, WIDTH, rule="last"), repeats)
    t_small = _median_time(lambda: resolve_priority(rasterised, HEIGHT, WIDTH, rule="smallest"), repeats)

    def end_to_end() -> tuple[np.ndarray, Any]:
        sample = Sample(image_path=None, height=HEIGHT, width=WIDTH, instances=tuple(_instances(shapes)))
        return label_map(sample, rule="last")

    t_total = _median_time(end_to_end, repeats)
    labels, resolution = end_to_end()

    # RLE decode: a subset of instances as full-image compressed RLEs (encoded once, outside the timing)
    subset = rasterised[:: max(1, n // (20 if quick else 60))]
    rles = []
    for inst in subset:
        full = np.zeros((HEIGHT, WIDTH), dtype=np.uint8, order="F")
        y0, x0, y1, x1 = inst.bbox
        full[y0:y1, x0:x1] = inst.crop
        rles.append(mask_utils.encode(full))

    def ours() -> None:
        for rle in rles:
            rle_to_crop(rle, HEIGHT, WIDTH)

    def pycoco() -> None:
        for rle in rles:
            x, y, w, h = (int(v) for v in mask_utils.toBbox(rle))
            mask_utils.decode(rle)[y : y + h, x : x + w]

    t_rle_ours = _median_time(ours, repeats)
    t_rle_coco = _median_time(pycoco, repeats)
    pairs_hidden = sum(1 for d in resolution.dropped if d["reason"].startswith("hidden"))
    figures = {
        "image": f"{WIDTH}x{HEIGHT}",
        "polygons": n,
        "kept_last": len(resolution.instances),
        "dropped_last": len(resolution.dropped),
        "hidden_last": pairs_hidden,
        "labelled_pixels": int((labels > 0).sum()),
        "rasterise_s": round(t_raster, 4),
        "resolve_last_s": round(t_last, 4),
        "resolve_smallest_s": round(t_small, 4),
        "label_map_s": round(t_total, 4),
        "polygons_per_s": round(n / t_total, 1),
        "images_per_s": round(1 / t_total, 2),
        "projected_75_images_s": round(N_IMAGES * t_total, 2),
        "projected_75_images_2_cores_s": round(N_IMAGES * t_total / 2, 2),
        "goal_75_images_s": GOAL_S,
        "meets_goal_single_core": bool(N_IMAGES * t_total <= GOAL_S),
        "rle_decode_instances": len(rles),
        "rle_decode_ours_ms_per_instance": round(1e3 * t_rle_ours / len(rles), 3),
        "rle_decode_pycocotools_ms_per_instance": round(1e3 * t_rle_coco / len(rles), 3),
        "repeats": repeats,
    }
    logger.info("convert: %s", figures)
    return figures


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))  # noqa: T201 - script entry point
