"""A content-keyed cache for derived arrays (label maps, flow targets) shared by stages, targets and runs.

Why: at the real dataset's scale the same derived data is recomputed many times — the classical baseline segments
every training image with the same settings once per target, cellpose recomputes flow targets for every target and
on every resume. A derived array depends only on its inputs, so it is stored under a digest of them (the input
array's bytes, the settings, and a version string the caller bumps when its code changes) and read back instead of
recomputed. Reading back is exact (``.npz`` of the same dtype, zlib-compressed: a 2592 x 1944 label map is a few
hundred kB instead of 20 MB), so cached and uncached runs give identical results.

Files live in ``$C6BENCH_WEIGHTS/derived/<kind>/`` (the harness's cache folder; tests point it at a temp dir) and
are written atomically; deleting the folder only costs recomputation.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from harness.io import atomic_path

logger = logging.getLogger(__name__)

#: The harness's cache folder: weights files, derived arrays (``derived/``), remembered digests.
CACHE_ENV = "C6BENCH_WEIGHTS"


def cache_dir() -> Path:
    """The harness's cache folder, ``$C6BENCH_WEIGHTS`` (not created here)."""
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "glioma-c6-bench")).expanduser()


def array_digest(array: np.ndarray) -> str:
    """sha256 of an array's dtype, shape and bytes (what a derived result of it depends on)."""
    array = np.ascontiguousarray(array)
    digest = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


def cache_root() -> Path:
    return cache_dir() / "derived"


def _path(kind: str, key: Mapping[str, Any]) -> Path:
    text = json.dumps({"kind": kind, **key}, sort_keys=True, default=str)
    name = hashlib.sha256(text.encode()).hexdigest()
    return cache_root() / kind / name[:2] / f"{name}.npz"


def cached_array(kind: str, key: Mapping[str, Any], compute: Callable[[], np.ndarray]) -> np.ndarray:
    """The array stored under (`kind`, `key`), computing and storing it on a miss.

    `key` must hold everything the result depends on (use `array_digest` for input arrays) and a code version.
    An unreadable cache file is recomputed and replaced.
    """
    path = _path(kind, key)
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as stored:
                return stored["value"]
        except (OSError, ValueError, KeyError) as exc:
            logger.warning("cache file %s unreadable (%s); recomputing", path, exc)
    value = np.asarray(compute())
    try:
        with atomic_path(path) as tmp, tmp.open("wb") as handle:
            np.savez_compressed(handle, value=value)
    except OSError as exc:  # a full or read-only cache costs recomputation, not the run
        logger.warning("could not cache %s in %s: %s", kind, path, exc)
    return value


def cached_npy(kind: str, key: Mapping[str, Any], compute: Callable[[], np.ndarray]) -> tuple[Path, bool]:
    """Like `cached_array`, but stored uncompressed (``.npy``) for ``np.load(path, mmap_mode="r")``.

    For large arrays read piece by piece (cellpose's flow targets: 40 MB per full-size image), so memory holds
    only what is being read. Returns the file and whether it was already there. A file that does not load is
    recomputed; one that cannot be written raises `OSError` (the caller needs the file, not just the values).
    """
    path = _path(kind, key).with_suffix(".npy")
    if path.is_file():
        try:
            np.load(path, mmap_mode="r", allow_pickle=False)
            return path, True
        except (OSError, ValueError) as exc:
            logger.warning("cache file %s unreadable (%s); recomputing", path, exc)
    value = np.asarray(compute())
    with atomic_path(path) as tmp, tmp.open("wb") as handle:
        np.save(handle, value, allow_pickle=False)
    return path, False
