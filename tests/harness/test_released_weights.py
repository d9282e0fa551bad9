"""`tests/fixtures/make_weights.py` writes every known weights name in its released layout (what the paper
rehearsal loads): file names from the WeightSpecs, containers and key layouts of the upstream releases."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path

import pytest

from harness import weights

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "fixtures"))
import make_weights  # noqa: E402

sys.path.pop(0)


def _mediar_layouts() -> dict[str, tuple[int, int, str]]:
    """LAYOUT_SMP033 as recorded in tests/adapters/test_mediar.py (smp 0.3.3 digests of key:shape lines)."""
    spec = importlib.util.spec_from_file_location("_test_mediar_layout", REPO / "tests/adapters/test_mediar.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.LAYOUT_SMP033


def _layout(state: dict) -> tuple[int, str]:
    lines = "\n".join(f"{k}:{tuple(v.shape)}" for k, v in state.items())
    return len(state), hashlib.sha256(lines.encode()).hexdigest()


def test_every_known_weights_name_has_a_builder() -> None:
    assert sorted(make_weights.BUILDERS) == sorted(weights.table())


def _mediar_state(tmp_path: Path, small: bool) -> dict:
    import torch

    reason = make_weights.side_env_reason()
    if reason:
        pytest.skip(reason)
    path = make_weights.build("from_phase2", tmp_path, small=small)
    assert path == tmp_path / "mediar" / "from_phase2.pth"
    return torch.load(path, map_location="cpu", weights_only=True)  # a plain state dict, as MEDIAR saves


def test_mediar_file_has_mediars_smp033_layout(tmp_path: Path) -> None:
    count, _, digest = _mediar_layouts()["mit_b0"]
    assert _layout(_mediar_state(tmp_path, small=True)) == (count, digest)


@pytest.mark.slow
def test_mediar_real_size_file_has_the_released_mit_b5_layout(tmp_path: Path) -> None:
    count, _, digest = _mediar_layouts()["mit_b5"]
    assert _layout(_mediar_state(tmp_path, small=False)) == (count, digest)


@pytest.mark.parametrize(("name", "diameter"), [("cyto3", 30.0), ("nuclei", 17.0)])
def test_cellpose_files_are_cpnet_state_dicts(name: str, diameter: float, tmp_path: Path) -> None:
    import torch

    from adapters.cellpose import check_cellpose_file

    path = make_weights.build(name, tmp_path)
    assert path.name == weights.spec(name).file
    check_cellpose_file(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert (float(state["diam_mean"]), float(state["diam_labels"])) == (diameter, diameter)
    assert tuple(state["downsample.down.res_down_0.conv.conv_0.2.weight"].shape) == (32, 2, 3, 3)  # 2 channels
    bare = make_weights.build(name, tmp_path / "bare", diam_labels=False)
    assert set(torch.load(bare, map_location="cpu", weights_only=True)) == set(state) - {"diam_labels"}


def test_sam_vit_b_is_metas_plain_state_dict(tmp_path: Path) -> None:
    import torch

    path = make_weights.build("sam_vit_b", tmp_path)
    assert path.name == "sam_vit_b_01ec64.pth"
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert len(state) == 314 and tuple(state["image_encoder.pos_embed"].shape) == (1, 64, 64, 768)
    assert sum(v.numel() for v in state.values()) == 93_735_728  # ViT-B SAM: 93.7 M


def test_yolo_file_is_a_stripped_ultralytics_checkpoint(tmp_path: Path) -> None:
    import torch

    path = make_weights.build("yolo11n-seg", tmp_path)
    assert path.name == "yolo11n-seg.pt"
    from adapters._upstream.ultralytics import ultralytics_offline

    ultralytics_offline()
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    assert (ckpt["epoch"], ckpt["optimizer"], ckpt["ema"], ckpt["updates"], ckpt["best_fitness"]) == (
        -1, None, None, None, None)
    model = ckpt["model"]
    assert type(model).__name__ == "SegmentationModel" and model.yaml["yaml_file"] == "yolo11n-seg.yaml"
    assert {p.dtype for p in model.parameters()} == {torch.float16}
    assert len(model.names) == 80 and model.names[0] == "person" and ckpt["train_args"]["task"] == "segment"


def test_cellseg1_released_lora_files_have_the_authors_layout(tmp_path: Path) -> None:
    import torch

    from adapters._upstream.cellseg1.released import file_variant, released_specs

    name = released_specs()[0].name
    path = make_weights.build(name, tmp_path)
    assert path == tmp_path / weights.spec(name).file
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert "w_a_000" in state and "fati_vb" in state
    assert file_variant(state) == ("vit_h", 32, 4)  # 32 blocks x (q, v), rank 4
