"""MEDIAR adapter with randomly initialised mit_b0 networks on real sample crops (no released weights exist here).

Covers: the state-dict layout against MEDIAR's (recorded under smp 0.3.3, MEDIAR's pin), a checkpoint saved the way
MEDIAR saves one loading strictly and predicting exactly like the network, renamed/reshaped keys rejected with the
keys named, MEDIAR's normalisation and cellpose flow targets against the libraries MEDIAR uses, sliding windows and
flip TTA with exact expected values, mask recovery from ideal flows, the ensemble, and train → predict → load with an
interrupted-and-resumed training equal to an uninterrupted one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from harness.errors import ConfigError, MissingWeightsError
from harness.records import Sample

# mediar_helpers skips the module without smp or cellpose; own_weights_cache is an autouse fixture
from mediar_helpers import (  # noqa: F401
    ENCODER, LAYOUT_SMP033, SMALL, TRAIN_CROP, crop_sample, layout, own_weights_cache, save_like_mediar,
    save_like_mediar_state, signature, train_sample,
)

#: The contract test's tiny settings (tests/adapters/test_contract.py): one optimiser step on one 64-px crop.
CONTRACT = {"params": {"encoder": ENCODER, "window": 64, "overlap": 0.0, "cellprob_threshold": 0.1, "niter": 20},
            "train": {"epochs": 1, "batch_size": 1, "crop_size": 64, "crops_per_epoch": 1, "augment": False,
                      "amp": False}}



# --------------------------------------------------------------------------------------------- schema


def test_registered_with_traits_weights_and_schema() -> None:
    import adapters

    cls = adapters.get("mediar")
    assert (cls.multiclass, cls.needs_label_maps) == (False, True)
    assert [(w.name, w.file) for w in cls.weights] == [("from_phase1", "mediar/from_phase1.pth"),
                                                       ("from_phase2", "mediar/from_phase2.pth")]
    assert "168MtudjTMLoq9YGTyoD2Rjl_d3Gy6c_L" in cls.weights[0].url
    assert "1JJ2-QKTCk-G7sp5ddkqcifMxgnyOrXjx" in cls.weights[1].url
    with pytest.raises(ConfigError, match="unknown key.*decoder_channels.*allowed: .*encoder"):
        cls.build({"decoder_channels": [64]})
    with pytest.raises(ConfigError, match="unknown key.*lr.*allowed: epochs, learning_rate"):
        cls.check_schedule({"lr": 1e-4})
    with pytest.raises(ConfigError, match=r"model 'mediar'.encoder: must be one of 'mit_b0', .*'mit_b5', got 'resnet34'"):
        cls.build({"encoder": "resnet34"})
    with pytest.raises(ConfigError, match=r"model 'mediar'.window: must be >= 32 and multiple of 32, got 500"):
        cls.build({"window": 500})
    with pytest.raises(ConfigError, match=r"model 'mediar'.cellprob_threshold: must be in \(0, 1\), got 0.0"):
        cls.build({"cellprob_threshold": 0.0})
    with pytest.raises(ConfigError, match=r"unknown key.*label_rule"):  # the harness flattens (config label_maps)
        cls.build({"label_rule": "last"})
    with pytest.raises(ConfigError, match="unknown key.*ensemble_with"):  # ensembles are the harness's (load_ensemble)
        cls.build({"ensemble_with": "from_phase1"})
    assert cls.supports_ensemble


def test_missing_weights_name_the_fetch_command() -> None:
    from adapters.mediar import MediarAdapter

    with pytest.raises(MissingWeightsError, match="run `c6bench weights fetch from_phase2`"):
        MediarAdapter(weights="from_phase2")


# --------------------------------------------------------------------------------------------- network + checkpoints


def test_state_dict_layout_is_mediars() -> None:
    from torch import nn

    from adapters._upstream.mediar.network import build_network

    net = build_network(ENCODER)
    count, digest = layout(net.state_dict())
    assert (count, sum(p.numel() for p in net.parameters()), digest) == LAYOUT_SMP033[ENCODER]
    heads = sorted({k.rsplit(".", 1)[0] for k in net.state_dict() if "_head" in k})
    assert heads == ["cellprob_head.0", "cellprob_head.2", "cellprob_head.3",
                     "gradflow_head.0", "gradflow_head.2", "gradflow_head.3"]
    assert net.segmentation_head is None
    assert not any(isinstance(m, nn.ReLU) for m in net.modules())
    # 3 MFAB blocks x 6 activations + 2 plain blocks x 2 (the mit encoder's stride-2 stage is a 0-channel dummy)
    assert sum(isinstance(m, nn.Mish) for m in net.decoder.modules()) == 22
    net.eval()
    import torch

    out = net(torch.zeros(1, 3, 64, 96))
    assert tuple(out.shape) == (1, 3, 64, 96)  # (dY, dX, logit)
    with pytest.raises(RuntimeError, match="divisible by 32"):
        net(torch.zeros(1, 3, 64, 80))


@pytest.mark.slow
def test_mit_b5_layout_is_mediars() -> None:
    """The full MEDIAR-Former: 121.3 M parameters, the key layout of MEDIAR's released checkpoints."""
    from adapters._upstream.mediar.network import build_network

    net = build_network("mit_b5")
    count, digest = layout(net.state_dict())
    assert (count, sum(p.numel() for p in net.parameters()), digest) == LAYOUT_SMP033["mit_b5"]


def test_checkpoint_saved_like_mediar_loads_strictly_and_predicts_like_the_network(
    train_sample: Sample, own_weights_cache: Path
) -> None:
    import torch

    from adapters._upstream.mediar.augment import mediar_normalize
    from adapters._upstream.mediar.network import build_network
    from adapters.mediar import MediarAdapter
    from harness import weights

    net = build_network(ENCODER).eval()
    path = save_like_mediar(net, weights.path_of("from_phase2"))
    adapter = MediarAdapter(weights="from_phase2", encoder=ENCODER, window=64)
    assert adapter.weights_path == path and adapter.init == "pretrained:from_phase2"
    image = train_sample.load_image()[TRAIN_CROP][:64, :64]
    with torch.no_grad():
        direct = net(torch.from_numpy(mediar_normalize(image))[None])[0].numpy()
    # one 64-px window covers the image: the Gaussian weight cancels, the output is the network's own
    np.testing.assert_allclose(adapter.raw_output(image), direct, rtol=1e-5, atol=1e-6)
    loaded = adapter.networks()[0].state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in net.state_dict().items())


def test_renamed_or_reshaped_keys_are_rejected_naming_them(tmp_path: Path) -> None:
    import torch

    from adapters._upstream.mediar.network import build_network, load_strict
    from adapters.mediar import MediarAdapter

    state = build_network(ENCODER).state_dict()
    good = save_like_mediar_state(state, tmp_path / "good.pth")
    adapter = MediarAdapter(weights=str(good), encoder=ENCODER)

    renamed = dict(state)
    renamed["cellprob_head.4.weight"] = renamed.pop("cellprob_head.3.weight")
    bad = save_like_mediar_state(renamed, tmp_path / "renamed.pth")
    with pytest.raises(ConfigError, match=r"renamed.pth: does not match MEDIAR-Former \(mit_b0\): 1 missing key\(s\) "
                                          r"\(cellprob_head.3.weight\); 1 unexpected key\(s\) \(cellprob_head.4.weight\)"):
        adapter.load(bad)
    net = adapter.networks()[0]
    reshaped = dict(state, **{"gradflow_head.3.weight": torch.zeros(3, 32, 3, 3)})
    with pytest.raises(ConfigError, match=r"1 shape mismatch\(es\) \(gradflow_head.3.weight \(3, 32, 3, 3\) != "
                                          r"\(2, 32, 3, 3\)\); was it trained with another encoder"):
        load_strict(net, reshaped, "reshaped")
    with pytest.raises(ConfigError, match="322 missing key.*322 unexpected key.*'module.' prefix"):
        load_strict(net, {f"module.{k}": v for k, v in state.items()}, "prefixed")
    assert adapter.weights_path == good  # nothing was swapped in by a failed load

    with pytest.raises(ConfigError, match="lacks cellprob_head.3.weight"):
        MediarAdapter(weights=str(bad), encoder=ENCODER)  # the cheap checks at construction
    with pytest.raises(ConfigError, match="good.pth: a MEDIAR-Former with a mit_b0 encoder, but params.encoder is "
                                          "mit_b5; set encoder: mit_b0"):
        MediarAdapter(weights=str(good))
    other = save_like_mediar_state(torch.nn.Conv2d(3, 8, 3).state_dict(), tmp_path / "cellpose_net")
    with pytest.raises(ConfigError, match="lacks encoder.patch_embed1.proj.weight.*it has e.g. weight, bias"):
        MediarAdapter(weights=str(other))
    text = tmp_path / "page.pth"
    text.write_text("<html>Google Drive - Virus scan warning</html>")
    with pytest.raises(ConfigError, match="page.pth: not a MEDIAR checkpoint .*HTML page"):
        MediarAdapter(weights=str(text))
    with pytest.raises(ConfigError, match="checkpoint not found"):
        adapter.load(tmp_path / "gone.pth")


# --------------------------------------------------------------------------------------------- adapter end to end


def test_ensemble_averages_two_checkpoints_until_a_single_one_is_loaded(tmp_path: Path, train_sample: Sample) -> None:
    from adapters._upstream.mediar.network import build_network
    from adapters.mediar import MediarAdapter

    first = save_like_mediar(build_network(ENCODER), tmp_path / "a.pth")
    second = save_like_mediar(build_network(ENCODER), tmp_path / "b.pth")
    image = train_sample.load_image()[TRAIN_CROP][:64, :64]
    one = MediarAdapter(weights=str(first), **SMALL).raw_output(image)
    two = MediarAdapter(weights=str(second), **SMALL).raw_output(image)
    both = MediarAdapter(**SMALL)
    both.load_ensemble([first, second])
    assert both.ensemble_paths == [first.resolve(), second.resolve()] and len(both.networks()) == 2
    np.testing.assert_allclose(both.raw_output(image), (one + two) / 2, atol=1e-6)
    with pytest.raises(ConfigError, match="gone.pth: MEDIAR checkpoint not found"):
        both.load_ensemble([first, tmp_path / "gone.pth"])
    assert len(both.networks()) == 2  # a failed load swaps nothing in
    both.load(second)
    assert both.ensemble_paths == []
    np.testing.assert_allclose(both.raw_output(image), two, atol=1e-6)


def test_train_predict_load_and_resume(train_sample: Sample, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """1 step per epoch on a real 128 x 128 crop; an interrupted 2-epoch run resumes to the same weights."""
    import torch

    import adapters
    import adapters.mediar as mediar
    from adapters.torch_base import TorchAdapter

    train = crop_sample(train_sample, TRAIN_CROP, tmp_path / "train" / "a.tif")
    val = crop_sample(train_sample, (slice(500, 564), slice(500, 564)), tmp_path / "val" / "b.tif")
    assert len(train.instances) == 4 and len(val.instances) >= 1  # flattened, as the harness hands them
    params = dict(SMALL, cellprob_threshold=0.2, flow_threshold=0.0, min_size=0)
    schedule = dict(epochs=2, batch_size=2, crop_size=128, crops_per_epoch=2, learning_rate=1e-3)

    whole = adapters.get("mediar").build(params, weights=None, device="cpu")
    assert whole.init == "scratch"
    checkpoint = whole.train([train], [val], tmp_path / "whole", **schedule)
    assert checkpoint == (tmp_path / "whole" / "model.pth").resolve()
    state = torch.load(checkpoint, weights_only=True)
    assert layout(state)[1] == LAYOUT_SMP033[ENCODER][2]  # a plain state dict in MEDIAR's layout
    history = torch.load(tmp_path / "whole" / "last.pt", weights_only=True)["history"]
    assert [h["epoch"] for h in history] == [1, 2] and all(np.isfinite(h["loss"]) and h["val_loss"] > 0
                                                         for h in history)
    image = train.load_image()
    first = whole.predict(image)
    assert first, "with a low threshold the briefly trained network yields instances"
    assert all(inst.category == "cell" and 0.0 < inst.score < 1.0 for inst in first)
    fresh = adapters.get("mediar").build(params, device="cpu")
    fresh.load(checkpoint)
    assert signature(fresh.predict(image)) == signature(first)

    # interrupted right after epoch 1 was saved, then continued from last.pt (same configuration only)
    real_save = TorchAdapter.save

    def stop_after_first_save(obj: object, path: Path) -> Path:
        real_save(obj, path)
        raise KeyboardInterrupt

    interrupted = tmp_path / "interrupted"
    monkeypatch.setattr(mediar.MediarAdapter, "save", staticmethod(stop_after_first_save))
    with pytest.raises(KeyboardInterrupt):
        adapters.get("mediar").build(params).train([train], [val], interrupted, **schedule)
    monkeypatch.setattr(mediar.MediarAdapter, "save", staticmethod(real_save))
    assert torch.load(interrupted / "last.pt", weights_only=True)["epoch"] == 1
    with pytest.raises(ConfigError, match=r"another configuration \(differs in learning_rate\)"):
        adapters.get("mediar").build(params).train([train], [val], interrupted, **dict(schedule, learning_rate=1e-4))
    resumed = adapters.get("mediar").build(params).train([train], [val], interrupted, **schedule)
    again = torch.load(resumed, weights_only=True)
    assert all(torch.equal(again[k], v) for k, v in state.items()), "resumed training differs from uninterrupted"


def test_versions() -> None:
    from adapters.mediar import MediarAdapter

    versions = MediarAdapter(encoder=ENCODER).versions()
    assert versions["segmentation-models-pytorch"] == "0.6.0" and versions["cellpose"] == "3.1.1.3"


def test_model_config_matches_the_adapter(sample_dir: Path) -> None:
    """configs/models/mediar.yaml: every profile's params and schedule are accepted; weight names are known."""
    import yaml

    import adapters
    from adapters.base import check_keys

    config = yaml.safe_load((sample_dir.parents[1] / "configs" / "models" / "mediar.yaml").read_text())
    cls = adapters.get(config["model"])
    known = {spec.name for spec in cls.weights}
    # MEDIAR's challenge setting and the study's recipe: both released models, ensembled
    assert config["zero_shot"]["weights"] == config["finetune"]["init"] == ["from_phase1", "from_phase2"]
    assert set(config["zero_shot"]["weights"]) <= known and config["finetune"]["ensemble"] is True
    for name, profile in config["profiles"].items():
        check_keys(cls.__init__, {**config["params"], **profile["params"]}, name)
        cls.check_schedule(profile["train"])
    paper, quick = config["profiles"]["paper"], config["profiles"]["quick"]
    assert (paper["params"]["encoder"], paper["params"]["tta"], paper["train"]["epochs"]) == ("mit_b5", True, 100)
    assert (quick["params"]["encoder"], quick["params"]["scale"]) == ("mit_b0", 0.5)
