"""Resume cost: the content keys of every stage of a bench over a Glioma-C6-sized dataset, untouched since the
last run — the hashing a re-run of ``c6bench bench --out RUN`` pays before it can say "reusing finished stage".

The dataset is synthetic and laid out like Glioma C6 (fixed seed): 75 uncompressed 8-bit 2592×1944 TIFFs
(spec train 30 / valid 4 / test 11, gen 30; 5 MB each) with COCO JSONs of 270 polygons of 48 vertices per
image. Each figure runs in a fresh interpreter (so nothing is remembered in memory, as on a real resume):

- ``first_hash_s``: digests of every annotation and image file with an empty digest cache (the first run; the
  files were just written, so they are read from the page cache: a cold disk adds its read time);
- ``resume_hash_s``: the same with the digest cache of the first run (size/mtime/inode unchanged);
- ``first_all_keys_s`` / ``resume_all_keys_s``: the keys of every stage of a classical bench plan (data, weights,
  code digests) the first time the code is keyed, and on a resume (the figure behind the goal).

Goal: the resume under one second (``harness.keys``).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
HEIGHT, WIDTH = 1944, 2592
SPLITS = {"spec/train": 30, "spec/valid": 4, "spec/test": 11, "gen/test": 30}
POLYGONS, VERTICES = 270, 48
GOAL_S = 1.0
SEED = 2025

_DIGESTS = """
import json, sys, time
from harness import keys
from harness.dataset import load_dataset_config
cfg = load_dataset_config(sys.argv[1])
start = time.perf_counter()
keys.data_digest(cfg, [f"{p}/{s}" for p, part in cfg.parts.items() for s in part.splits])
print(json.dumps(time.perf_counter() - start))
"""

_KEYS = """
import json, logging, sys, time
logging.disable(logging.CRITICAL)
from harness.run import BenchSpec, Runner
start = time.perf_counter()
runner = Runner(BenchSpec(model="classical", data=sys.argv[1], out=sys.argv[2], device="cpu"))
stages = runner.stages()
built = time.perf_counter()
for stage in stages:
    runner.key(stage)
print(json.dumps({"seconds": time.perf_counter() - built, "runner_s": built - start, "stages": len(stages)}))
"""


def _coco(names: list[str], rng: np.random.Generator) -> dict[str, Any]:
    t = np.linspace(0, 2 * np.pi, VERTICES, endpoint=False)
    annotations = []
    for image_id, _ in enumerate(names, start=1):
        centres = rng.uniform([60, 60], [WIDTH - 60, HEIGHT - 60], size=(POLYGONS, 2))
        radii = rng.uniform(20, 55, size=POLYGONS)
        for (cx, cy), r in zip(centres, radii, strict=True):
            poly = np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], axis=1).round(1).ravel().tolist()
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": 1 + len(annotations) % 2,
                    "segmentation": [poly],
                    "iscrowd": 0,
                }
            )
    return {
        "images": [
            {"id": k, "file_name": n, "width": WIDTH, "height": HEIGHT} for k, n in enumerate(names, 1)
        ],
        "annotations": annotations,
        "categories": [{"id": 1, "name": "cell type A"}, {"id": 2, "name": "cell type B"}],
    }


def make_dataset(root: Path, seed: int = SEED) -> Path:
    """Write the synthetic dataset and its YAML under `root`; returns the YAML."""
    import tifffile

    from harness.io import atomic_path, write_text

    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, size=(HEIGHT, WIDTH), dtype=np.uint8)
    for ref, count in SPLITS.items():
        folder = root / ref
        (folder / "images").mkdir(parents=True, exist_ok=True)
        names = [f"{ref.replace('/', '_')}_{k:02d}.tif" for k in range(count)]
        for k, name in enumerate(names):
            image[0, :8] = k  # every file differs
            with atomic_path(folder / "images" / name) as tmp:
                tifffile.imwrite(tmp, image)
        write_text(folder / "annotations.json", json.dumps(_coco(names, rng)))
    day_ago = time.time() - 86400  # a dataset is older than the run (files changed seconds ago are re-hashed)
    for path in root.rglob("*"):
        os.utime(path, (day_ago, day_ago))
    spec = {
        "splits": {"train": "spec/train", "valid": "spec/valid", "test": "spec/test"},
        "targets": {"cells": ["cell type A", "cell type B"]},
    }
    config = {
        "name": "synthetic_glioma",
        "root": str(root),
        "classes": ["cells"],
        "parts": {
            "spec": spec,
            "gen": {"splits": {"test": "gen/test"}, "targets": {"cells": ["cell type A"]}},
        },
        "train": "spec/train",
        "valid": "spec/valid",
        "evaluate": ["spec/test", "gen/test"],
    }
    return write_text(root / "dataset.yaml", json.dumps(config))  # JSON is YAML


def _python(code: str, *args: str, env: dict[str, str]) -> Any:
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], cwd=REPO, env=env, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(quick: bool = False) -> dict[str, Any]:
    """Figures for perf.json under ``resume`` (``quick``: the same, it is a few seconds)."""
    with tempfile.TemporaryDirectory(prefix="c6perf-resume-") as tmp:
        root = Path(tmp)
        data_yaml = make_dataset(root / "data")
        env = dict(
            os.environ,
            C6BENCH_WEIGHTS=str(root / "cache"),
            PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        )
        files = sorted((root / "data").rglob("*.tif")) + sorted((root / "data").rglob("*.json"))
        size = sum(p.stat().st_size for p in files)
        first = _python(_DIGESTS, str(data_yaml), env=env)
        warm = _python(_DIGESTS, str(data_yaml), env=env)
        first_plan = _python(_KEYS, str(data_yaml), str(root / "run"), env=env)
        plan = _python(_KEYS, str(data_yaml), str(root / "run"), env=env)
    figures = {
        "images": sum(SPLITS.values()),
        "image": f"{WIDTH}x{HEIGHT} uint8",
        "files": len(files),
        "dataset_mb": round(size / 1e6, 1),
        "first_hash_s": round(first, 3),
        "resume_hash_s": round(warm, 4),
        "first_all_keys_s": round(first_plan["seconds"], 4),
        "resume_all_keys_s": round(plan["seconds"], 4),
        "stages": plan["stages"],
        "goal_s": GOAL_S,
        "meets_goal": bool(plan["seconds"] < GOAL_S),
    }
    logger.info("resume: %s", figures)
    return figures


if __name__ == "__main__":
    sys.stdout.write(json.dumps(run(), indent=2) + "\n")
