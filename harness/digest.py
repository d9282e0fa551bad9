"""Content digests of files, cached by (path, size, mtime), so stage keys can cover what a stage reads.

A result must be keyed by what it was computed from — annotation and image contents, weights files, the
checkpoint a stage consumes — not by paths. Hashing a 75-image dataset (about 1 GB) on every resume would
cost seconds, so each digest is remembered in a small JSON cache next to the weights cache
(``$C6BENCH_WEIGHTS/digests.json``) under the file's resolved path, size, modification time (ns) and inode:
an unchanged file costs one ``stat``; an edited or replaced file is hashed again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Iterable
from pathlib import Path

from harness.io import write_json

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20
_LOCK = threading.Lock()
_MEMORY: dict[str, tuple[list[int], str]] = {}
_LOADED: set[Path] = set()


def sha256_file(path: Path | str) -> str:
    """Hex sha256 of a file's bytes, streamed (no cache)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while block := handle.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def cache_file() -> Path:
    """Where remembered digests live (beside the weights cache; removing it only costs re-hashing)."""
    from harness.weights import cache_dir

    return cache_dir() / "digests.json"


def _stamp(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ino]


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
            if isinstance(value, list) and len(value) == 2 and isinstance(value[1], str):
                _MEMORY.setdefault(key, (list(value[0]), value[1]))


def _save(cache: Path) -> None:
    try:
        write_json(cache, {k: [stamp, digest] for k, (stamp, digest) in _MEMORY.items()})
    except OSError as exc:  # a read-only cache only costs re-hashing next time
        logger.debug("digest cache %s not written: %s", cache, exc)


def file_digest(path: Path | str) -> str:
    """sha256 of a file, from the cache when its size, mtime and inode are unchanged."""
    return files_digest([path])[0]


def files_digest(paths: Iterable[Path | str]) -> list[str]:
    """sha256 of each file (cached); the cache file is written once per call when something was hashed."""
    cache = cache_file()
    out: list[str] = []
    hashed = 0
    with _LOCK:
        _load(cache)
        for raw in paths:
            path = Path(raw).resolve()
            stamp = _stamp(path)
            key = os.fspath(path)
            known = _MEMORY.get(key)
            if known is not None and known[0] == stamp:
                out.append(known[1])
                continue
            digest = sha256_file(path)
            _MEMORY[key] = (stamp, digest)
            out.append(digest)
            hashed += 1
        if hashed:
            _save(cache)
    return out


def combined(parts: Iterable[str]) -> str:
    """One digest of several digests (order matters)."""
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()
