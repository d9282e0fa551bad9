"""harness.cache: derived arrays stored under a digest of their inputs, read back exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from harness import cache


@pytest.fixture(autouse=True)
def empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("C6BENCH_WEIGHTS", str(tmp_path))
    return tmp_path / "derived"


def test_miss_then_hit_returns_the_same_array(empty_cache: Path) -> None:
    calls = []
    value = np.arange(12, dtype=np.uint16).reshape(3, 4)

    def compute() -> np.ndarray:
        calls.append(1)
        return value

    key = {"image": cache.array_digest(value), "version": 1}
    first = cache.cached_array("demo", key, compute)
    second = cache.cached_array("demo", key, compute)
    assert len(calls) == 1 and second.dtype == np.uint16 and np.array_equal(first, second)
    assert len(list(empty_cache.glob("demo/*/*.npz"))) == 1
    cache.cached_array("demo", {**key, "version": 2}, compute)  # a new code version is a new entry
    assert len(calls) == 2


def test_array_digest_covers_dtype_shape_and_bytes() -> None:
    a = np.zeros((2, 3), np.uint8)
    assert cache.array_digest(a) == cache.array_digest(a.copy())
    assert len({cache.array_digest(x) for x in (a, a.reshape(3, 2), a.astype(np.int8), a + 1)}) == 4


def test_unreadable_entry_is_recomputed(empty_cache: Path) -> None:
    key = {"v": 1}
    cache.cached_array("demo", key, lambda: np.ones(3))
    (path,) = empty_cache.glob("demo/*/*.npz")
    path.write_bytes(b"not a zip")
    assert np.array_equal(cache.cached_array("demo", key, lambda: np.full(3, 7.0)), np.full(3, 7.0))
    assert np.array_equal(cache.cached_array("demo", key, lambda: np.zeros(3)), np.full(3, 7.0))
