"""CellSeg1 zero-shot: the authors' released LoRA files (converted from their layout) and plain SAM's own generator.

Released-layout files are built by `tests/fixtures/cellseg1_lora.py` from CellSeg1's LoRA_Sam construction order
(random values), never by the adapter; the converted model is checked against the same deltas merged into plain
SAM's weights by hand.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import adapters
from harness.errors import ConfigError

torch = pytest.importorskip("torch")
pytest.importorskip("segment_anything")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures"))
from cellseg1_lora import layout_sam, released_layout, write_released_lora  # noqa: E402

from adapters._upstream.cellseg1.checkpoint import save as save_checkpoint  # noqa: E402
from adapters._upstream.cellseg1.released import load_released_lora  # noqa: E402
from adapters._upstream.cellseg1.sam import add_lora, build_sam, decode, embed  # noqa: E402

SIZE = 128
PARAMS = dict(variant="tiny", image_size=SIZE, points_per_side=4, crop_n_layers=0)


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def base(tmp_path: Path) -> tuple[Path, torch.nn.Module]:
    """A random tiny SAM saved as a SAM state-dict file, and the module itself."""
    torch.manual_seed(0)
    sam = build_sam("tiny", SIZE)
    path = tmp_path / "sam_tiny.pth"
    torch.save(sam.state_dict(), path)
    return path, sam


def merged_by_hand(base_path: Path, lora: dict[str, torch.Tensor]) -> torch.nn.Module:
    """Plain SAM with each released delta B·A added to the weight it adapts, and the file's other tensors."""
    ref = build_sam("tiny", SIZE)
    ref.load_state_dict(torch.load(base_path, weights_only=True))
    with torch.no_grad():
        for i, blk in enumerate(ref.image_encoder.blocks):
            c = blk.attn.qkv.in_features
            blk.attn.qkv.weight[:c] += lora[f"w_b_{2 * i:03d}"] @ lora[f"w_a_{2 * i:03d}"]
            blk.attn.qkv.weight[2 * c:] += lora[f"w_b_{2 * i + 1:03d}"] @ lora[f"w_a_{2 * i + 1:03d}"]
        for n, layer in enumerate(ref.mask_decoder.transformer.layers):
            for tag, attn in (("sa", layer.self_attn), ("cti", layer.cross_attn_token_to_image),
                              ("cit", layer.cross_attn_image_to_token)):
                attn.q_proj.weight += lora[f"{tag}_b_{2 * n:03d}"] @ lora[f"{tag}_a_{2 * n:03d}"]
                attn.v_proj.weight += lora[f"{tag}_b_{2 * n + 1:03d}"] @ lora[f"{tag}_a_{2 * n + 1:03d}"]
        final = ref.mask_decoder.transformer.final_attn_token_to_image
        final.q_proj.weight += lora["fati_qb"] @ lora["fati_qa"]
        final.v_proj.weight += lora["fati_vb"] @ lora["fati_va"]
    state = ref.state_dict()
    state.update({k: v for k, v in lora.items() if k.startswith(("prompt_encoder.", "mask_decoder."))})
    ref.load_state_dict(state)
    return ref.eval()


def reference_outputs(sam: torch.nn.Module, image: np.ndarray, points: np.ndarray) -> tuple[torch.Tensor, ...]:
    with torch.no_grad():
        x = (torch.as_tensor(image).permute(2, 0, 1)[None] - sam.pixel_mean) / sam.pixel_std
        emb = sam.image_encoder(x)
        pts = torch.as_tensor(points)[:, None, :]
        sparse, dense = sam.prompt_encoder(points=(pts, torch.ones(len(points), 1, dtype=torch.int64)),
                                           boxes=None, masks=None)
        logits, iou = sam.mask_decoder(image_embeddings=emb, image_pe=sam.prompt_encoder.get_dense_pe(),
                                       sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                       multimask_output=False)
    return logits[:, 0], iou[:, 0]


def adapter_outputs(adapter, image: np.ndarray, points: np.ndarray) -> tuple[torch.Tensor, ...]:
    with torch.no_grad():
        return decode(adapter.model, embed(adapter.model, image[None], "cpu"), torch.as_tensor(points))


def test_released_lora_equals_its_deltas_merged_into_plain_sam(base, tmp_path: Path) -> None:
    base_path, sam = base
    lora_path = tmp_path / "cellpose_specialized_12.pth"
    lora = write_released_lora(lora_path, "tiny", SIZE, sam=sam)
    cls = adapters.get("cellseg1")
    adapter = cls(weights=str(base_path), lora_checkpoint=str(lora_path), **PARAMS)
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 255, (SIZE, SIZE, 3)).astype(np.float32)
    points = rng.uniform(0, SIZE, (5, 2)).astype(np.float32)
    logits, iou = adapter_outputs(adapter, image, points)
    ref_logits, ref_iou = reference_outputs(merged_by_hand(base_path, lora), image, points)
    assert torch.allclose(logits, ref_logits, atol=1e-4, rtol=1e-4) and torch.allclose(iou, ref_iou, atol=1e-5)
    plain_logits, _ = adapter_outputs(cls(weights=str(base_path), **PARAMS), image, points)
    assert (plain_logits - ref_logits).abs().max() > 1e-2  # the file changed the network
    assert adapter.run_note == f" + LoRA {lora_path} (CellSeg1 generator at {SIZE} px)"

    # a checkpoint saved on top of a released LoRA reloads it (the trained-tensor list holds LoRA only)
    save_checkpoint(adapter, tmp_path / "ck.pt")
    fresh = cls(**PARAMS)
    fresh.load(tmp_path / "ck.pt")
    again, _ = adapter_outputs(fresh, image, points)
    assert torch.equal(again, logits)


def test_vit_h_layout_converts_onto_the_vit_h_model(tmp_path: Path) -> None:
    """The authors' files are ViT-H LoRAs: 64 w_a (32 blocks x q, v) of (4, 1280), 12 decoder pairs, 4 fati and
    the prompt-encoder / mask-decoder tensors. The image encoder exists as shapes only (meta device)."""
    state = released_layout(layout_sam("vit_h"), seed=3)
    assert sum(k.startswith("w_a_") for k in state) == 64 and state["w_a_063"].shape == (4, 1280)
    assert sum(k.startswith(("sa_", "cti_", "cit_")) for k in state) == 24
    path = tmp_path / "vit_h_lora.pth"
    torch.save(state, path)
    model = layout_sam("vit_h")
    add_lora(model, 4, 0.1)
    load_released_lora(model, path, "vit_h", 4)
    qkv = model.image_encoder.blocks[31].attn.qkv
    assert torch.equal(qkv.a_v.weight, state["w_a_063"]) and torch.equal(qkv.b_q.weight, state["w_b_062"])
    layer1 = model.mask_decoder.transformer.layers[1]
    assert torch.equal(layer1.cross_attn_image_to_token.v_proj.b.weight, state["cit_b_003"])
    assert torch.equal(model.mask_decoder.transformer.final_attn_token_to_image.q_proj.a.weight, state["fati_qa"])
    key = "mask_decoder.iou_prediction_head.layers.2.weight"
    assert torch.equal(model.state_dict()[key], state[key])


def test_foreign_and_mismatched_files_are_clear_config_errors(base, tmp_path: Path) -> None:
    base_path, sam = base
    cls = adapters.get("cellseg1")
    with pytest.raises(ConfigError, match=r"sam_tiny.pth: not a CellSeg1 LoRA file \(no w_a_000 / fati_qa keys; "
                                          r"it has image_encoder"):
        cls(weights=str(base_path), lora_checkpoint=str(base_path), **PARAMS).model  # noqa: B018
    own = tmp_path / "own.pt"
    save_checkpoint(cls(weights=str(base_path), **PARAMS), own)
    with pytest.raises(ConfigError, match="checkpoint of this harness: use it as a fine-tuned checkpoint"):
        cls(weights=str(base_path), lora_checkpoint=str(own), **PARAMS).model  # noqa: B018
    text = tmp_path / "notes.pth"
    text.write_text("hello")
    with pytest.raises(ConfigError, match="notes.pth: not a CellSeg1 LoRA file .torch cannot read it"):
        cls(weights=str(base_path), lora_checkpoint=str(text), **PARAMS).model  # noqa: B018
    vit_b = tmp_path / "vit_b_lora.pth"
    torch.save(released_layout(layout_sam("vit_b")), vit_b)
    with pytest.raises(ConfigError, match="a LoRA for SAM vit_b, the model is SAM tiny; set params.variant: vit_b"):
        cls(weights=str(base_path), lora_checkpoint=str(vit_b), **PARAMS).model  # noqa: B018
    rank2 = tmp_path / "rank2.pth"
    write_released_lora(rank2, "tiny", SIZE, rank=2, sam=sam)
    with pytest.raises(ConfigError, match="LoRA rank 2, the adapter has lora_rank 4; set params.lora_rank: 2"):
        cls(weights=str(base_path), lora_checkpoint=str(rank2), **PARAMS).model  # noqa: B018
    broken = tmp_path / "broken.pth"
    state = released_layout(sam)
    del state["cti_b_002"], state["mask_decoder.iou_token.weight"]
    torch.save(state, broken)
    with pytest.raises(ConfigError, match=r"missing \['cti_b_002', 'mask_decoder.iou_token.weight'\]"):
        cls(weights=str(base_path), lora_checkpoint=str(broken), **PARAMS).model  # noqa: B018
    with pytest.raises(ConfigError, match="needs the SAM base it was trained on"):
        cls(lora_checkpoint=str(broken), **PARAMS)
    with pytest.raises(ConfigError, match="generator 'sam' is plain SAM"):
        cls(weights=str(base_path), lora_checkpoint=str(broken), **{**PARAMS, "generator": "sam"})


def test_released_files_are_known_weights_with_the_authors_urls() -> None:
    from harness import weights

    spec = weights.spec("cellseg1_cellpose_specialized")
    assert spec.adapter == "cellseg1" and spec.file == "cellseg1/cellpose_specialized_12.pth"
    assert spec.url == ("https://raw.githubusercontent.com/hotaru1227/cellseg1/main/checkpoints/"
                        "cellpose_specialized_12.pth")
    assert "sam_vit_h" in spec.description


# ------------------------------------------------------------------ plain SAM, SAM's generator (the paper's baseline)


def confident_sam_file(tmp_path: Path) -> Path:
    """A tiny SAM at 1024 px whose IoU head says 1.0 and whose mask logits are far from 0 (stable), so SAM's
    own thresholds (0.88 / 0.95) keep a mask."""
    torch.manual_seed(1)
    sam = build_sam("tiny", 1024)
    with torch.no_grad():
        head = sam.mask_decoder.iou_prediction_head.layers[-1]
        head.weight.zero_()
        head.bias.fill_(1.0)
        for mlp in sam.mask_decoder.output_hypernetworks_mlps:
            mlp.layers[-1].weight.mul_(200.0)
    path = tmp_path / "sam_tiny_1024.pth"
    torch.save(sam.state_dict(), path)
    return path


def test_zero_shot_plain_sam_calls_sams_generator_with_its_defaults(tmp_path: Path, monkeypatch) -> None:
    """generator 'sam': SAM's own SamAutomaticMaskGenerator, built with no arguments (SAM's defaults) on the
    1024-px model from the file, given the image squashed to 128 px as uint8; its masks come back at full size
    (a 32×32 box at work (16, 8) → rows ×1.5, cols ×3: (24, 24, 72, 120) on a 192×384 image), scored by predicted_iou."""
    import segment_anything

    calls = []

    class FakeGenerator:
        def __init__(self, model, **kwargs):
            calls.append(("init", model, kwargs))

        def generate(self, image):
            calls.append(("generate", image))
            seg = np.zeros(image.shape[:2], bool)
            seg[16:48, 8:40] = True
            return [{"segmentation": seg, "predicted_iou": 0.93, "stability_score": 0.97}]

    monkeypatch.setattr(segment_anything, "SamAutomaticMaskGenerator", FakeGenerator)
    path = confident_sam_file(tmp_path)
    adapter = adapters.get("cellseg1")(weights=str(path), variant="tiny", image_size=SIZE, generator="sam")
    assert adapter.run_note == f" (plain SAM, SamAutomaticMaskGenerator defaults at 1024 px, image squashed to {SIZE} px)"
    image = np.random.default_rng(0).integers(0, 4000, (192, 384)).astype(np.uint16)
    (inst,) = adapter.predict(image)
    (_, model, kwargs), (_, given) = calls
    assert kwargs == {} and model.image_encoder.img_size == 1024 and not model.training
    file = torch.load(path, weights_only=True)
    assert all(torch.equal(v, file[k]) for k, v in model.state_dict().items())
    import cv2

    gray = ((image - image.min()) / (image.max() - image.min()) * 255.0).astype(np.float32)
    squashed = cv2.resize(gray, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR).round().astype(np.uint8)
    assert given.dtype == np.uint8 and given.shape == (SIZE, SIZE, 3)
    assert np.abs(given[..., 0].astype(int) - squashed).max() <= 1 and (given[..., 2] == given[..., 0]).all()
    assert inst.bbox == (24, 24, 72, 120) and inst.area == 48 * 96 and inst.score == pytest.approx(0.93)
    with pytest.raises(ConfigError, match="not trained"):
        adapter.train([], [], tmp_path / "run")


@pytest.mark.slow
def test_zero_shot_plain_sam_matches_a_direct_generator_run(tmp_path: Path) -> None:
    """The real generator with SAM's defaults (32×32 points, masks at 1024 px: minutes on CPU), both ways."""
    from segment_anything import SamAutomaticMaskGenerator

    from harness.masks import tighten

    path = confident_sam_file(tmp_path)
    adapter = adapters.get("cellseg1")(weights=str(path), variant="tiny", image_size=SIZE, generator="sam")
    image = np.random.default_rng(0).integers(0, 4000, (SIZE, SIZE)).astype(np.uint16)
    got = adapter.predict(image)
    ref = build_sam("tiny", 1024)
    ref.load_state_dict(torch.load(path, weights_only=True))
    gray = ((image - image.min()) / (image.max() - image.min()) * 255.0).astype(np.float32)
    records = SamAutomaticMaskGenerator(ref.eval()).generate(np.repeat(gray[..., None], 3, -1).round().astype(np.uint8))
    assert records
    expected = sorted((tighten(0, 0, r["segmentation"])[:2], round(r["predicted_iou"], 6)) for r in records)
    assert sorted((inst.bbox[:2], round(inst.score, 6)) for inst in got) == expected
