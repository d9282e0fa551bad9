"""Content digests of files, cached by (path, size, mtime), so stage keys can cover what a stage reads.

A result must be keyed by what it was computed from — annotation and image contents, weights files, the
checkpoint a stage consumes — not by paths. Hashing a 75-image dataset (about 1 GB) on every resume would
cost seconds, so each digest is remembered in a small JSON cache next to the weights cache
(``$C6BENCH_WEIGHTS/digests.json``) under the file's resolved path, size, modification time (ns) and inode:
an unchanged file costs one ``stat``; an edited or replaced file is hashed again (and a file modified in the
last two seconds is never remembered, since a second edit could keep its size and mtime). `derived` caches any
small JSON value computed from a file the same way (the image list of an annotation file, a module's imports).

sha256 is the harness's own digest. ``md5`` exists because that is what some upstreams publish for their
weights (SAM's file names carry an md5 prefix; MEDIAR's files are known by md5): a file that is hashed for
one algorithm is hashed for both in the same pass, so checking a 2.5 GB file reads it once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from harness.cache import cache_dir
from harness.io import write_json

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20
_LOCK = threading.Lock()
_MEMORY: dict[str, tuple[list[int], Any]] = {}
_LOADED: set[Path] = set()


ALGORITHMS = ("sha256", "md5")


def hash_file(path: Path | str, algorithms: Iterable[str] = ALGORITHMS) -> dict[str, str]:
    """Hex digests of a file's bytes for each algorithm, in one streamed pass (no cache)."""
    hashers = {name: hashlib.new(name) for name in algorithms}
    with Path(path).open("rb") as handle:
        while block := handle.read(_CHUNK):
            for hasher in hashers.values():
                hasher.update(block)
    return {name: hasher.hexdigest() for name, hasher in hashers.items()}


def sha256_file(path: Path | str) -> str:
    """Hex sha256 of a file's bytes, streamed (no cache)."""
    return hash_file(path, ("sha256",))["sha256"]


def cache_file() -> Path:
    """Where remembered digests live (beside the weights cache; removing it only costs re-hashing)."""
    return cache_dir() / "digests.json"


def _stamp(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ino]


#: A file modified less than this long ago is hashed but not remembered: a second write within the file
#: system's timestamp granularity would leave size and mtime unchanged (git's "racy" entries).
RACY_NS = 2_000_000_000


def _settled(stamp: list[int]) -> bool:
    return time.time_ns() - stamp[1] > RACY_NS


def _load(cache: Path) -> None:
    if cache in _LOADED:
        return
    _LOADED.add(cache)
    try:
        stored = json.loads(cache.read_text())
    except (OSError, ValueError):
        return
    if isinstance(stored, dict):
        for key, value in stored.items():
            if isinstance(value, list) and len(value) == 2 and (isinstance(value[1], str) or "#" in key):
                _MEMORY.setdefault(key, (list(value[0]), value[1]))


def _save(cache: Path) -> None:
    try:
        write_json(cache, {k: [stamp, digest] for k, (stamp, digest) in _MEMORY.items()})
    except OSError as exc:  # a read-only cache only costs re-hashing next time
        logger.debug("digest cache %s not written: %s", cache, exc)


def file_digest(path: Path | str, algorithm: str = "sha256") -> str:
    """sha256 (or md5) of a file, from the cache when its size, mtime and inode are unchanged."""
    return files_digest([path], algorithm)[0]


def _key(path: Path, algorithm: str) -> str:
    return os.fspath(path) if algorithm == "sha256" else f"{algorithm}:{os.fspath(path)}"


def files_digest(paths: Iterable[Path | str], algorithm: str = "sha256") -> list[str]:
    """sha256 (or md5) of each file (cached); the cache file is written once per call when something was hashed."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"digest algorithm {algorithm!r} is not one of {', '.join(ALGORITHMS)}")
    cache = cache_file()
    out: list[str] = []
    hashed = 0
    with _LOCK:
        _load(cache)
        for raw in paths:
            path = Path(raw).resolve()
            stamp = _stamp(path)
            known = _MEMORY.get(_key(path, algorithm))
            if known is not None and known[0] == stamp:
                out.append(known[1])
                continue
            digests = hash_file(path)  # every algorithm in one read
            if _settled(stamp):
                for name, value in digests.items():
                    _MEMORY[_key(path, name)] = (stamp, value)
                hashed += 1
            out.append(digests[algorithm])
        if hashed:
            _save(cache)
    return out


def derived(path: Path | str, tag: str, compute: Callable[[Path], Any]) -> Any:
    """``compute(path)`` (a JSON-serialisable value), cached under `tag` while the file's stamp is unchanged."""
    path = Path(path).resolve()
    cache, key = cache_file(), f"{os.fspath(path)}#{tag}"
    with _LOCK:
        _load(cache)
        stamp = _stamp(path)
        known = _MEMORY.get(key)
        if known is not None and known[0] == stamp:
            return known[1]
    value = json.loads(json.dumps(compute(path)))  # what a reload from the cache file would give
    if _settled(stamp):
        with _LOCK:
            _MEMORY[key] = (stamp, value)
            _save(cache)
    return value


def combined(parts: Iterable[str]) -> str:
    """One digest of several digests (order matters)."""
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()
