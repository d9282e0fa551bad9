"""CellSeg1 adapter: LoRA-only gradients, small checkpoints that reload to identical predictions,
1024 → small position-embedding resize, mask-IoU NMS, schema errors.

Everything runs on the ``tiny`` random-init SAM (embed 64, depth 2, 128 px) and a synthetic 128×128 image
with six bright disks, so the whole file takes seconds on one CPU core.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import adapters
from harness.data import Instance, Sample
from harness.errors import ConfigError, MissingWeightsError

torch = pytest.importorskip("torch")
pytest.importorskip("segment_anything")

from adapters.cellseg1 import (  # noqa: E402
    Candidate,
    build_sam,
    is_lora_key,
    mask_bce,
    mask_iou_nms,
    resize_sam_state,
)

SIZE = 128
TINY = dict(variant="tiny", image_size=SIZE, train_scope="lora", points_per_side=6, crop_n_layers=0,
            pred_iou_thresh=-1.0, stability_score_thresh=0.0, max_mask_region_area_ratio=1.0,
            min_mask_region_area=1)
SCHEDULE = dict(epochs=1, batch_size=2, grad_accumulation=1, samples_per_epoch=2, resize_size=SIZE,
                tile_size=SIZE, min_cell_area=5, edge_distance=2, threshold_grid=(0.0, 0.5))


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def disk_sample(tmp_path: Path) -> Sample:
    """A 128×128 uint16 image with six disks, annotated as polygons (category `cells`)."""
    import tifffile

    yy, xx = np.mgrid[:SIZE, :SIZE]
    image = np.full((SIZE, SIZE), 1000, np.uint16)
    instances = []
    for k, (cy, cx) in enumerate([(25, 25), (25, 70), (30, 105), (75, 40), (90, 90), (105, 30)]):
        image[(yy - cy) ** 2 + (xx - cx) ** 2 <= 100] = 3000
        t = np.linspace(0, 2 * np.pi, 24, endpoint=False)
        poly = np.stack([cx + 10.5 * np.cos(t), cy + 10.5 * np.sin(t)], axis=1)
        instances.append(Instance("cells", SIZE, SIZE, order=k, polygons=(poly,)))
    path = tmp_path / "disks.tif"
    tifffile.imwrite(path, image)
    return Sample(path, SIZE, SIZE, tuple(instances), image_id=0, file_name=path.name)


def same(a: list[Instance], b: list[Instance]) -> bool:
    return len(a) == len(b) and all(
        x.bbox == y.bbox and x.score == y.score and np.array_equal(x.crop, y.crop)
        for x, y in zip(a, b, strict=True)
    )


def test_only_lora_parameters_get_gradients_and_change(tmp_path: Path) -> None:
    adapter = adapters.get("cellseg1")(**TINY)
    before = {k: v.clone() for k, v in adapter.model.state_dict().items()}
    trainable = {n for n, p in adapter.model.named_parameters() if p.requires_grad}
    assert trainable and all(is_lora_key(n) for n in trainable)
    assert {n for n, _ in adapter.model.named_parameters() if is_lora_key(n)} == trainable
    # 2 encoder blocks x (a_q, b_q, a_v, b_v) + 7 decoder attentions x (q, v) x (a, b)
    assert len(trainable) == 2 * 4 + 7 * 2 * 2

    sample = disk_sample(tmp_path)
    tiles = adapter._make_tiles([sample], SIZE, SIZE)
    rng = np.random.default_rng(0)
    items = [adapter._augment_tile(tiles[0], rng, dict(max_points=30, neg_rate=0.5, min_cell_area=5,
                                                       edge_distance=2))]
    assert items[0].positive.sum() == 6 and (~items[0].positive).sum() == 3
    adapter.model.train()
    adapter._loss(items).backward()
    for name, p in adapter.model.named_parameters():
        if name in trainable:
            if name.endswith(("b_q.weight", "b_v.weight", ".b.weight")):  # B sees A x != 0 on the first step
                assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name

    adapter.model.zero_grad(set_to_none=True)
    adapter.train([sample], [], tmp_path / "run", **SCHEDULE)
    after = adapter.model.state_dict()
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    assert changed and changed <= trainable
    assert all(torch.equal(after[k], before[k]) for k in after if k not in trainable)
    assert any(k.endswith("b_q.weight") for k in changed)


def test_checkpoint_holds_only_trained_tensors_and_reloads_to_identical_predictions(tmp_path: Path) -> None:
    cls = adapters.get("cellseg1")
    sample = disk_sample(tmp_path)
    adapter = cls(**TINY)
    ckpt = adapter.train([sample], [sample], tmp_path / "run", **SCHEDULE)
    blob = torch.load(ckpt, map_location="cpu", weights_only=True)
    names = {n for n, p in adapter.model.named_parameters() if p.requires_grad}
    assert set(blob["trained"]) == names
    assert blob["variant"] == "tiny" and blob["base_weights"] is None and blob["image_size"] == SIZE
    assert "pred_iou_thresh" in blob  # picked on validation (None here: a 1-step model finds no cell)
    counts = adapter.parameter_counts()
    assert counts["trainable"] == sum(t.numel() for t in blob["trained"].values()) < counts["total"] / 10

    image = sample.load_image()
    first = adapter.predict(image)
    assert first and all(i.score is not None and i.height == SIZE for i in first)
    fresh = cls(**TINY)
    assert not same(fresh.predict(image), first)  # a fresh adapter (zero LoRA) predicts differently
    fresh.load(ckpt)
    assert same(fresh.predict(image), first)

    wrong = cls(**{**TINY, "lora_rank": 2})
    with pytest.raises(ConfigError, match="lora_rank"):
        wrong.load(ckpt)


def test_threshold_is_picked_on_validation_by_f1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Six true disks scored 0.9 and six junk squares scored 0.6: the 0.7 cut gives F1 1.0, 0.5 gives 2/3."""
    sample = disk_sample(tmp_path)
    cands = []
    for inst in sample.instances:
        y0, x0, _, _ = inst.bbox
        cands.append(Candidate(y0, x0, inst.crop, 0.9, 1.0))
    for k in range(6):
        cands.append(Candidate(50 + 10 * (k % 2), 5 + 20 * k, np.ones((6, 6), bool), 0.6, 1.0))
    adapter = adapters.get("cellseg1")(**{**TINY, "pred_iou_thresh": None})
    monkeypatch.setattr(adapter, "_candidates", lambda rgb, floor: [c for c in cands if c.iou >= floor])
    assert adapter._pick_threshold([sample], (0.5, 0.7, 0.95)) == 0.7
    assert adapter._pick_threshold([sample], (0.95,)) is None
    assert adapter.iou_thresh == 0.8


def test_position_embeddings_resized_from_a_1024_px_state_dict(tmp_path: Path) -> None:
    big = build_sam("tiny", 1024)
    with torch.no_grad():
        big.image_encoder.pos_embed.fill_(0.25)
    state = big.state_dict()
    assert state["image_encoder.pos_embed"].shape == (1, 64, 64, 64)
    assert state["image_encoder.blocks.1.attn.rel_pos_h"].shape == (127, 32)  # global block
    path = tmp_path / "fake_sam_1024.pth"
    torch.save(state, path)

    adapter = adapters.get("cellseg1")(weights=str(path), **TINY)
    loaded = adapter.model.state_dict()
    assert loaded["image_encoder.pos_embed"].shape == (1, 8, 8, 64)
    assert torch.allclose(loaded["image_encoder.pos_embed"], torch.full((1, 8, 8, 64), 0.25))
    assert loaded["image_encoder.blocks.1.attn.rel_pos_h"].shape == (15, 32)
    window_key = "image_encoder.blocks.0.attn.rel_pos_w"  # windowed block: table kept
    assert torch.equal(loaded[window_key], state[window_key])
    assert torch.equal(loaded["mask_decoder.iou_token.weight"], state["mask_decoder.iou_token.weight"])
    assert adapter.init == f"pretrained:{path}"

    small = build_sam("small", 1024).state_dict()
    with pytest.raises(MissingWeightsError, match="wrong variant"):
        resize_sam_state(small, build_sam("tiny", SIZE))


def test_mask_iou_nms_suppresses_by_mask_not_box() -> None:
    ring = np.ones((10, 10), bool)
    ring[2:8, 2:8] = False  # a ring: its box contains the inner square, their masks do not overlap
    inner = np.zeros((10, 10), bool)
    inner[3:7, 3:7] = True
    half = np.zeros((10, 10), bool)
    half[:, :5] = True
    cands = [Candidate(0, 0, ring, 0.9, 1.0), Candidate(0, 0, inner, 0.8, 1.0),
             Candidate(0, 0, half, 0.5, 1.0)]
    kept = mask_iou_nms(cands, 0.05)
    # ring 64 px, half 50 px, overlap 32 → IoU 32/82 = 0.39; inner vs half 8/58 = 0.14; ring vs inner 0
    assert [c.iou for c in kept] == [0.9, 0.8]
    assert [c.iou for c in mask_iou_nms(cands, 0.5)] == [0.9, 0.8, 0.5]


def test_random_base_trains_everything_by_default_and_uses_the_scratch_variant(tmp_path: Path) -> None:
    cls = adapters.get("cellseg1")
    adapter = cls(**{**TINY, "variant": "vit_b", "scratch_variant": "tiny", "train_scope": "auto"})
    assert adapter.variant == "tiny" and adapter.train_scope == "all"
    counts = adapter.parameter_counts()
    assert counts["trainable"] == counts["total"]
    ckpt = adapter.train([disk_sample(tmp_path)], [], tmp_path / "run", **SCHEDULE)
    blob = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert blob["variant"] == "tiny" and blob["train_scope"] == "all" and blob["pred_iou_thresh"] is None
    assert sum(t.numel() for t in blob["trained"].values()) == counts["total"]


def test_schema_and_missing_weights() -> None:
    cls = adapters.get("cellseg1")
    with pytest.raises(ConfigError, match="unknown key"):
        cls.build({"varient": "vit_b"})
    with pytest.raises(ConfigError, match="variant"):
        cls(variant="vit_x")
    with pytest.raises(MissingWeightsError, match="c6bench weights fetch sam_vit_b"):
        cls(weights="sam_vit_b")
    cls.check_schedule({"epochs": 1, "learning_rate": 1e-3})
    with pytest.raises(ConfigError, match="unknown key"):
        cls.check_schedule({"epoch": 1})
    assert {s.name for s in cls.weights} == {"sam_vit_b", "sam_vit_l", "sam_vit_h"}


def test_balanced_bce_gives_cell_and_background_pixels_equal_weight() -> None:
    """Why a random-init SAM needs it: with plain BCE one cell pixel in four gets a quarter of the gradient."""
    target = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    logits = torch.tensor([[[0.0, -100.0], [-100.0, -100.0]]])
    ln2 = float(np.log(2.0))
    assert mask_bce(logits, target, "bce").item() == pytest.approx(ln2 / 4, rel=1e-6)
    assert mask_bce(logits, target, "balanced_bce").item() == pytest.approx(ln2 / 2, rel=1e-6)  # 2 x ln2 / 4
    zero = torch.zeros(1, 2, 2, requires_grad=True)
    mask_bce(zero, target, "balanced_bce").backward()
    # weights 0.5/0.25 = 2 (cell) and 0.5/0.75 (background); d/dz = w (sigmoid(0) - t) / 4
    assert zero.grad[0, 0, 0].item() == pytest.approx(-0.25, rel=1e-6)
    assert zero.grad.sum().item() == pytest.approx(0.0, abs=1e-7)  # background total +0.25 balances it
    with pytest.raises(ConfigError, match="mask_loss"):
        mask_bce(logits, target, "focal")


def test_balanced_fraction_is_checked_and_used(tmp_path: Path) -> None:
    adapter = adapters.get("cellseg1")(**TINY)
    with pytest.raises(ConfigError, match="balanced_fraction"):
        adapter.train([disk_sample(tmp_path)], [], tmp_path / "run", **SCHEDULE, balanced_fraction=1.5)
    seen = []
    real = adapter._loss
    adapter._loss = lambda items, dice, kind: seen.append(kind) or real(items, dice, kind)
    adapter.train([disk_sample(tmp_path)], [], tmp_path / "run", **{**SCHEDULE, "epochs": 4},
                  balanced_fraction=0.5)
    assert seen == ["balanced_bce", "balanced_bce", "bce", "bce"]
