"""Priority resolution, label maps and YOLO export on synthetic shapes with exact pixel counts."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from harness.convert import (
    Resolution,
    instance_polygon,
    instances_from_label_map,
    join_parts,
    label_map,
    resolve_priority,
    write_yolo_dataset,
)
from harness.errors import DataError
from harness.masks import rasterize_polygons
from harness.records import Instance, Sample

H, W = 40, 50


def rect(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    """Axis-aligned rectangle polygon in pixel-corner coordinates: covers columns x0..x1-1, rows y0..y1-1."""
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64)


def poly(order: int, *parts: np.ndarray, category: str = "cell", h: int = H, w: int = W) -> Instance:
    return Instance(category=category, height=h, width=w, order=order, polygons=tuple(parts))


def areas(res: Resolution) -> dict[int, int]:
    return {i.order: i.area for i in res.instances}


def overlapping_squares() -> list[Instance]:
    return [poly(0, rect(0, 0, 10, 10)), poly(1, rect(5, 5, 15, 15))]


def nested(small_first: bool) -> list[Instance]:
    big, small = rect(0, 0, 20, 20), rect(8, 8, 12, 12)
    return [poly(0, small), poly(1, big)] if small_first else [poly(0, big), poly(1, small)]


@pytest.mark.parametrize(
    ("rule", "expected"),
    [("last", {0: 75, 1: 100}), ("first", {0: 100, 1: 75}), ("smallest", {0: 75, 1: 100})],
)
def test_overlapping_squares(rule: str, expected: dict[int, int]) -> None:
    res = resolve_priority(overlapping_squares(), H, W, rule=rule)
    assert areas(res) == expected
    assert res.dropped == [] and res.n_in == 2 and res.trimmed_pixels == 0


def test_nested_small_annotated_first() -> None:
    last = resolve_priority(nested(small_first=True), H, W, rule="last")
    assert areas(last) == {1: 400}
    assert last.dropped == [
        {
            "order": 0,
            "category": "cell",
            "pixels": 0,
            "reason": "hidden: fully covered by other instances (rule last)",
        }
    ]
    assert areas(resolve_priority(nested(small_first=True), H, W, rule="smallest")) == {0: 16, 1: 384}
    assert areas(resolve_priority(nested(small_first=True), H, W, rule="first")) == {0: 16, 1: 384}


def test_nested_big_annotated_first() -> None:
    assert areas(resolve_priority(nested(small_first=False), H, W, rule="last")) == {0: 384, 1: 16}
    first = resolve_priority(nested(small_first=False), H, W, rule="first")
    assert areas(first) == {0: 400} and [d["order"] for d in first.dropped] == [1]


def test_cut_instance_keeps_largest_piece() -> None:
    vertical = poly(0, rect(10, 0, 13, 20))  # 3 x 20 = 60 px
    horizontal = poly(1, rect(0, 8, 30, 11))  # 30 x 3 = 90 px, cuts rows 8..10 out of the vertical bar
    res = resolve_priority([vertical, horizontal], H, W, rule="last")
    kept = {i.order: i for i in res.instances}
    assert kept[0].area == 27 and kept[0].bbox == (11, 10, 20, 13)  # rows 11..19 beat rows 0..7 (24 px)
    assert kept[1].area == 90 and res.trimmed_pixels == 24


def test_min_pixels_drop_is_counted() -> None:
    tiny = poly(0, rect(30, 30, 33, 33))  # 9 px
    big = poly(1, rect(0, 0, 10, 10))
    res = resolve_priority([tiny, big], H, W, rule="last", min_pixels=10)
    assert areas(res) == {1: 100}
    assert res.dropped == [
        {"order": 0, "category": "cell", "pixels": 9, "reason": "below min_pixels=10 (9 px left, rule last)"}
    ]
    assert areas(resolve_priority([tiny, big], H, W, min_pixels=9)) == {0: 9, 1: 100}
    # partly covered and then too small: 10 px, 6 of them hidden -> 4 left
    part = resolve_priority([poly(0, rect(0, 0, 10, 1)), poly(1, rect(4, 0, 10, 5))], H, W, min_pixels=5)
    assert part.dropped[0]["reason"] == "below min_pixels=5 (4 px left of 10, rule last)"


def test_polygon_touching_border_is_clipped() -> None:
    inst = poly(0, rect(45, 35, 50, 40))  # the bottom-right corner, edges on the image border
    res = resolve_priority([inst], H, W)
    assert res.instances[0].area == 25 and res.instances[0].bbox == (35, 45, 40, 50)


def test_unknown_rule() -> None:
    with pytest.raises(DataError, match="unknown priority rule 'biggest'"):
        resolve_priority(overlapping_squares(), H, W, rule="biggest")


def test_label_map_and_back() -> None:
    sample = Sample(image_path=__file__, height=H, width=W, instances=tuple(nested(small_first=False)))
    labels, res = label_map(sample, rule="last")
    assert labels.dtype == np.int32 and labels.shape == (H, W)
    assert np.bincount(labels.ravel()).tolist() == [H * W - 400, 384, 16]
    assert labels[9, 9] == 2 and labels[0, 0] == 1
    back = instances_from_label_map(labels, "cell", scores={2: 0.5})
    assert [(i.order, i.area, i.score) for i in back] == [(0, 384, None), (1, 16, 0.5)]
    assert back[1].bbox == (8, 8, 12, 12)


def test_instances_from_label_map_skips_missing_labels_and_rejects_negative() -> None:
    labels = np.zeros((5, 5), dtype=np.int32)
    labels[1:3, 1:3] = 3
    out = instances_from_label_map(labels, "cell")
    assert len(out) == 1 and out[0].area == 4 and out[0].bbox == (1, 1, 3, 3)
    with pytest.raises(DataError, match="negative"):
        instances_from_label_map(labels - 1, "cell")


def test_join_parts_keeps_every_part_without_extra_pixels() -> None:
    a, b = rect(0, 0, 10, 10), rect(20, 0, 24, 4)
    ring = join_parts([b, a])
    assert len(ring) == 4 + 4 + 2
    _, _, crop = rasterize_polygons([ring], H, W)
    assert crop.sum() == 100 + 16


def test_mask_instance_outline_rasterises_back() -> None:
    crop = np.zeros((7, 9), dtype=bool)
    crop[1:6, 2:8] = True  # 5 x 6 = 30 px
    crop[3, 0] = True  # a second, single-pixel piece
    inst = Instance.from_mask("cell", 10, 20, crop, H, W)
    ring = instance_polygon(inst)
    y0, x0, back = rasterize_polygons([ring], H, W)
    assert (y0, x0) == (11, 20) and back.sum() == 31
    assert np.array_equal(back, inst.crop)


def test_write_yolo_dataset(tmp_path) -> None:  # noqa: ANN001
    import tifffile

    image = np.arange(H * W, dtype=np.uint16).reshape(H, W) * 30
    path = tmp_path / "img.tif"
    tifffile.imwrite(path, image)
    instances = (
        poly(0, rect(0, 0, 10, 10), rect(20, 0, 24, 4), category="a"),
        poly(1, rect(5, 5, 15, 15), category="b"),
    )
    sample = Sample(image_path=path, height=H, width=W, instances=instances, file_name="img.tif")
    data_yaml = write_yolo_dataset({"train": [sample], "valid": [sample]}, tmp_path / "yolo", ["a", "b"])
    data = yaml.safe_load(data_yaml.read_text())
    assert data == {
        "path": str((tmp_path / "yolo").resolve()),
        "train": "images/train",
        "val": "images/valid",
        "names": {0: "a", 1: "b"},
    }
    lines = (tmp_path / "yolo" / "labels" / "train" / "img.txt").read_text().splitlines()
    assert [ln.split()[0] for ln in lines] == ["0", "1"]
    assert len(lines[0].split()) == 1 + 2 * 10 and len(lines[1].split()) == 1 + 2 * 4
    assert lines[1] == "1 0.100000 0.125000 0.300000 0.125000 0.300000 0.375000 0.100000 0.375000"
    from PIL import Image

    png = np.asarray(Image.open(tmp_path / "yolo" / "images" / "valid" / "img.png"))
    assert png.dtype == np.uint8 and png.shape == (H, W) and png.min() == 0 and png.max() == 255
    with pytest.raises(DataError, match="not one of the YOLO classes"):
        write_yolo_dataset({"train": [sample]}, tmp_path / "bad", ["a"])


# --------------------------------------------------------------------------------------------- real sample


def _sample_image(sample_dir, split: str, file_name: str):  # noqa: ANN001, ANN202
    import json

    from harness.coco import load_coco

    path = sample_dir / "spec" / split / "annotations.coco.json"
    samples, _ = load_coco(path)
    sample = next(s for s in samples if s.file_name == file_name)
    rois = [
        a["roi_name"] for a in json.loads(path.read_text())["annotations"] if a["image_id"] == sample.image_id
    ]
    return sample, rois


def _union_area(sample: Sample) -> int:
    canvas = np.zeros((sample.height, sample.width), dtype=bool)
    for inst in sample.instances:
        y0, x0, y1, x1 = inst.bbox
        canvas[y0:y1, x0:x1] |= inst.crop
    return int(canvas.sum())


def test_set45_nested_cell(sample_dir) -> None:  # noqa: ANN001
    sample, rois = _sample_image(sample_dir, "test", "set45.tif")
    inner, outer = rois.index("0545-0489.roi"), rois.index("0549-0459.roi")
    assert (inner, outer, len(sample.instances)) == (54, 55, 91)
    assert (sample.instances[inner].area, sample.instances[outer].area) == (223, 3214)
    union = _union_area(sample)
    last = resolve_priority(sample.instances, sample.height, sample.width, rule="last")
    # the outer cell is annotated after the inner one and covers it: painter's order hides it
    assert len(last.instances) == 90
    assert last.dropped == [
        {
            "order": 54,
            "category": "cell",
            "pixels": 0,
            "reason": "hidden: fully covered by other instances (rule last)",
        }
    ]
    for rule in ("smallest", "first"):
        res = resolve_priority(sample.instances, sample.height, sample.width, rule=rule)
        kept = {i.order: i for i in res.instances}
        assert len(res.instances) == 91 and res.dropped == []
        assert kept[54].area == 223  # nothing smaller/earlier overlaps the inner cell: it keeps every pixel
        assert _pixels(kept[54]) & _pixels(kept[55]) == set()
    for rule in ("last", "first", "smallest"):  # every covered pixel is labelled once or cut off with a piece
        labels, res = label_map(sample, rule=rule)
        assert int((labels > 0).sum()) + res.trimmed_pixels == union
        assert labels.max() == len(res.instances)


def _pixels(inst: Instance) -> set[tuple[int, int]]:
    ys, xs = np.nonzero(inst.crop)
    return set(zip((ys + inst.bbox[0]).tolist(), (xs + inst.bbox[1]).tolist(), strict=True))


def test_set42_degenerate_roi(sample_dir) -> None:  # noqa: ANN001
    sample, rois = _sample_image(sample_dir, "train", "set42.tif")
    k = rois.index("0844-0443.roi")
    assert (k, sample.instances[k].area) == (75, 1)
    last = resolve_priority(sample.instances, sample.height, sample.width, rule="last")
    smallest = resolve_priority(sample.instances, sample.height, sample.width, rule="smallest")
    assert (len(last.instances), len(smallest.instances)) == (76, 76)
    assert last.dropped[0]["reason"] == "hidden: fully covered by other instances (rule last)"
    assert smallest.dropped == [
        {
            "order": 75,
            "category": "cell",
            "pixels": 1,
            "reason": "below min_pixels=10 (1 px left, rule smallest)",
        }
    ]
    assert (
        len(
            resolve_priority(
                sample.instances, sample.height, sample.width, "smallest", min_pixels=1
            ).instances
        )
        == 77
    )


def test_overlapping_pairs_match_pycocotools_iou(sample_dir) -> None:  # noqa: ANN001
    from pycocotools import mask as mask_utils

    from harness.coco import load_coco
    from harness.convert import overlapping_pairs

    samples, _ = load_coco(sample_dir / "spec" / "test" / "annotations.coco.json")
    ours = theirs = 0
    for sample in samples:
        rles = []
        for inst in sample.instances:  # one full mask at a time, encoded and dropped
            full = np.zeros((sample.height, sample.width), dtype=np.uint8, order="F")
            y0, x0, y1, x1 = inst.bbox
            full[y0:y1, x0:x1] = inst.crop
            rles.append(mask_utils.encode(full))
        iou = mask_utils.iou(rles, rles, [0] * len(rles))
        theirs += int((np.triu(iou, 1) > 0).sum())
        ours += len(overlapping_pairs(sample.instances))
    assert ours == theirs == 37


# --------------------------------------------------------------------------------------------- fixture

FIXTURE = __import__("pathlib").Path(__file__).resolve().parents[1] / "fixtures" / "glioma_mini"


def _fixture_t1() -> Sample:
    from harness.dataset import load_split, resolve_data

    return load_split(resolve_data(FIXTURE), "spec/train")[0]


def test_fixture_rules_exact() -> None:
    t1 = _fixture_t1()  # A1 324, A2 256 (36 shared with A1), S1 16 inside A1, B1 100 + 16, B2 64, B3 (RLE) 60
    assert [i.area for i in t1.instances] == [324, 256, 16, 116, 64, 60]
    last = resolve_priority(t1.instances, t1.height, t1.width, rule="last")
    assert areas(last) == {0: 324 - 36 - 16, 1: 256, 2: 16, 3: 100, 4: 64, 5: 60}
    assert last.trimmed_pixels == 16 and last.dropped == []  # B1 keeps its larger part only
    assert areas(resolve_priority(t1.instances, t1.height, t1.width, rule="smallest")) == areas(last)
    first = resolve_priority(t1.instances, t1.height, t1.width, rule="first")
    assert areas(first) == {0: 324, 1: 256 - 36, 3: 100, 4: 64, 5: 60}
    assert [(d["order"], d["reason"]) for d in first.dropped] == [
        (2, "hidden: fully covered by other instances (rule first)")
    ]


def test_fixture_yolo_lines(tmp_path) -> None:  # noqa: ANN001
    from harness.dataset import as_classes, load_split, resolve_data

    cfg = resolve_data(FIXTURE)
    train = as_classes(load_split(cfg, "spec/train"), cfg, "spec/train")
    write_yolo_dataset({"train": train}, tmp_path, list(cfg.classes))
    lines = (tmp_path / "labels" / "train" / "t1.txt").read_text().splitlines()
    assert [ln.split()[0] for ln in lines] == [
        "0",
        "0",
        "2",
        "1",
        "1",
        "1",
    ]  # type_a, type_a, soma, type_b x3
    assert len(lines[3].split()) == 1 + 2 * (4 + 4 + 2)  # two parts joined by a bridge
    rle_ring = np.array(lines[5].split()[1:], dtype=float).reshape(-1, 2) * [64, 48]
    _, _, back = rasterize_polygons([rle_ring], 48, 64)
    assert int(back.sum()) == 60  # the traced RLE outline rasterises back to the same 6 x 10 pixels
    assert (tmp_path / "labels" / "train" / "t2.txt").read_text().count("\n") == 2
