"""The adapter contract, checked for every registered adapter.

Cheap checks run over all adapters; the full random-init train → predict → save/load round trip of each
learned model lives in its own ``tests/adapters/test_<model>.py`` (tiny configs, 1–2 steps), and runs here
for the classical baseline.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest

import adapters
from adapters.base import Adapter
from harness.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", adapters.names())
def test_registered_adapter_honours_the_contract(name: str) -> None:
    cls = adapters.get(name)
    assert issubclass(cls, Adapter) and cls.name == name
    assert cls.description and isinstance(cls.multiclass, bool) and isinstance(cls.needs_label_maps, bool)
    assert not inspect.isabstract(cls)
    init = inspect.signature(cls.__init__).parameters
    assert "weights" in init and "device" in init
    with pytest.raises(ConfigError, match=r"unknown key\(s\) no_such_option; allowed: "):
        cls.build({"no_such_option": 1}, weights=None, device="cpu")
    for spec in cls.weights:
        assert spec.name and spec.file and spec.url.startswith("https://") and spec.licence
        assert spec.sha256 is None or len(spec.sha256) == 64
    assert (REPO / "configs" / "models" / f"{name}.yaml").is_file()
    module_file = Path(inspect.getfile(cls)).stem
    assert (REPO / "tests" / "adapters" / f"test_{module_file}.py").is_file(), "every adapter has its own tests"


def test_unknown_model_suggests_names() -> None:
    with pytest.raises(ConfigError, match=r"unknown model 'cellpos'. Did you mean cellpose, cellpose_sam, cellseg1\? "
                                         r"Available: cellpose, cellpose_sam, cellseg1, classical"):
        adapters.get("cellpos")


def test_duplicate_registration_is_an_error() -> None:
    with pytest.raises(ValueError, match="registered twice"):
        adapters.register("classical")(type("Other", (adapters.get("classical"),), {}))
