"""Cellpose-SAM adapter: cellpose 4 in its own environment, random-init small encoders, released-layout files.

Tests marked ``env("cellpose_sam")`` run in one child pytest under the model's environment
(tests/conftest.py); the others run here, in the project's environment with cellpose 3, and check what must
hold there.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from adapters.cellpose_sam import CELLPOSE_VERSION, CellposeSAMAdapter
from harness.coco import load_coco
from harness.errors import ConfigError, NetworkDisabledError
from harness.flatten import flatten
from harness.records import Instance, Sample
from sample_windows import crop_sample

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
in_env = pytest.mark.env("cellpose_sam")
WINDOW = (slice(200, 456), slice(300, 556))  # 256 x 256 of set30: one cellpose-SAM tile, several whole cells
LOOSE = {"flow_threshold": 0.0, "cellprob_threshold": -4.0}  # a random network still yields instances
#: The contract test's tiny settings (tests/adapters/test_contract.py): the tiny encoder, 2 epochs (its minimum).
CONTRACT = {"params": {"scratch_encoder": "tiny", **LOOSE},
            "train": {"epochs": 2, "learning_rate": 1e-3, "batch_size": 1, "min_train_masks": 1}}


@pytest.fixture(autouse=True)
def own_weights_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("C6BENCH_WEIGHTS", str(tmp_path / "weights"))
    return tmp_path / "weights"


@pytest.fixture
def crop(sample_dir: Path, tmp_path: Path) -> Sample:
    """A real 256-px window of a training image with its annotations clipped to it (instances as mask crops)."""
    sample = load_coco(sample_dir / "spec" / "train" / "annotations.coco.json")[0][1]
    return crop_sample(sample, WINDOW, tmp_path / "crop.tif")


def signature(instances: list[Instance]) -> list[tuple[tuple[int, int, int, int], bytes, float | None]]:
    return sorted((i.bbox, np.packbits(i.crop).tobytes(), i.score) for i in instances)


# ----------------------------------------------------------------------------------------- project environment


def test_declares_its_environment() -> None:
    from harness import envs

    env = envs.of(CellposeSAMAdapter)
    assert CellposeSAMAdapter.requirements == ("cellpose==4.2.1.1",) and CELLPOSE_VERSION == "4.2.1.1"
    assert env.model == "cellpose_sam" and env.path.name == f"cellpose_sam-{env.key}" and len(env.key) == 12


def test_refuses_to_run_on_the_projects_cellpose_3() -> None:
    import cellpose

    adapter = CellposeSAMAdapter(weights=None, device="cpu", scratch_encoder="tiny")
    with pytest.raises(ConfigError, match=r"needs cellpose 4\.2\.1\.1, but this process imported cellpose 3\.1\.1\.3 "
                                          r"from .*site-packages/cellpose; run it through `c6bench bench`"):
        adapter.model()
    assert cellpose.version == "3.1.1.3"


def test_rehearsal_schedule_counts_steps_as_train_seg_does() -> None:
    paper = {"epochs": 100, "batch_size": 1, "nimg_per_epoch": None}
    cut = CellposeSAMAdapter.rehearsal_schedule(paper, 3)
    assert cut == {"epochs": 4, "batch_size": 1, "nimg_per_epoch": 1}
    assert CellposeSAMAdapter.schedule_size(cut, 1) == (3, 4)
    assert CellposeSAMAdapter.schedule_size(paper, 30) == (99 * 30, 100 * 30)  # the paper recipe on Glioma C6


def test_bad_params_fail_before_any_work() -> None:
    with pytest.raises(ConfigError, match=r"scratch_encoder 'vit_h' is not one of vit_l, small, tiny"):
        CellposeSAMAdapter(scratch_encoder="vit_h")
    with pytest.raises(ConfigError, match=r"unknown key.*min_pixels"):  # the harness flattens (config label_maps)
        CellposeSAMAdapter.build({"min_pixels": 10})
    with pytest.raises(ConfigError, match=r"diameter must be > 0"):
        CellposeSAMAdapter(diameter=0)


# --------------------------------------------------------------------------------------------- its environment


@in_env
def test_imports_cellpose_4_from_its_environment_with_downloads_disabled() -> None:
    from adapters.cellpose_sam import _cellpose
    from harness import envs

    models = _cellpose()
    import cellpose

    assert cellpose.version == CELLPOSE_VERSION
    assert Path(cellpose.__file__).parent.parent == envs.for_model("cellpose_sam").path
    assert "cyto3" not in models.MODEL_NAMES and "cpsam" in models.MODEL_NAMES  # cellpose 4 dropped cyto3
    with pytest.raises(NetworkDisabledError, match=r"cellpose tried to download https://huggingface.co/.*cpsam"):
        models.cache_model_path("cpsam")  # what CellposeModel does for a name it does not find on disk
    assert envs.imported_versions(["cellpose"]) == {"cellpose": f"4.2.1.1 ({envs.for_model('cellpose_sam').path})"}
    import socket

    with pytest.raises(OSError, match="blocked"):  # the child pytest under the environment is offline too
        socket.create_connection(("huggingface.co", 443), timeout=1)


@in_env
def test_train_predict_and_load_round_trip(crop: Sample, tmp_path: Path) -> None:
    import torch

    torch.manual_seed(0)
    adapter = CellposeSAMAdapter(weights=None, device="cpu", scratch_encoder="tiny", **LOOSE)
    assert sum(p.numel() for p in adapter.model().net.parameters()) == 829_442
    crop = flatten([crop], "last", 10, "train")[0]  # what the harness hands a needs_label_maps model
    checkpoint = adapter.train([crop], [crop], tmp_path / "work", epochs=2, learning_rate=1e-3, batch_size=1,
                               min_train_masks=1)
    assert checkpoint == tmp_path / "work" / "models" / "cellpose_sam_finetuned" and checkpoint.is_file()
    image = crop.load_image()
    predicted = adapter.predict(image)
    assert predicted and all(0.0 < i.score < 1.0 for i in predicted)
    assert all(i.height == 256 and i.width == 256 for i in predicted)
    fresh = CellposeSAMAdapter(weights=None, device="cpu", scratch_encoder="small", **LOOSE)
    fresh.load(checkpoint)  # the file's encoder (tiny) wins over scratch_encoder
    assert signature(fresh.predict(image)) == signature(predicted)
    with pytest.raises(ConfigError, match=r"needs epochs >= 2"):
        adapter.train([crop], [], tmp_path / "again", epochs=1)


@in_env
@pytest.mark.parametrize("ddp", [False, True], ids=["plain", "module-prefixed"])
def test_zero_shot_from_a_released_layout_file(own_weights_cache: Path, crop: Sample, ddp: bool) -> None:
    sys.path.insert(0, str(FIXTURES))
    from make_cpsam import cpsam_file

    cpsam_file(own_weights_cache / "cpsam", encoder="small", ddp=ddp)
    adapter = CellposeSAMAdapter(weights="cpsam", device="cpu", **LOOSE)
    assert adapter.init == "pretrained:cpsam" and adapter.weights_path == own_weights_cache / "cpsam"
    masks, cellprob = adapter.predict_raw(crop.load_image())
    assert masks.shape == cellprob.shape == (256, 256)
    assert adapter.model().net.encoder.patch_embed.proj.weight.shape == (256, 3, 8, 8)  # 8-px tokens, as cpsam


@in_env
def test_foreign_and_damaged_files_are_named(tmp_path: Path) -> None:
    import torch

    sys.path.insert(0, str(FIXTURES))
    from make_cpsam import cpsam_file

    cp3 = tmp_path / "cyto3"
    torch.save({"downsample.down.res_down_0.conv.conv_0.0.weight": torch.zeros(1), "output.2.weight": torch.zeros(1)},
               str(cp3))
    with pytest.raises(ConfigError, match=r"cyto3: a Cellpose 3 file .*run it with the cellpose model"):
        CellposeSAMAdapter(weights=str(cp3))
    (tmp_path / "junk").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match=r"junk: not a Cellpose-SAM checkpoint \(torch cannot read it"):
        CellposeSAMAdapter(weights=str(tmp_path / "junk"))
    good = cpsam_file(tmp_path / "cpsam_tiny", encoder="tiny")
    state = torch.load(str(good), weights_only=True)
    del state["out.weight"]
    torch.save(state, str(tmp_path / "cut"))
    adapter = CellposeSAMAdapter(weights=str(tmp_path / "cut"))
    with pytest.raises(ConfigError, match=r"cut: does not match the Cellpose-SAM network it describes \(missing "
                                          r"out.weight\)"):
        adapter.model()  # cellpose itself would load it non-strictly and keep a random readout


@in_env
@pytest.mark.slow
def test_real_size_released_file_goes_through_cellposes_own_loader(own_weights_cache: Path, crop: Sample) -> None:
    from cellpose import models

    sys.path.insert(0, str(FIXTURES))
    from make_cpsam import cpsam_file

    path = cpsam_file(own_weights_cache / "cpsam", encoder="vit_l")
    assert 1.1e9 < path.stat().st_size < 1.3e9
    adapter = CellposeSAMAdapter(weights="cpsam", device="cpu")
    model = adapter.model()
    assert type(model) is models.CellposeModel and model.pretrained_model == str(path)
    assert sum(p.numel() for p in model.net.parameters()) == 304_628_930
    masks, cellprob = adapter.predict_raw(crop.load_image())
    assert masks.shape == cellprob.shape == (256, 256)
