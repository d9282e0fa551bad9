"""Model configs are validated against the adapter's constructor and train signature before any work."""

from __future__ import annotations

import pytest

import adapters
from harness.config import config_path, load_model_config
from harness.errors import ConfigError


@pytest.mark.parametrize("model", adapters.names())
@pytest.mark.parametrize("profile", ["quick", "paper"])
def test_every_shipped_config_validates(model: str, profile: str) -> None:
    cfg = load_model_config(model, profile)
    assert cfg.model == model and cfg.profile == profile
    assert config_path(model).is_file()


def _write(tmp_path, text: str):
    path = tmp_path / "m.yaml"
    path.write_text(text)
    return path


def test_unknown_param_fails_naming_allowed(tmp_path) -> None:
    path = _write(tmp_path, "model: classical\nparams: {sigmaa: 1}\nprofiles: {quick: {}}\n")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) sigmaa; allowed: .*sigma"):
        load_model_config("classical", "quick", path)


def test_unknown_train_key_and_profile_fail(tmp_path) -> None:
    path = _write(tmp_path, "model: classical\nprofiles: {quick: {train: {epochs: 3}}}\n")
    with pytest.raises(ConfigError, match=r"training schedule of model 'classical': unknown key\(s\) epochs"):
        load_model_config("classical", "quick", path)
    path = _write(tmp_path, "model: classical\nprofiles: {quick: {}}\n")
    with pytest.raises(ConfigError, match=r"unknown profile 'paper'; available: quick"):
        load_model_config("classical", "paper", path)


def test_zero_shot_resolution_per_target() -> None:
    cp = load_model_config("cellpose", "quick")
    assert cp.zero_shot_for("soma") == (("nuclei",), None) and cp.zero_shot_for("cells") == (("cyto3",), None)
    yolo = load_model_config("yolo11", "quick")
    weights, reason = yolo.zero_shot_for("all")
    assert weights == () and "not a cell model" in reason
    assert load_model_config("classical", "quick").zero_shot_for("cells") == ((), None)
