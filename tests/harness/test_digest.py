"""`harness.digest`: sha256 of files remembered by size/mtime/inode, never for a file modified seconds ago."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from harness import digest


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[Path]:
    monkeypatch.setenv("C6BENCH_WEIGHTS", str(tmp_path / "cache"))
    monkeypatch.setattr(digest, "_MEMORY", {})
    monkeypatch.setattr(digest, "_LOADED", set())
    calls: list[Path] = []
    real = digest.hash_file
    monkeypatch.setattr(digest, "hash_file", lambda p, *a: calls.append(Path(p)) or real(p, *a))
    return calls


def _old(path: Path, text: str) -> Path:
    path.write_text(text)
    past = time.time() - 3600
    os.utime(path, (past, past))
    return path


def test_settled_files_are_hashed_once_and_edits_are_seen(tmp_path: Path, counted: list[Path]) -> None:
    path = _old(tmp_path / "a.txt", "one")
    assert digest.file_digest(path) == hashlib.sha256(b"one").hexdigest()
    assert digest.file_digest(path) == hashlib.sha256(b"one").hexdigest() and len(counted) == 1
    digest._MEMORY.clear()
    digest._LOADED.clear()  # a new process: read back from the cache file
    assert digest.file_digest(path) == hashlib.sha256(b"one").hexdigest() and len(counted) == 1
    _old(path, "two")  # same size, other mtime
    assert digest.file_digest(path) == hashlib.sha256(b"two").hexdigest() and len(counted) == 2


def test_a_file_modified_just_now_is_never_remembered(tmp_path: Path, counted: list[Path]) -> None:
    path = tmp_path / "b.txt"
    path.write_text("one")
    digest.file_digest(path)
    path.write_text("two")  # within the file system's timestamp granularity: size and mtime may not change
    assert digest.file_digest(path) == hashlib.sha256(b"two").hexdigest() and len(counted) == 2


def test_derived_values_follow_the_file(tmp_path: Path, counted: list[Path]) -> None:
    path = _old(tmp_path / "c.json", '{"images": []}')
    seen: list[int] = []

    def size(p: Path) -> int:
        seen.append(1)
        return p.stat().st_size

    assert digest.derived(path, "size", size) == 14 and digest.derived(path, "size", size) == 14
    assert len(seen) == 1
    _old(path, '{"images": [1]}')
    assert digest.derived(path, "size", size) == 15 and len(seen) == 2
