"""Model configs are validated against the adapter's constructor and train signature before any work."""

from __future__ import annotations

import pytest

import adapters
from harness.config import config_path, load_model_config, profiles_of
from harness.errors import ConfigError

#: The models with a row in the Glioma C6 paper: their configs carry its schedules as the `paper` profile.
PAPER_ROWS = ("cellpose", "cellseg1", "mediar", "yolo11")


@pytest.mark.parametrize(("model", "profile"), [(m, p) for m in adapters.names() for p in profiles_of(m)])
def test_every_shipped_config_validates(model: str, profile: str) -> None:
    cfg = load_model_config(model, profile)
    assert cfg.model == model and cfg.profile == profile
    assert config_path(model).is_file()


def test_quick_for_every_model_and_paper_only_where_the_paper_has_a_row(tmp_path) -> None:
    """Shipped configs need `quick` (tests and `make bench` run it); `paper` exists where the paper has a row. A
    user's own --config may hold any profile: one with only `paper` runs `--profile paper`."""
    assert all("quick" in profiles_of(m) for m in adapters.names())
    assert all("paper" in profiles_of(m) for m in PAPER_ROWS)
    only_quick = _write(tmp_path, "model: classical\nprofiles: {quick: {}}\n")
    assert profiles_of("classical", only_quick) == ("quick",)
    assert load_model_config("classical", "quick", only_quick).profile == "quick"
    only_paper = _write(tmp_path, "model: classical\nprofiles: {paper: {}}\n")
    assert load_model_config("classical", "paper", only_paper).profile == "paper"


def test_the_template_explains_every_key_and_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    """configs/models/_template.yaml holds every key harness/config.py reads, and is itself a valid config."""
    import yaml

    from adapters.base import Adapter
    from harness import config

    template = config_path("_template")
    raw = yaml.safe_load(template.read_text())
    assert set(raw) == config._TOP
    assert set(raw["zero_shot"]) == config._ZERO_SHOT and set(raw["finetune"]) == config._FINETUNE
    assert set(raw["evaluate"]) == config._EVALUATE and set(raw["label_maps"]) == config._LABEL_MAPS
    assert set(raw["profiles"]) == {"quick", "paper"}
    text = template.read_text()
    assert all(f"{key}:" in text for key in config._PROFILE)  # each profile key is named in the explanation

    class Template(Adapter):  # what the template's params and train describe
        description, needs_label_maps = "the template's model", True

        def __init__(self, weights: str | None = None, device: str = "cpu", threshold: float = 0.5) -> None:
            super().__init__(weights=weights, device=device)

        def train(self, train_samples, val_samples, out_dir, *, epochs: int = 1):  # noqa: ANN001, ANN201
            raise NotImplementedError

        load = predict = train

    monkeypatch.setitem(adapters._REGISTRY, "template", Template)
    Template.name = "template"
    for profile in ("quick", "paper"):
        cfg = load_model_config("template", profile, template)
        assert (cfg.label_rule, cfg.min_pixels, cfg.params) == ("last", 10, {"threshold": 0.5})


def test_label_maps_are_read_only_for_models_that_train_on_them(tmp_path) -> None:
    cfg = load_model_config("mediar", "quick")
    assert (cfg.label_rule, cfg.min_pixels) == ("last", 10)
    smallest = _write(tmp_path, "model: mediar\nlabel_maps: {rule: first}\n"
                                "profiles: {quick: {label_maps: {rule: smallest, min_pixels: 4}}}\n")
    resolved = load_model_config("mediar", "quick", smallest)  # the profile's keys over the top level's
    assert (resolved.label_rule, resolved.min_pixels) == ("smallest", 4)
    bad = _write(tmp_path, "model: mediar\nlabel_maps: {rule: largest}\nprofiles: {quick: {}}\n")
    with pytest.raises(ConfigError, match=r"m.yaml: label_maps.rule must be one of last, first, smallest, got 'largest'"):
        load_model_config("mediar", "quick", bad)
    yolo = _write(tmp_path, "model: yolo11\nlabel_maps: {rule: last}\nprofiles: {quick: {}}\n")
    with pytest.raises(ConfigError, match=r"m.yaml: label_maps is read only for models that train on label maps "
                                          r"\(needs_label_maps\); model 'yolo11' trains on the overlapping instances"):
        load_model_config("yolo11", "quick", yolo)


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


def test_weights_lists_are_ensembles_only_where_the_adapter_can_ensemble(tmp_path) -> None:
    """A list of weights is an ensemble: MEDIAR can (load_ensemble), cellpose cannot — refused before any work."""
    path = _write(tmp_path, "model: cellpose\nfinetune: {init: [cyto3, nuclei]}\nprofiles: {quick: {}}\n")
    with pytest.raises(ConfigError, match=r"m.yaml: finetune lists 2 weights \(an ensemble\), but model 'cellpose' "
                                          r"cannot predict with an ensemble; list one, or set finetune.ensemble: false"):
        load_model_config("cellpose", "quick", path)
    path = _write(tmp_path, "model: cellpose\nfinetune: {init: [cyto3, nuclei], ensemble: false}\n"
                            "zero_shot: {weights: {cells: [cyto3]}}\nprofiles: {quick: {}}\n")
    single = load_model_config("cellpose", "quick", path)
    assert single.finetune_members() == ("cyto3",) and single.zero_shot_for("cells") == (("cyto3",), None)
    mediar = load_model_config("mediar", "paper")
    assert mediar.finetune_members() == ("from_phase1", "from_phase2")
    assert mediar.zero_shot_for("cells") == (("from_phase1", "from_phase2"), None)
    assert load_model_config("mediar", "quick").finetune_members() == (None,)  # one model from random init
    for bad, message in (("finetune: {init: []}", "finetune.init must list distinct weights names, got \\[\\]"),
                         ("finetune: {init: [a, a]}", "finetune.init must list distinct"),
                         ("finetune: {ensemble: 'yes'}", "finetune.ensemble must be true or false, got 'yes'"),
                         ("zero_shot: {weights: {cells: null}}", "every target needs a weights name or list"),
                         ("zero_shot: {weights: 3}", "zero_shot.weights must be a weights name, a list of names")):
        path = _write(tmp_path, f"model: mediar\n{bad}\nprofiles: {{quick: {{}}}}\n")
        with pytest.raises(ConfigError, match=message):
            load_model_config("mediar", "quick", path)
    with pytest.raises(ConfigError, match="model 'classical' cannot predict with an ensemble of 2 checkpoints"):
        adapters.get("classical").build({}).load_ensemble([tmp_path / "a", tmp_path / "b"])


def test_zero_shot_params_are_validated_and_merged(tmp_path) -> None:
    """zero_shot.params override params for zero-shot rows only; keys are checked against the constructor."""
    path = _write(tmp_path, "model: classical\nparams: {sigma: 1}\nzero_shot: {params: {sigma: 2}}\n"
                            "profiles: {quick: {zero_shot: {params: {min_size: 7}}}}\n")
    cfg = load_model_config("classical", "quick", path)
    assert cfg.params == {"sigma": 1} and cfg.zero_shot_params == {"sigma": 2, "min_size": 7}
    assert cfg.to_dict()["zero_shot"]["params"] == {"sigma": 2, "min_size": 7}
    path = _write(tmp_path, "model: classical\nzero_shot: {params: {sigmaa: 2}}\nprofiles: {quick: {}}\n")
    with pytest.raises(ConfigError, match=r"m.yaml: zero_shot.params of model 'classical': unknown key\(s\) sigmaa"):
        load_model_config("classical", "quick", path)
    path = _write(tmp_path, "model: classical\nzero_shot: {params: {weights: x}}\nprofiles: {quick: {}}\n")
    with pytest.raises(ConfigError, match="zero_shot.params must not set weights"):
        load_model_config("classical", "quick", path)
