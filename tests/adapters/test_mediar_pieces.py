"""MEDIAR's pieces with exact expected values: its normalisation, cellpose flow targets, sliding windows and flip
TTA, mask recovery from ideal flows, the scale param, and augmented crops keeping image and labels aligned."""

from __future__ import annotations

import numpy as np
import pytest

from harness.errors import ConfigError
from harness.records import Sample

# mediar_helpers skips the module without smp or cellpose; own_weights_cache is an autouse fixture
from mediar_helpers import (  # noqa: F401
    ENCODER, own_weights_cache, train_sample,
)


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
