"""CellPose adapter on real sample crops with randomly initialised networks (no pretrained weights here).

Covers: a 2-epoch train + predict + load round trip, zero-shot through the real weights-loading path (a
random network saved in cellpose's own format under the cyto3 file name), missing weights, a wrong path that
must never download, and foreign checkpoints.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from adapters.base import Adapter
from harness.errors import ConfigError, DataError, MissingWeightsError, NetworkDisabledError
from harness.flatten import flatten
from harness.records import Instance, Sample
from sample_windows import crop_sample, train_sample  # noqa: F401 (train_sample: a fixture)

pytest.importorskip("cellpose")

CROP = (slice(200, 360), slice(300, 460))  # 160 x 160, several whole and cut cells of set30
#: The contract test's tiny settings (tests/adapters/test_contract.py): 2 epochs (its minimum: LR warm-up) of one crop.
CONTRACT = {"params": {"cellprob_threshold": -1.0, "flow_threshold": 0.0},
            "train": {"epochs": 2, "batch_size": 1, "nimg_per_epoch": 1, "bsize": 128, "min_train_masks": 1}}


@pytest.fixture(autouse=True)
def own_weights_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A weights cache per test, so a file saved by one test is never seen by another."""
    monkeypatch.setenv("C6BENCH_WEIGHTS", str(tmp_path / "weights"))
    import torch

    torch.manual_seed(0)
    return tmp_path / "weights"


def signature(instances: list[Instance]) -> list[tuple[tuple[int, int, int, int], bytes, float | None]]:
    return sorted((inst.bbox, np.packbits(inst.crop).tobytes(), inst.score) for inst in instances)


def paint(instances: list[Instance], shape: tuple[int, int]) -> np.ndarray:
    out = np.zeros(shape, dtype=np.int32)
    for k, inst in enumerate(instances, 1):
        y0, x0, y1, x1 = inst.bbox
        assert not out[y0:y1, x0:x1][inst.crop].any(), "cellpose output must not overlap"
        out[y0:y1, x0:x1][inst.crop] = k
    return out


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Two label maps describe the same instances (labels may be numbered differently)."""
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    same_foreground = (a > 0).sum() == (b > 0).sum()
    return same_foreground and len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]


def test_registered_with_its_traits_and_weights() -> None:
    import adapters

    cls = adapters.get("cellpose")
    assert (cls.multiclass, cls.needs_label_maps) == (False, True)
    assert [(w.name, w.file) for w in cls.weights] == [("cyto3", "cyto3"), ("nuclei", "nucleitorch_0")]
    with pytest.raises(ConfigError, match="unknown key.*flow_treshold.*allowed: .*flow_threshold"):
        cls.build({"flow_treshold": 0.4})
    with pytest.raises(ConfigError, match="unknown key.*n_epochs.*allowed: epochs"):
        cls.check_schedule({"n_epochs": 3})
    with pytest.raises(ConfigError, match=r"unknown key.*label_rule"):  # the harness flattens (config label_maps)
        cls.build({"label_rule": "last"})


def test_train_predict_load_round_trip(train_sample: Sample, tmp_path: Path) -> None:
    import adapters

    train = crop_sample(train_sample, CROP, tmp_path / "train" / "a.tif")
    val = crop_sample(train_sample, (slice(500, 628), slice(500, 628)), tmp_path / "val" / "b.tif")
    (train,), (val,) = flatten([train], "last", 10, "train"), flatten([val], "last", 10, "valid")  # as the harness
    assert len(train.instances) >= 5 and len(val.instances) >= 1
    adapter: Adapter = adapters.get("cellpose").build({"cellprob_threshold": -1.0, "flow_threshold": 0.0},
                                                      weights=None, device="cpu")
    assert adapter.init == "scratch"
    checkpoint = adapter.train([train], [val], tmp_path / "run", epochs=2, batch_size=2, nimg_per_epoch=2,
                               bsize=128, learning_rate=0.05)
    assert checkpoint == (tmp_path / "run" / "models" / "cellpose_finetuned").resolve()
    assert checkpoint.is_file()
    image = train.load_image()
    first = adapter.predict(image)
    assert first, "the trained network predicts instances on its own training crop"
    assert all(inst.category == "cell" and 0.0 < inst.score < 1.0 for inst in first)
    paint(first, image.shape)

    fresh = adapters.get("cellpose").build({"cellprob_threshold": -1.0, "flow_threshold": 0.0}, device="cpu")
    fresh.load(checkpoint)
    assert signature(fresh.predict(image)) == signature(first)
    # training moved the network: the trained diameter is the mean training diameter, not the init's 30 px
    assert float(fresh.model().diam_labels) != 30.0


def test_training_label_maps_paint_the_flattened_samples(train_sample: Sample, tmp_path: Path) -> None:
    """The harness's flattened samples, painted: exactly the label map the shared rule gives (numbering too);
    an image with fewer than min_train_masks instances is left out; overlaps left in are an error, not re-settled."""
    from adapters.cellpose import CellposeAdapter
    from harness.convert import label_map

    crop = crop_sample(train_sample, CROP, tmp_path / "a.tif")
    first = crop.instances[0]  # a copy of it painted last hides it (rule last): every later label moves down one
    crop = crop.with_instances([*crop.instances, Instance.from_mask("cells", *first.bbox[:2], first.crop, crop.height,
                                                                    crop.width, order=len(crop.instances))])
    few = crop_sample(train_sample, (slice(0, 40), slice(0, 40)), tmp_path / "few.tif")
    flat = flatten([crop, few], "last", 10, "train")
    expected, resolution = label_map(crop, "last", 10)
    assert [d["reason"] for d in resolution.dropped if d["order"] == 0] == ["hidden: fully covered by other "
                                                                           "instances (rule last)"]
    least = len(flat[1].instances) + 1
    assert len(flat[0].instances) == len(resolution.instances) >= least
    adapter = CellposeAdapter(device="cpu")
    images, labels = adapter._training_arrays(flat, "train", least)
    assert len(images) == len(labels) == 1 and images[0].dtype == np.float32
    assert labels[0].dtype == np.int32 and np.array_equal(labels[0], expected)
    y0, x0, y1, x1 = first.bbox
    assert (labels[0][y0:y1, x0:x1][first.crop] == len(resolution.instances)).all()  # the copy: the last label
    with pytest.raises(DataError, match="overlap; flatten the samples first"):
        adapter._training_arrays([crop], "train", 1)


def test_zero_shot_through_the_real_loading_path(train_sample: Sample, own_weights_cache: Path) -> None:
    """A cellpose-format file under the cyto3 name is found by name and predicts exactly like cellpose."""
    from adapters._upstream.cellpose_common import import_cellpose
    from adapters.cellpose import CellposeAdapter
    from harness import weights

    models = import_cellpose("cellpose")
    net = models.CellposeModel(gpu=False, pretrained_model=None, mkldnn=False).net
    path = weights.path_of("cyto3")
    path.parent.mkdir(parents=True, exist_ok=True)
    net.save_model(str(path))

    adapter = CellposeAdapter(weights="cyto3", cellprob_threshold=-3.0, flow_threshold=0.0)
    assert adapter.weights_path == path and adapter.init == "pretrained:cyto3"
    image = train_sample.load_image()[CROP]
    predicted = adapter.predict(image)
    direct = models.CellposeModel(gpu=False, pretrained_model=str(path), mkldnn=False)
    masks, flows, _ = direct.eval(image, channels=[0, 0], cellprob_threshold=-3.0, flow_threshold=0.0)
    assert masks.max() >= 1
    assert len(predicted) == len(np.unique(masks)) - 1
    assert same_partition(paint(predicted, image.shape), masks)
    prob = 1 / (1 + np.exp(-flows[2].astype(np.float64)))
    expected = sorted(float(prob[masks == k].mean()) for k in range(1, masks.max() + 1))
    assert sorted(inst.score for inst in predicted) == pytest.approx(expected, rel=1e-9)


def test_nuclei_file_without_diameter_keys_loads_as_cellpose_builtin_nuclei() -> None:
    """Older built-in files may lack diam_mean/diam_labels; cellpose uses 17 px for a nucleitorch_0 file."""
    import torch

    from adapters._upstream.cellpose_common import import_cellpose
    from adapters.cellpose import CellposeAdapter
    from harness import weights

    net = import_cellpose("cellpose").CellposeModel(gpu=False, pretrained_model=None, mkldnn=False).net
    state = {k: v for k, v in net.state_dict().items() if not k.startswith("diam_")}
    path = weights.path_of("nuclei")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    model = CellposeAdapter(weights="nuclei").model()
    assert str(model.pretrained_model) == str(path)
    assert float(model.diam_mean) == 17.0
    loaded = model.net.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())


def test_missing_weights_name_the_fetch_command() -> None:
    from adapters.cellpose import CellposeAdapter

    with pytest.raises(MissingWeightsError, match="run `c6bench weights fetch cyto3`"):
        CellposeAdapter(weights="cyto3")
    with pytest.raises(MissingWeightsError, match="run `c6bench weights fetch nuclei`"):
        CellposeAdapter(weights="nuclei")


def test_a_wrong_path_never_downloads(tmp_path: Path) -> None:
    """The adapter stops at a missing file; cellpose's own fallback download is disabled by the guard."""
    from adapters._upstream.cellpose_common import import_cellpose
    from adapters.cellpose import CellposeAdapter

    with pytest.raises(MissingWeightsError, match="does not exist"):
        CellposeAdapter(weights=str(tmp_path / "models" / "cyto3"))
    models = import_cellpose("cellpose")
    # Given a missing path, cellpose 3.1.1.3 logs a warning and downloads cyto3; the guard raises instead
    # (sockets are blocked too, but the guard fires before any connection is attempted).
    with pytest.raises(NetworkDisabledError, match="never downloads at run time"):
        models.CellposeModel(gpu=False, pretrained_model=str(tmp_path / "nope"), mkldnn=False)
    with pytest.raises(NetworkDisabledError):
        models.CellposeModel(gpu=False, pretrained_model="cyto3", mkldnn=False)
    assert not any(p.is_file() and p.name in ("cyto3", "size_cyto3.npy") for p in models.MODEL_DIR.iterdir())


def test_foreign_checkpoints_are_rejected(tmp_path: Path) -> None:
    import torch

    from adapters.cellpose import CellposeAdapter

    adapter = CellposeAdapter()
    yolo_like = tmp_path / "best.pt"
    torch.save({"model": torch.nn.Linear(2, 2), "epoch": 3}, yolo_like)  # a pickled module, like ultralytics
    with pytest.raises(ConfigError, match="best.pt: not a cellpose checkpoint .*another adapter"):
        adapter.load(yolo_like)
    other_net = tmp_path / "mediar.pth"
    torch.save(torch.nn.Conv2d(3, 8, 3).state_dict(), other_net)
    expected = r"lacks output.2.weight, downsample.\*, upsample.\*; it has e.g. weight, bias"
    with pytest.raises(ConfigError, match=expected):
        adapter.load(other_net)
    text = tmp_path / "classical.json"
    text.write_text('{"sigma": 2}')
    with pytest.raises(ConfigError, match="not a cellpose checkpoint"):
        CellposeAdapter(weights=str(text))
    with pytest.raises(ConfigError, match="checkpoint not found"):
        adapter.load(tmp_path / "gone")
    assert adapter.weights_path is None  # nothing was swapped in by a failed load


def test_versions() -> None:
    from adapters.cellpose import CellposeAdapter

    assert CellposeAdapter().versions()["cellpose"] == "3.1.1.3"


def test_training_prepares_targets_under_one_bar_caches_them_and_resumes(
        train_sample: Sample, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A labelled bar over the flow targets (train + validation images) opens before the epoch bar, cellpose's
    own unlabeled bars are never used, a second training reads the targets back from the cache, and a training
    stopped after a checkpoint resumes in its folder to the uninterrupted weights."""
    import cellpose.dynamics
    import cellpose.train
    import torch
    import tqdm

    import adapters
    from adapters._upstream import cellpose_train

    train = crop_sample(train_sample, CROP, tmp_path / "train" / "a.tif")
    val = crop_sample(train_sample, (slice(500, 628), slice(500, 628)), tmp_path / "val" / "b.tif")
    bars: list[list] = []  # [desc, updates] of every bar, in the order they were opened

    class Bar(tqdm.tqdm):  # type: ignore[misc]
        def __init__(self, *args: object, **kwargs: object) -> None:
            bars.append([kwargs.get("desc"), 0])
            self.record = bars[-1]
            super().__init__(*args, **kwargs)

        def update(self, n: float = 1) -> bool | None:
            self.record[1] += n
            return super().update(n)

    def unlabeled(*args: object, **kwargs: object) -> None:
        raise AssertionError("cellpose's own trange was used")

    monkeypatch.setattr(tqdm, "tqdm", Bar)
    monkeypatch.setattr(cellpose.train, "trange", unlabeled)
    monkeypatch.setattr(cellpose.dynamics, "trange", unlabeled)
    schedule = {"epochs": 4, "batch_size": 1, "nimg_per_epoch": 1, "bsize": 64, "min_train_masks": 1}

    def trained(work: str, **extra: object) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        adapter = adapters.get("cellpose").build({}, weights=None, device="cpu")
        checkpoint = adapter.train([train], [val], tmp_path / work, **{**schedule, **extra})
        return torch.load(checkpoint, weights_only=True)

    whole = trained("whole")
    assert bars == [["cellpose flows", 2], ["cellpose train", 4]]
    record = json.loads((tmp_path / "whole" / "training.json").read_text())
    assert {k: record[k] for k in ("images", "validation_images", "cached", "epochs", "resumed_from")} == {
        "images": 1, "validation_images": 1, "cached": 0, "epochs": 4, "resumed_from": 0}

    save = cellpose_train._save_checkpoint

    def save_then_stop(*args: object) -> None:
        save(*args)
        raise KeyboardInterrupt  # as a user's Ctrl-C after the checkpoint of epoch 1

    monkeypatch.setattr(cellpose_train, "_save_checkpoint", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        trained("split", checkpoint_minutes=0)
    monkeypatch.setattr(cellpose_train, "_save_checkpoint", save)
    resumed = trained("split", checkpoint_minutes=0)
    record = json.loads((tmp_path / "split" / "training.json").read_text())
    assert (record["cached"], record["resumed_from"]) == (2, 1)
    assert all(torch.equal(whole[k], resumed[k]) for k in whole) and list(whole) == list(resumed)
