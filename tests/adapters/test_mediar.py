"""MEDIAR adapter with randomly initialised mit_b0 networks on real sample crops (no released weights exist here).

Covers: the state-dict layout against MEDIAR's (recorded under smp 0.3.3, MEDIAR's pin), a checkpoint saved the way
MEDIAR saves one loading strictly and predicting exactly like the network, renamed/reshaped keys rejected with the
keys named, MEDIAR's normalisation and cellpose flow targets against the libraries MEDIAR uses, sliding windows and
flip TTA with exact expected values, mask recovery from ideal flows, the ensemble, and train → predict → load with an
interrupted-and-resumed training equal to an uninterrupted one.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from harness.coco import load_coco
from harness.errors import ConfigError, MissingWeightsError
from harness.flatten import flatten
from harness.records import Instance, Sample

pytest.importorskip("segmentation_models_pytorch")
pytest.importorskip("cellpose")

ENCODER = "mit_b0"
# sha256 of "key:shape" lines (state-dict order) of MEDIAR's MEDIARFormer built with segmentation-models-pytorch 0.3.3
# (the version MEDIAR pins; installed aside for the purpose) — the layout of MEDIAR's released checkpoints (mit_b5).
LAYOUT_SMP033 = {
    "mit_b0": (322, 33_824_163, "ab515a2001814d3a568be021e8604bcde797a9f6722515577ea56d9edd10988b"),
    "mit_b5": (1198, 121_303_587, "b7cfcad77b9757aaad1e99e9073a67572c143218cae88510b34ba3a8fc7f140d"),
}
TRAIN_CROP = (slice(200, 328), slice(300, 428))  # 128 x 128 of set18: several whole and cut cells
SMALL = dict(encoder=ENCODER, window=64, overlap=0.5, window_batch=4)
#: The contract test's tiny settings (tests/adapters/test_contract.py): one optimiser step on one 64-px crop.
CONTRACT = {"params": {"encoder": ENCODER, "window": 64, "overlap": 0.0, "cellprob_threshold": 0.1, "niter": 20},
            "train": {"epochs": 1, "batch_size": 1, "crop_size": 64, "crops_per_epoch": 1, "augment": False,
                      "amp": False}}


@pytest.fixture(autouse=True)
def own_weights_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A weights cache per test, a fixed seed and one thread (2 shared cores; also keeps results reproducible)."""
    import torch

    monkeypatch.setenv("C6BENCH_WEIGHTS", str(tmp_path / "weights"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield tmp_path / "weights"
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def train_sample(sample_dir: Path) -> Sample:
    samples, _ = load_coco(sample_dir / "spec" / "train" / "annotations.coco.json")
    return samples[0]


def crop_sample(sample: Sample, window: tuple[slice, slice], out: Path) -> Sample:
    """A real sub-image with its annotations clipped to the window (instances as mask crops)."""
    import tifffile

    ys, xs = window
    height, width = ys.stop - ys.start, xs.stop - xs.start
    out.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(out, sample.load_image()[window])
    instances = []
    for inst in sample.instances:
        y0, x0, y1, x1 = inst.bbox
        top, left, bottom, right = max(y0, ys.start), max(x0, xs.start), min(y1, ys.stop), min(x1, xs.stop)
        if bottom > top and right > left and (crop := inst.crop[top - y0 : bottom - y0, left - x0 : right - x0]).any():
            instances.append(Instance.from_mask("cells", top - ys.start, left - xs.start, crop, height, width,
                                                order=len(instances)))
    sample = Sample(image_path=out, height=height, width=width, instances=tuple(instances), file_name=out.name)
    return flatten([sample], "last", 10, out.name)[0]  # as the harness hands training samples (needs_label_maps)


def layout(state: dict) -> tuple[int, str]:
    lines = "\n".join(f"{key}:{tuple(value.shape)}" for key, value in state.items())
    return len(state), hashlib.sha256(lines.encode()).hexdigest()


def signature(instances: list[Instance]) -> list[tuple]:
    return sorted((inst.bbox, np.packbits(inst.crop).tobytes(), inst.score) for inst in instances)


def save_like_mediar(net, path: Path) -> Path:
    """MEDIAR's main.py: ``torch.save(trainer.model.state_dict(), model_path)``."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)
    return path


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


def save_like_mediar_state(state: dict, path: Path) -> Path:
    import torch

    torch.save(state, path)
    return path


# --------------------------------------------------------------------------------------------- pieces, exact


def test_normalisation_is_mediars() -> None:
    """Non-zero 0-99.5 percentiles → uint8 via skimage (as MEDIAR's CustomNormalizeImage) → min-max to [0, 1]."""
    from skimage import exposure

    from adapters._upstream.mediar.augment import mediar_normalize

    rng = np.random.default_rng(3)
    image = rng.integers(0, 4000, size=(40, 50)).astype(np.uint16)
    image[:5] = 0  # MEDIAR's percentiles ignore zero pixels
    nonzero = image[image != 0]
    low, high = np.percentile(nonzero, [0.0, 99.5])
    as_uint8 = exposure.rescale_intensity(image.astype(np.float32), in_range=(low, high), out_range="uint8")
    as_uint8 = as_uint8.astype(np.uint8).astype(np.float32)
    expected = (as_uint8 - as_uint8.min()) / (as_uint8.max() - as_uint8.min())
    got = mediar_normalize(image)
    assert got.shape == (3, 40, 50) and got.dtype == np.float32
    for channel in got:
        np.testing.assert_allclose(channel, expected, atol=1e-6)
    rgb = np.stack([image, image // 2, image // 4], axis=-1)
    assert mediar_normalize(rgb).shape == (3, 40, 50)
    assert not mediar_normalize(np.zeros((8, 8), np.uint8)).any()


def test_flow_targets_are_cellposes_and_leave_labels_alone() -> None:
    import torch
    from cellpose import dynamics

    from adapters._upstream.mediar.recipe import flow_targets, mediar_loss

    labels = np.zeros((40, 60), dtype=np.int32)
    yy, xx = np.mgrid[:40, :60]
    labels[(yy - 20) ** 2 + (xx - 15) ** 2 < 100] = 7
    labels[(yy - 18) ** 2 + (xx - 42) ** 2 < 64] = 3
    before = labels.copy()
    flows = flow_targets(labels, torch.device("cpu"))
    np.testing.assert_array_equal(labels, before)
    reference = dynamics.labels_to_flows([labels.copy()], device=torch.device("cpu"))[0]
    np.testing.assert_allclose(flows, reference[2:4], atol=1e-6)
    assert flows.shape == (2, 40, 60) and not flows[:, labels == 0].any()
    assert not flow_targets(np.zeros((8, 8), np.int32), torch.device("cpu")).any()

    cells = torch.from_numpy((labels > 0).astype(np.float32))[None]
    target = torch.from_numpy(flows)[None]
    perfect = torch.cat([5.0 * target, (cells * 60.0 - 30.0)[:, None]], dim=1)
    assert float(mediar_loss(perfect, cells, target)) < 1e-12
    wrong_flow = perfect.clone()
    wrong_flow[:, 0] += 2.0  # MSE term: 0.5 * mean(2^2 over one of two channels) = 1
    assert float(mediar_loss(wrong_flow, cells, target)) == pytest.approx(1.0, abs=1e-9)


def test_sliding_window_blends_exactly_and_tta_fixes_flow_signs() -> None:
    import torch

    from adapters._upstream.mediar.sliding_window import (
        flip_tta,
        importance_map,
        sliding_window,
        window_starts,
    )

    assert window_starts(1024, 512, 0.6) == [0, 204, 408, 512]
    assert len(window_starts(1944, 512, 0.6)) * len(window_starts(2592, 512, 0.6)) == 9 * 12
    assert window_starts(300, 512, 0.6) == [0]
    weights = importance_map(512)
    assert weights.max() == pytest.approx(1.0, abs=1e-6) and np.allclose(weights, weights[::-1, ::-1])
    assert weights[0, 0] == pytest.approx(np.exp(-0.5 * (255.5 / 64) ** 2) ** 2, rel=1e-4)  # sigma 64 px

    calls: list[tuple[int, ...]] = []

    def identity(tiles: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(tiles.shape))
        return tiles * 1.0

    image = torch.rand(3, 100, 70)
    np.testing.assert_allclose(sliding_window(identity, image, 64, 0.5, 4).numpy(), image.numpy(), atol=1e-6)
    assert calls[0] == (4, 3, 64, 64) and sum(c[0] for c in calls) == 3 * 2  # y: 0, 32, 36; x: 0, 6
    small = torch.rand(3, 20, 40)  # smaller than the window: zero-padded around, cropped back
    np.testing.assert_allclose(sliding_window(identity, small, 64, 0.5, 4).numpy(), small.numpy(), atol=1e-6)

    def constant_field(tiles: torch.Tensor) -> torch.Tensor:
        out = torch.ones_like(tiles)
        out[:, 0], out[:, 1], out[:, 2] = 1.0, 2.0, 3.0
        return out

    merged = flip_tta(constant_field, torch.rand(3, 64, 64), 64, 0.5, 4)
    # plain (1, 2, 3) + hflip (1, -2, 3) + vflip (-1, 2, 3), averaged
    np.testing.assert_allclose(merged[:, 10, 20].numpy(), [1 / 3, 2 / 3, 3.0], rtol=1e-6)


def test_masks_from_ideal_flows_recover_the_cells() -> None:
    import torch

    from adapters._upstream.mediar.recipe import flow_targets
    from adapters._upstream.mediar.sliding_window import masks_from_output
    from harness.convert import instances_from_logits

    labels = np.zeros((64, 64), dtype=np.int32)
    yy, xx = np.mgrid[:64, :64]
    labels[(yy - 20) ** 2 + (xx - 20) ** 2 < 100] = 1
    labels[(yy - 40) ** 2 + (xx - 44) ** 2 < 120] = 2
    output = np.concatenate([5.0 * flow_targets(labels, torch.device("cpu")),
                             np.where(labels > 0, 4.0, -4.0)[None]]).astype(np.float32)
    masks = masks_from_output(output, torch.device("cpu"), cellprob_threshold=0.5, flow_threshold=0.4, niter=200,
                              min_size=16)
    pairs = {(int(a), int(b)) for a, b in zip(masks.ravel(), labels.ravel())}
    assert pairs == {(0, 0), (1, 1), (2, 2)} or pairs == {(0, 0), (2, 1), (1, 2)}
    probability = np.where(labels > 0, 0.9, 0.1)
    probability[20, 20] = 0.5
    instances = instances_from_logits(labels, np.log(probability / (1 - probability)), "cell")
    assert [(i.bbox, i.area, i.category) for i in instances] == [((11, 11, 30, 30), int((labels == 1).sum()), "cell"),
                                                                 ((30, 34, 51, 55), int((labels == 2).sum()), "cell")]
    assert instances[0].score == pytest.approx((0.9 * (instances[0].area - 1) + 0.5) / instances[0].area)
    assert instances[1].score == pytest.approx(0.9)


def test_scale_resizes_training_images_and_predicts_at_full_resolution() -> None:
    """`scale` (the quick profile's 0.5): training pixels area-averaged, labels nearest; the network sees the image
    area-downsampled and its output is bilinearly resized back to the input size before the dynamics."""
    import torch

    from adapters._upstream.mediar.augment import TrainImage, rescale_train_image
    from adapters.mediar import MediarAdapter

    pixels = np.array([[[0, 2, 10, 10], [4, 6, 10, 10], [1, 1, 7, 8], [1, 1, 9, 9]]], dtype=np.uint8)
    labels = np.array([[0, 0, 3, 3], [0, 5, 3, 3], [7, 7, 0, 0], [7, 7, 0, 1]], dtype=np.int32)
    item = rescale_train_image(TrainImage(pixels, 20.0, labels), 0.5)
    assert item.pixels.dtype == np.uint8 and item.span == 20.0
    assert item.pixels.tolist() == [[[3, 10], [1, 8]]]  # 8.25 -> 8: rounded to nearest
    assert item.labels.tolist() == [[0, 3], [7, 0]]  # nearest = each 2 x 2 block's top-left label
    assert rescale_train_image(item, 1.0) is item
    with pytest.raises(ConfigError, match=r"model 'mediar'.scale: must be in \(0, 4\], got 0.0"):
        MediarAdapter.build({"encoder": ENCODER, "scale": 0.0})

    adapter = MediarAdapter(encoder=ENCODER, window=64, scale=0.5)
    adapter._nets = [torch.nn.Identity()]  # output = the network input: shows exactly what the network saw
    image = np.full((64, 64), 100, dtype=np.uint16)
    image[:, 32:] = 300  # normalised: 0 left, 1 right
    output = adapter.raw_output(image)
    assert output.shape == (3, 64, 64)
    expected_row = np.array([0.0] * 31 + [0.25, 0.75] + [1.0] * 31, dtype=np.float32)
    np.testing.assert_allclose(output, np.broadcast_to(expected_row, (3, 64, 64)), atol=1e-6)


def test_augmented_crops_keep_image_and_labels_aligned(train_sample: Sample) -> None:
    from adapters._upstream.mediar.augment import TrainImage, augmented_crop, mediar_uint8

    labels = np.zeros((train_sample.height, train_sample.width), dtype=np.int32)
    for k, inst in enumerate(train_sample.instances, 1):
        y0, x0, y1, x1 = inst.bbox
        labels[y0:y1, x0:x1][inst.crop] = k
    item = TrainImage(*mediar_uint8(train_sample.load_image()), labels)
    ids = set(np.unique(labels).tolist())
    rng = np.random.default_rng(0)
    for _ in range(6):
        image, crop = augmented_crop(item, 128, rng, augment=True, zoom_prob=0.5)
        assert image.shape == (3, 128, 128) and image.dtype == np.float32 and crop.dtype == np.int32
        assert set(np.unique(crop).tolist()) <= ids
    plain, crop = augmented_crop(item, 128, np.random.default_rng(1), augment=False)
    # without augmentation a crop is a window of the normalised image and of its labels at the same place
    draw = np.random.default_rng(1)
    y, x = int(draw.integers(0, labels.shape[0] - 127)), int(draw.integers(0, labels.shape[1] - 127))
    np.testing.assert_array_equal(crop, labels[y : y + 128, x : x + 128])
    np.testing.assert_allclose(plain[0], item.pixels[0, y : y + 128, x : x + 128] / np.float32(item.span))
    assert (plain[0] == plain[2]).all()
    tiny = TrainImage(item.pixels[:, :50, :40], item.span, labels[:50, :40])
    image, crop = augmented_crop(tiny, 64, rng, augment=False)
    assert image.shape == (3, 64, 64) and not crop[:7].any() and not image[:, :7].any()  # padded around


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
