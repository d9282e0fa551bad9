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
from harness.coco import load_coco
from harness.errors import ConfigError, DataError, MissingWeightsError
from harness.flatten import flatten
from harness.records import Instance, Sample

torch = pytest.importorskip("torch")
pytest.importorskip("segment_anything")

from adapters._upstream.cellseg1 import amg, train  # noqa: E402
from adapters._upstream.cellseg1.amg import Candidate  # noqa: E402
from adapters._upstream.cellseg1.loss import mask_bce, prompt_loss  # noqa: E402
from adapters._upstream.cellseg1.nms import mask_iou_nms  # noqa: E402
from adapters._upstream.cellseg1.sam import build_sam, is_lora_key, parameter_counts, resize_sam_state  # noqa: E402
from adapters._upstream.cellseg1.tiles import make_tiles  # noqa: E402

SIZE = 128
TINY = dict(variant="tiny", image_size=SIZE, train_scope="lora", points_per_side=6, crop_n_layers=0,
            pred_iou_thresh=-1.0, stability_score_thresh=0.0, max_mask_region_area_ratio=1.0,
            min_mask_region_area=1)
SCHEDULE = dict(epochs=1, batch_size=2, grad_accumulation=1, duplicate_data=0, resize_size=SIZE, tile_size=SIZE,
                min_cell_area=5, edge_distance=2, threshold_grid=(0.0, 0.5), crop_layers_grid=(0,))
#: The contract test's tiny settings (tests/adapters/test_contract.py).
CONTRACT = {"params": TINY, "train": SCHEDULE}


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
    tiles = make_tiles([sample], SIZE, SIZE)
    rng = np.random.default_rng(0)
    items = [train.augment_tile(tiles[0], SIZE, rng, dict(max_points=30, neg_rate=0.5, min_cell_area=5,
                                                          edge_distance=2), augmentation=False)]
    assert items[0].positive.sum() == 6 and (~items[0].positive).sum() == 3
    adapter.model.train()
    prompt_loss(adapter.model, items, "cpu").backward()
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
    assert blob["selection"] == {}  # TINY fixes crop_n_layers and pred_iou_thresh: nothing to pick
    counts = parameter_counts(adapter.model)
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
    from adapters._upstream.cellseg1.select import pick_generator_settings

    sample = disk_sample(tmp_path)
    cands = []
    for inst in sample.instances:
        y0, x0, _, _ = inst.bbox
        cands.append(Candidate(y0, x0, inst.crop, 0.9, 1.0))
    for k in range(6):
        cands.append(Candidate(50 + 10 * (k % 2), 5 + 20 * k, np.ones((6, 6), bool), 0.6, 1.0))
    adapter = adapters.get("cellseg1")(**{**TINY, "pred_iou_thresh": None, "crop_n_layers": None})
    monkeypatch.setattr(amg, "candidates", lambda sam, work, gen, floor, layers, device:
                        [c for c in cands if c.iou >= floor])
    picked = pick_generator_settings(adapter, [sample], [0], (0.5, 0.7, 0.95))
    assert (picked["crop_n_layers"], picked["pred_iou_thresh"], picked["f1"]) == (0, 0.7, 1.0)
    assert picked["scores"]["0/0.5"] == pytest.approx(2 / 3)
    assert pick_generator_settings(adapter, [sample], [0], (0.95,)) is None
    assert adapter.iou_thresh == 0.8 and adapter.n_layers == 1  # CellSeg1's values until something is picked


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
    assert adapter.run_note == " (SAM at 128 px, untrained LoRA = plain SAM, CellSeg1 generator)"

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
    counts = parameter_counts(adapter.model)
    assert counts["trainable"] == counts["total"]
    ckpt = adapter.train([disk_sample(tmp_path)], [], tmp_path / "run", **SCHEDULE)
    blob = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert blob["variant"] == "tiny" and blob["train_scope"] == "all" and blob["selection"] == {}
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
    assert {s.name for s in cls.weights} == {"sam_vit_b", "sam_vit_l", "sam_vit_h", "cellseg1_cellpose_specialized",
                                             "cellseg1_cellseg_blood", "cellseg1_deepbacs_rod_brightfield",
                                             "cellseg1_deepbacs_rod_fluorescence", "cellseg1_dsb2018_stardist"}


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


def test_balanced_fraction_is_checked_and_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    adapter = adapters.get("cellseg1")(**TINY)
    with pytest.raises(ConfigError, match="balanced_fraction"):
        adapter.train([disk_sample(tmp_path)], [], tmp_path / "run", **SCHEDULE, balanced_fraction=1.5)
    seen = []
    real = prompt_loss
    monkeypatch.setattr("adapters._upstream.cellseg1.loss.prompt_loss",
                        lambda sam, items, device, dice, kind: seen.append(kind) or real(sam, items, device, dice, kind))
    adapter.train([disk_sample(tmp_path)], [], tmp_path / "run", **{**SCHEDULE, "epochs": 4},
                  balanced_fraction=0.5)
    assert seen == ["balanced_bce", "balanced_bce", "bce", "bce"]


# ------------------------------------------------------------------ recipe fidelity (issue 14)


def test_an_epoch_is_one_pass_over_all_tiles_duplicated_to_32(tmp_path: Path, monkeypatch) -> None:
    """128 px squashed, 64-px tiles: ceil(2·128/64) = 4 per side → 16 tiles, < 32 → ×3 = 48 samples per epoch,
    12 batches of 4, a step every 8 batches and at the epoch's end → 2 steps per epoch; 3 epochs = 6 steps, and
    OneCycleLR over CellSeg1's 3·(12+7)//8 = 7. (Before: 300 "epochs" were 300 steps whatever the data.)"""
    from collections import Counter

    from torch.optim.optimizer import register_optimizer_step_post_hook

    steps, totals, drawn = [], [], Counter()
    hook = register_optimizer_step_post_hook(lambda opt, args, kwargs: steps.append(1))
    real_cycle = torch.optim.lr_scheduler.OneCycleLR.__init__

    def cycle(self, *args, **kwargs):
        totals.append(kwargs["total_steps"])
        real_cycle(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.lr_scheduler.OneCycleLR, "__init__", cycle)
    adapter = adapters.get("cellseg1")(**{**TINY, "image_size": 64})
    real_tile = train.augment_tile
    monkeypatch.setattr(train, "augment_tile", lambda tile, *a: drawn.update([id(tile[1])]) or real_tile(tile, *a))
    schedule = dict(SCHEDULE, epochs=3, batch_size=4, grad_accumulation=8, duplicate_data=32, tile_size=64)
    try:
        ckpt = adapter.train([disk_sample(tmp_path)], [], tmp_path / "run", **schedule)
    finally:
        hook.remove()
    blob = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert (len(steps), blob["optimizer_steps"], blob["batches"], totals) == (6, 6, 36, [7])
    assert (blob["tiles"], blob["samples_per_epoch"]) == (16, 48)
    assert len(drawn) == 16 and set(drawn.values()) == {9}  # every tile 3 times per epoch
    assert adapter.schedule_size(schedule, 1) == (6, 144)

    # a rehearsal: the same recipe cut to 3 optimiser steps (2 in epoch 1, 1 in epoch 2), 48 + 8·4 tiles
    rehearsal = adapter.rehearsal_schedule(schedule, 3)
    steps.clear()
    drawn.clear()
    hook = register_optimizer_step_post_hook(lambda opt, args, kwargs: steps.append(1))
    try:
        adapter.train([disk_sample(tmp_path)], [], tmp_path / "rehearse", **rehearsal)
    finally:
        hook.remove()
    assert len(steps) == 3 and sum(drawn.values()) == 80 == adapter.schedule_size(rehearsal, 1)[1]


def test_schedule_size_of_the_paper_profile() -> None:
    """Glioma C6: 30 training images → 480 tiles → 120 batches → 15 steps per epoch → 4,500 steps."""
    from adapters._upstream.cellseg1.tiles import EpochPlan, tile_starts
    from harness.config import load_model_config

    cls = adapters.get("cellseg1")
    paper = load_model_config("cellseg1", "paper").train
    assert tile_starts(512, 256) == [0, 85, 170, 256]  # cellpose make_tiles, tile_overlap 0.5
    assert cls.schedule_size(paper, 30) == (4500, 300 * 480)
    assert cls.schedule_size(paper, 1) == (600, 300 * 48)  # 16 tiles x 3 = 48 samples, 12 batches, 2 steps
    assert EpochPlan(480, 4, 8).scheduler_steps(300) == 300 * 127 // 8 == 4762
    assert cls.schedule_size(cls.rehearsal_schedule(paper, 2), 1) == (2, 48)


def test_paper_profile_uses_the_authors_backbone_and_zero_shot_baseline() -> None:
    """example_config.yaml: vit_h + sam_vit_h; the zero-shot row is plain SAM's own generator (the paper's)."""
    from harness.config import load_model_config

    paper = load_model_config("cellseg1", "paper")
    assert paper.params["variant"] == "vit_h" and paper.finetune_init == ("sam_vit_h",)
    assert paper.zero_shot_weights == "sam_vit_h" and paper.zero_shot_params == {"generator": "sam"}
    assert load_model_config("cellseg1", "quick").params["variant"] == "vit_b"  # vit_b stays an option


def test_training_squashes_like_prediction_on_a_non_square_image(tmp_path: Path) -> None:
    """A 96×128 image with one 48×32 (h×w) cell, resize_size 64: the training tile is the whole image squashed
    to 64×64 (cell rows 16..48, cols 16..32), as prediction squashes it; masks map back to the cell's box."""
    import tifffile

    image = np.zeros((96, 128), np.uint16)
    image[24:72, 32:64] = 500
    tifffile.imwrite(tmp_path / "rect.tif", image)
    poly = np.array([[32, 24], [64, 24], [64, 72], [32, 72]], float)
    sample = Sample(tmp_path / "rect.tif", 96, 128, (Instance("cells", 96, 128, polygons=(poly,)),), file_name="r")
    (tile,) = make_tiles([sample], 64, 64)
    rgb, labels = tile
    assert rgb.shape == (64, 64, 3) and labels.shape == (64, 64)
    rows, cols = np.nonzero(labels)
    assert (rows.min(), rows.max() + 1, cols.min(), cols.max() + 1) == (16, 48, 16, 32)
    assert rgb[20, 20, 0] == 255.0 and rgb[5, 5, 0] == 0.0
    (inst,) = amg.to_instances([Candidate(16, 16, np.ones((32, 16), bool), 0.9, 1.0)], 64, 96, 128, "cell")
    assert inst.bbox == (24, 32, 72, 64)


def test_training_tiles_paint_the_samples_the_harness_flattened(sample_dir: Path) -> None:
    """A real sample with overlapping annotations: tiles of the flattened sample carry exactly the squashed
    label map of the shared rule (`label_map`, numbering too); an overlap left in is an error, not re-settled."""
    from adapters._upstream.cellseg1 import tiles as tiling
    from harness.convert import label_map

    raw = load_coco(sample_dir / "spec" / "train" / "annotations.coco.json")[0][0]
    image = tiling.to_rgb_float(raw.load_image())
    expected = tiling.cut_tiles(*tiling.squash(image, label_map(raw, "last", 10)[0], 512), 256)
    got = make_tiles(flatten([raw], "last", 10, "train"), 512, 256)
    assert len(got) == len(expected) == 16
    assert all(np.array_equal(g[1], e[1]) and g[1].dtype == e[1].dtype for g, e in zip(got, expected, strict=True))
    with pytest.raises(DataError, match="overlap; flatten the samples first"):
        make_tiles([raw], 512, 256)


def test_position_embedding_resize_uses_align_corners_as_cellseg1() -> None:
    """pos_embed[y, x] = 64 y + x on the 64-token grid → 8 tokens: token i sits at 64-grid position 9 i
    (align_corners=True: i · 63/7), so the value is 576 i + 9 j exactly; the global rel_pos table row r of
    127 → 15 rows takes row 9 r. (align_corners=False gave 512 i + 8 j + 227.5.)"""
    big = build_sam("tiny", 1024)
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    state = big.state_dict()
    state["image_encoder.pos_embed"] = (64 * yy + xx)[None, :, :, None].repeat(1, 1, 1, 64)
    state["image_encoder.blocks.1.attn.rel_pos_h"] = torch.arange(127.0)[:, None].repeat(1, 32)
    out = resize_sam_state(state, build_sam("tiny", SIZE))
    i, j = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
    assert torch.allclose(out["image_encoder.pos_embed"][0, :, :, 5], 576 * i + 9 * j, atol=1e-3)
    assert torch.allclose(out["image_encoder.blocks.1.attn.rel_pos_h"][:, 0], 9 * torch.arange(15.0), atol=1e-4)


def test_crop_layers_and_threshold_are_picked_together_and_recorded(tmp_path: Path, monkeypatch, caplog) -> None:
    """Layer 0 finds 3 disks (IoU 0.9), layer 1 the other 3 (0.75), layer 2 adds 3 junk squares (0.9):
    F1 is 2/3 at 0 layers, 1.0 at 1 layer with a cut <= 0.75, 0.8 at 2 layers → (1, 0.7), the higher tied cut."""
    import logging

    sample = disk_sample(tmp_path)
    cands = [Candidate(*i.bbox[:2], i.crop, 0.9 if k < 3 else 0.75, 1.0, layer=0 if k < 3 else 1)
             for k, i in enumerate(sample.instances)]
    cands += [Candidate(50 + 10 * (k % 2), 5 + 20 * k, np.ones((6, 6), bool), 0.9, 1.0, layer=2) for k in range(3)]
    cls = adapters.get("cellseg1")
    adapter = cls(**{**TINY, "crop_n_layers": None, "pred_iou_thresh": None})
    seen = []
    monkeypatch.setattr(amg, "candidates", lambda sam, work, gen, floor, layers, device:
                        seen.append((floor, layers)) or [c for c in cands if c.iou >= floor and c.layer <= layers])
    with caplog.at_level(logging.INFO, logger="adapters._upstream.cellseg1.select"):
        ckpt = adapter.train([sample], [sample], tmp_path / "run",
                             **dict(SCHEDULE, crop_layers_grid=(0, 1, 2), threshold_grid=(0.5, 0.7, 0.8)))
    assert seen == [(0.5, 2)]  # the model runs once, at the largest setting
    blob = torch.load(ckpt, map_location="cpu", weights_only=True)
    sel = blob["selection"]
    assert (sel["crop_n_layers"], sel["pred_iou_thresh"], sel["f1"]) == (1, 0.7, 1.0)
    assert sel["scores"] == pytest.approx({"0/0.8": 2 / 3, "0/0.7": 2 / 3, "0/0.5": 2 / 3, "1/0.8": 2 / 3,
                                           "1/0.7": 1.0, "1/0.5": 1.0, "2/0.8": 0.5, "2/0.7": 0.8, "2/0.5": 0.8})
    assert "picked crop_n_layers 1, pred_iou_thresh 0.70" in caplog.text
    fresh = cls(**{**TINY, "crop_n_layers": None, "pred_iou_thresh": None})
    assert (fresh.n_layers, fresh.iou_thresh) == (1, 0.8)
    fresh.load(ckpt)
    assert (fresh.n_layers, fresh.iou_thresh, fresh.work_size) == (1, 0.7, SIZE)
