"""The adapter contract, checked for EVERY registered adapter, and for the sixth adapter written from the docs alone.

Cheap checks (class attributes, schema, weights table, config, own test file) and a real round trip: random init,
a one-step ``train`` on a tiny synthetic image, ``predict``, then a fresh adapter that ``load``s the checkpoint and
predicts exactly the same instances. Each model's tiny settings are ``CONTRACT = {"params": ..., "train": ...}`` in
its ``tests/adapters/test_<module>.py`` (else its config's ``quick`` profile). The sixth adapter is
``tests/fixtures/adapters/maskrcnn_tiny.py`` (a torchvision Mask R-CNN, random init): registered for these tests only.
"""

from __future__ import annotations

import importlib.util
import inspect
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile

import adapters
from adapters.base import Adapter
from harness.config import load_model_config
from harness.errors import ConfigError
from harness.flatten import flatten
from harness.records import Instance, Sample

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "adapters"
SIZE = 128


def _fixture_adapters() -> dict[str, type[Adapter]]:
    """The adapters under tests/fixtures/adapters, imported without leaving them in the registry."""
    adapters.discover()
    shipped = dict(adapters._REGISTRY)
    found: dict[str, type[Adapter]] = {}
    try:
        for path in sorted(FIXTURES.glob("*.py")):
            spec = importlib.util.spec_from_file_location(f"c6bench_fixture_adapters.{path.stem}", path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = module
            spec.loader.exec_module(module)
        found = {n: c for n, c in adapters._REGISTRY.items() if n not in shipped}
    finally:
        adapters._REGISTRY.clear()
        adapters._REGISTRY.update(shipped)
    return found


FIXTURE_ADAPTERS = _fixture_adapters()


def _cases() -> list[Any]:
    out = []
    for name in [*adapters.names(), *FIXTURE_ADAPTERS]:
        cls = FIXTURE_ADAPTERS.get(name) or adapters.get(name)
        marks = [pytest.mark.env(name)] if cls.requirements else []  # runs under the model's own environment
        out.append(pytest.param(name, marks=marks, id=name))
    return out


@pytest.fixture
def registered(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> type[Adapter]:
    """The adapter class of the case; a fixture adapter is in the registry for this test only."""
    name = request.param
    if name in FIXTURE_ADAPTERS:
        monkeypatch.setitem(adapters._REGISTRY, name, FIXTURE_ADAPTERS[name])
    return adapters.get(name)


def _config_path(name: str) -> Path:
    return FIXTURES / f"{name}.yaml" if name in FIXTURE_ADAPTERS else REPO / "configs" / "models" / f"{name}.yaml"


def _tiny(cls: type[Adapter]) -> dict[str, Any]:
    """The model's ``CONTRACT`` from its own test module, else its config's quick profile."""
    test_file = REPO / "tests" / "adapters" / f"test_{Path(inspect.getfile(cls)).stem}.py"
    if test_file.is_file():
        spec = importlib.util.spec_from_file_location(f"c6bench_contract.{test_file.stem}", test_file)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        if hasattr(module, "CONTRACT"):
            return {"params": {}, "train": {}, **module.CONTRACT}
    quick = load_model_config(cls.name, "quick", _config_path(cls.name))
    return {"params": quick.params, "train": quick.train}


@pytest.mark.parametrize("registered", _cases(), indirect=True)
def test_registered_adapter_declares_the_contract(registered: type[Adapter]) -> None:
    cls, name = registered, registered.name
    assert issubclass(cls, Adapter) and cls is adapters.get(name)
    assert cls.description and isinstance(cls.multiclass, bool) and isinstance(cls.needs_label_maps, bool)
    assert not inspect.isabstract(cls)
    init = list(inspect.signature(cls.__init__).parameters)
    assert init[1:3] == ["weights", "device"]
    with pytest.raises(ConfigError, match=r"unknown key\(s\) no_such_option; allowed: "):
        cls.build({"no_such_option": 1}, weights=None, device="cpu")
    assert set(cls.predict_params) <= set(init[3:])
    for spec in cls.weights:
        assert spec.name and spec.file and spec.url.startswith("https://") and spec.licence
        assert spec.sha256 is None or 8 <= len(spec.sha256) <= 64  # torchvision publishes an 8-hex prefix
    for profile in ("quick",):  # `paper` only where the paper has a row for the model (test_config)
        assert load_model_config(name, profile, _config_path(name)).model == name
    if name not in FIXTURE_ADAPTERS:
        module = Path(inspect.getfile(cls)).stem
        assert module == name, "registry name = module = config = test"
        assert (REPO / "tests" / "adapters" / f"test_{module}.py").is_file(), "every adapter has its own tests"


def _texture_image(path: Path) -> tuple[np.ndarray, list[Instance]]:
    """A 128 x 128 8-bit image: smooth background, four textured disks (two of them overlapping), as instances."""
    rng = np.random.default_rng(0)
    image = (100 + rng.normal(0, 2, (SIZE, SIZE))).astype(np.float32)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    instances = []
    for k, (cy, cx, r) in enumerate(((32, 32, 14), (36, 88, 16), (90, 40, 15), (96, 60, 12))):
        disk = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        image[disk] = 60 + rng.normal(0, 40, int(disk.sum()))
        y0, x0 = cy - r, cx - r
        instances.append(Instance.from_mask("cells", y0, x0, disk[y0 : cy + r + 1, x0 : cx + r + 1], SIZE, SIZE,
                                            order=k))
    pixels = np.clip(image, 0, 255).astype(np.uint8)
    tifffile.imwrite(path, pixels)
    return pixels, instances


def _signature(instances: list[Instance]) -> list[tuple[Any, ...]]:
    return [(i.category, i.bbox, i.score, i.order, i.crop.tobytes()) for i in instances]


def _check_instances(instances: Any, height: int, width: int, classes: set[str] | None) -> None:
    """Exact types and geometry of a prediction: a list of Instances, crops inside the image, orders 0..n-1."""
    assert isinstance(instances, list) and all(isinstance(i, Instance) for i in instances)
    assert [i.order for i in instances] == list(range(len(instances)))
    for inst in instances:
        y0, x0, y1, x1 = inst.bbox
        assert (inst.height, inst.width) == (height, width)
        assert 0 <= y0 < y1 <= height and 0 <= x0 < x1 <= width
        assert inst.crop.dtype == bool and inst.crop.shape == (y1 - y0, x1 - x0)
        assert inst.area == int(inst.crop.sum()) >= 1
        assert inst.score is None or (isinstance(inst.score, float) and math.isfinite(inst.score))
        assert isinstance(inst.category, str) and inst.category
        if classes is not None:
            assert inst.category in classes


@pytest.mark.parametrize("registered", _cases(), indirect=True)
def test_one_step_train_predict_save_load(registered: type[Adapter], tmp_path: Path) -> None:
    """Random init → 1-step train → predict → a fresh adapter loads the checkpoint and predicts the same."""
    cls = registered
    tiny = _tiny(cls)
    image, instances = _texture_image(tmp_path / "a.tif")
    sample = Sample(tmp_path / "a.tif", SIZE, SIZE, tuple(instances), image_id=1, file_name="a.tif")
    train = [sample]
    if cls.needs_label_maps:  # what the harness hands such a model: its overlaps flattened (rule last)
        train = flatten(train, "last", 10, "contract")
        assert [len(s.instances) for s in train] == [4]
    adapter = cls.build(tiny["params"], weights=None, device="cpu", seed=3)
    assert adapter.seed == 3
    checkpoint = adapter.train(train, train, tmp_path / "run", **tiny["train"])
    assert isinstance(checkpoint, Path) and checkpoint.exists()
    assert checkpoint.resolve().is_relative_to((tmp_path / "run").resolve())
    predicted = adapter.predict(image)
    _check_instances(predicted, SIZE, SIZE, {"cells"} if cls.multiclass else None)

    fresh = cls.build(tiny["params"], weights=None, device="cpu")
    fresh.load(checkpoint)
    assert _signature(fresh.predict(image)) == _signature(predicted)
    versions = adapter.versions()
    assert set(cls.packages) <= set(versions) and all(isinstance(v, str) and v for v in versions.values())


def test_the_fixture_adapter_is_registered_for_the_tests_only() -> None:
    assert set(FIXTURE_ADAPTERS) == {"maskrcnn_tiny"} and "maskrcnn_tiny" not in adapters.names()
    assert not (REPO / "configs" / "models" / "maskrcnn_tiny.yaml").exists()


def test_unknown_model_suggests_names() -> None:
    with pytest.raises(ConfigError, match=r"unknown model 'cellpos'. Did you mean cellpose, cellpose_sam, cellseg1\? "
                                         r"Available: cellpose, cellpose_sam, cellseg1, classical"):
        adapters.get("cellpos")


def test_duplicate_registration_is_an_error() -> None:
    with pytest.raises(ValueError, match="registered twice"):
        adapters.register("classical")(type("Other", (adapters.get("classical"),), {}))
