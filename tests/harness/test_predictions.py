"""RLE from crops equals pycocotools' encoding of the full mask; predictions round-trip through load_coco."""

from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils

from harness.coco import load_coco
from harness.masks import crop_to_rle
from harness.predictions import label_image, write_predictions
from harness.records import Instance, Sample


def _full(inst: Instance) -> np.ndarray:
    full = np.zeros((inst.height, inst.width), dtype=np.uint8)
    y0, x0, y1, x1 = inst.bbox
    full[y0:y1, x0:x1] = inst.crop
    return full


def test_crop_rle_equals_pycocotools_on_random_masks() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        h, w = rng.integers(5, 40, size=2)
        crop = rng.random((rng.integers(1, h + 1), rng.integers(1, w + 1))) > 0.5
        y0, x0 = rng.integers(0, h - crop.shape[0] + 1), rng.integers(0, w - crop.shape[1] + 1)
        if not crop.any():
            continue
        inst = Instance.from_mask("c", int(y0), int(x0), crop, int(h), int(w))
        expected = mask_utils.encode(np.asfortranarray(_full(inst)))
        assert crop_to_rle(inst)["counts"] == expected["counts"].decode()


def test_predictions_round_trip(tmp_path) -> None:
    crop_a = np.ones((3, 4), dtype=bool)
    crop_b = np.array([[1, 0], [1, 1]], dtype=bool)
    a = Instance.from_mask("cells", 1, 2, crop_a, 10, 12, score=0.9)
    b = Instance.from_mask("cells", 2, 3, crop_b, 10, 12, score=0.4)  # overlaps a
    sample = Sample(image_path=tmp_path / "x.tif", height=10, width=12, instances=(a, b), image_id=7, file_name="x.tif")
    path = write_predictions(tmp_path / "p.json", [sample], ["cells"])
    (back,), cats = load_coco(path)
    assert cats == {1: "cells"} and back.file_name == "x.tif" and back.image_id == 7
    assert [i.bbox for i in back.instances] == [(1, 2, 4, 6), (2, 3, 4, 5)]
    assert [i.area for i in back.instances] == [12, 3] and [i.score for i in back.instances] == [0.9, 0.4]
    labels = label_image(back)
    assert labels[2, 3] == 1 and labels[3, 4] == 1 and labels[3, 3] == 1  # higher score painted last wins
    assert (labels > 0).sum() == 12


def test_an_empty_prediction_file_says_so_and_is_no_annotation_gap(tmp_path, caplog) -> None:
    """A model that found nothing: not 'image … has no annotations' per image (a data warning), one line."""
    import logging

    blank = [Sample(image_path=tmp_path / f"{n}.tif", height=10, width=12, image_id=k, file_name=f"{n}.tif")
             for k, n in enumerate(("a", "b"), start=1)]
    path = write_predictions(tmp_path / "p.json", blank, ["cells"])
    warnings: list[str] = []
    with caplog.at_level(logging.INFO, logger="harness.coco"):
        samples, _ = load_coco(path, warnings=warnings, predictions=True)
    assert [s.instances for s in samples] == [(), ()] and warnings == []
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        f"{path}: an empty prediction: no instance predicted on any of its 2 image(s); every image counts as "
        "predicting nothing"]
    assert "has no annotations" not in caplog.text
    one = write_predictions(tmp_path / "q.json", [blank[0].with_instances(
        [Instance.from_mask("cells", 1, 1, np.ones((2, 2), bool), 10, 12, score=0.5)]), blank[1]], ["cells"])
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="harness.coco"):
        load_coco(one, predictions=True)
    assert f"{one}: no instance predicted on 1 of 2 image(s)" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    load_coco(one, warnings=warnings)  # as annotations, the same image is a gap
    assert warnings == [f"{one}: image id 2 ('b.tif') has no annotations"]
