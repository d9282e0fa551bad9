"""Classical baseline on a real sample crop: train (grid search), predict, save/load round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import adapters
from harness.dataset import load_split, resolve_data, select
from harness.errors import ConfigError
from harness.records import Instance

#: The contract test's tiny settings (tests/adapters/test_contract.py): a one-point grid.
CONTRACT = {"params": {"min_size": 50}, "train": {"threshold_scales": [1.0], "min_distances": [10]}}


def _crop_sample(sample, y0=200, x0=200, size=256):
    """The sample restricted to a window: its image crop and the instances fully inside it."""
    image = sample.load_image()[y0 : y0 + size, x0 : x0 + size]
    inside = [
        Instance.from_mask(i.category, i.bbox[0] - y0, i.bbox[1] - x0, i.crop, size, size)
        for i in sample.instances
        if i.bbox[0] >= y0 and i.bbox[1] >= x0 and i.bbox[2] <= y0 + size and i.bbox[3] <= x0 + size
    ]
    return image, inside


def test_train_predict_round_trip(tmp_path: Path) -> None:
    cfg = resolve_data("sample")
    train = select(load_split(cfg, "spec/train"), ["cell"], "cells")[:1]
    image = train[0].load_image()
    adapter = adapters.get("classical").build({}, weights=None, device="cpu")
    ckpt = adapter.train(train, [], tmp_path, threshold_scales=[0.9], min_distances=[20, 45])
    assert adapter.params["min_distance"] in (20, 45) and adapter.params["threshold_scale"] == 0.9
    first = adapter.predict(image)
    fresh = adapters.get("classical").build({}, weights=None, device="cpu")
    fresh.load(ckpt)
    again = fresh.predict(image)
    assert len(first) == len(again) > 10
    assert [i.bbox for i in first] == [i.bbox for i in again]
    assert all(np.array_equal(a.crop, b.crop) for a, b in zip(first, again, strict=True))
    assert all(i.area >= 300 and i.height == 1022 and i.width == 1024 for i in first)


def test_rejects_weights_and_foreign_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="has no weights"):
        adapters.get("classical")(weights="cyto3")
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"\x80\x02not json")
    with pytest.raises(ConfigError, match="not a classical-adapter checkpoint"):
        adapters.get("classical")().load(bad)


def test_predict_on_small_crop_gives_instances_inside_the_image() -> None:
    sample = select(load_split(resolve_data("sample"), "spec/test"), ["cell"], "cells")[0]
    image, _ = _crop_sample(sample)
    out = adapters.get("classical")().predict(image)
    assert out and all(0 <= i.bbox[0] < i.bbox[2] <= 256 and 0 <= i.bbox[1] < i.bbox[3] <= 256 for i in out)


def test_grid_shares_work_and_the_cache_serves_other_targets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 2 x 3 grid computes the texture once, the foreground once per scale and the watershed once per setting;
    a second target's search on the same image (and a zero-shot predict) segments nothing again."""
    from adapters import _classical

    monkeypatch.setenv("C6BENCH_WEIGHTS", str(tmp_path / "cache"))  # an empty derived-data cache
    cfg = resolve_data("sample")
    train = select(load_split(cfg, "spec/train"), ["cell"], "cells")[:1]
    calls = {"texture": 0, "foreground": 0, "watershed": 0}
    for name in calls:
        real = getattr(_classical, name)

        def counted(*args, _real=real, _name=name):
            calls[_name] += 1
            return _real(*args)

        monkeypatch.setattr(_classical, name, counted)
    grid = {"threshold_scales": [0.8, 0.9], "min_distances": [20, 30, 45]}
    first = adapters.get("classical")()
    first.train(train, [], tmp_path / "a", **grid)
    assert calls == {"texture": 1, "foreground": 2, "watershed": 6}
    other = adapters.get("classical")()
    other.train([s.with_instances(i.with_category("soma") for i in s.instances) for s in train], [],
                tmp_path / "b", **grid)
    adapters.get("classical")().predict(train[0].load_image())  # default params (1.0, 30): not in the grid
    assert calls == {"texture": 2, "foreground": 3, "watershed": 7}
    assert (tmp_path / "a" / "classical.json").read_text() == (tmp_path / "b" / "classical.json").read_text()


def test_versions_come_from_the_base_class_packages() -> None:
    import skimage

    assert adapters.get("classical")().versions() == {"scikit-image": skimage.__version__}
    assert adapters.get("classical")().init == "none (no weights)"
