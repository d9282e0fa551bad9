"""Values checked before any stage: annotation types, adapter limits, strict YAML, the bench request."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import adapters
from harness.checks import check_limit, check_values, describe, matches, validate_limits
from harness.errors import ConfigError
from harness.io import read_yaml
from harness.run import BenchSpec, Runner


def test_types_from_annotations() -> None:
    assert matches(3, int) and not matches(True, int) and not matches("3", int)
    assert matches(3, float) and matches(2.5, float) and not matches(float("nan"), float)
    assert matches(None, float | None) and not matches("x", float | None)
    assert (
        matches([0.5, 1], list[float])
        and not matches([0.5, "a"], list[float])
        and not matches("ab", list[str])
    )
    assert describe(float | None) == "a number or null"
    assert describe(list[int]) == "a list of integers"


def test_limit_clauses() -> None:
    assert check_limit(-1, "> 0") == "must be > 0"
    assert check_limit(0.0, "in [0, 1)") is None and check_limit(1.0, "in [0, 1)") == "must be in [0, 1)"
    assert check_limit(48, ">= 16 and multiple of 16") is None
    assert check_limit(60, ">= 16 and multiple of 16") == "must be >= 16 and multiple of 16"
    assert check_limit([], "non-empty and > 0") == "must not be empty"
    assert check_limit([0.5, -1.0], "non-empty and > 0") == "every value must be > 0; [-1.0] are not"
    assert (
        check_limit("first", ("last", "first")) is None
        and check_limit("x", ("last",)) == "must be one of 'last'"
    )
    assert check_limit(None, "> 0") is None
    with pytest.raises(ValueError, match="not understood"):
        validate_limits({"x": "positive"})


@pytest.mark.parametrize("name", adapters.names())
def test_every_adapter_declares_readable_limits_for_real_parameters(name: str) -> None:
    from harness.checks import annotations_of

    cls = adapters.get(name)
    validate_limits(cls.limits)
    known = set(annotations_of(cls.__init__)) | set(annotations_of(cls.train, 4))
    assert set(cls.limits) <= known, set(cls.limits) - known
    assert cls.predict_params <= set(annotations_of(cls.__init__)) - {"weights", "device"}


def test_check_values_names_the_place() -> None:
    cls = adapters.get("classical")
    with pytest.raises(ConfigError, match=r"^cfg.yaml: params.sigma: expected a number, got 'x' \(str\)$"):
        check_values(cls.__init__, {"sigma": "x"}, cls.limits, {"sigma": "cfg.yaml: params.sigma"})
    with pytest.raises(ConfigError, match=r"^model 'classical'.min_distance: must be >= 1, got 0$"):
        cls.check_params({"min_distance": 0})


def test_duplicate_yaml_keys_are_refused_at_any_depth(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("a: 1\nb:\n  c: 2\n  d: 3\n  c: 4\n")
    with pytest.raises(ConfigError, match=r"c.yaml: key 'c' is given twice \(lines 3 and 5\)"):
        read_yaml(path)
    path.write_text("\ufeffa: {x: 1, x: 2}\n")  # flow style, one line, after a byte-order mark
    with pytest.raises(ConfigError, match=r"key 'x' is given twice \(line 1\)"):
        read_yaml(path)
    path.write_text("base: &b {x: 1}\nderived:\n  <<: *b\n  y: 2\n")  # merge keys are not duplicates
    assert read_yaml(path) == {"base": {"x": 1}, "derived": {"x": 1, "y": 2}}


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("modes", [], "--modes: give at least one value"),
        ("modes", ["finetuned", "finetuned"], "--modes: 'finetuned' is given twice"),
        ("targets", [], "--targets: give at least one value"),
        ("seed", -2, "--seed: expected an integer >= 0, got -2"),
        ("bootstrap", 1.5, "--bootstrap: expected an integer >= 0, got 1.5"),
        ("threads", 0, "--threads: expected an integer >= 1, got 0"),
        ("model", "", "--model: expected a non-empty name"),
    ],
)
def test_bench_spec_values(field: str, value: object, message: str, tmp_path: Path) -> None:
    spec = BenchSpec(model="classical", data="sample", out=tmp_path / "r", device="cpu")
    setattr(spec, field, value)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Runner(spec)


def test_bad_config_value_stops_the_bench_before_any_file_is_written(
    tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    config = tmp_path / "classical.yaml"
    config.write_text(
        "model: classical\nprofiles:\n  quick:\n    train: {threshold_scales: [], min_distances: [20]}\n"
    )
    out = tmp_path / "run"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness",
            "bench",
            "--model",
            "classical",
            "--data",
            "sample",
            "--config",
            str(config),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=subprocess_env,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: {config}: profiles.quick.train.threshold_scales: must not be empty, got []"
    )
    assert "Traceback" not in proc.stderr and not out.exists()  # no plan, no stage, no folder


def test_shipped_configs_pass_every_check() -> None:
    from harness.config import load_model_config

    for name in adapters.names():
        for profile in ("quick", "paper"):
            cfg = load_model_config(name, profile)
            assert json.loads(json.dumps(cfg.params)) == cfg.params
