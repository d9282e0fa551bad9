"""harness.images and harness.coco: image variants and bad image files, every kind of bad COCO input (file + item
named), counted warnings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
from pycocotools import mask as mask_utils

from harness.coco import load_coco
from harness.errors import DataError
from harness.images import normalize_percentile, read_image, to_gray, to_uint8

H, W = 20, 30

# --------------------------------------------------------------------------------------------- images


def test_read_image_variants(tmp_path: Path) -> None:
    from PIL import Image

    gray16 = np.arange(H * W, dtype=np.uint16).reshape(H, W) * 100
    tifffile.imwrite(tmp_path / "g.tif", gray16)
    assert read_image(tmp_path / "g.tif").dtype == np.uint16
    rgba = np.zeros((H, W, 4), np.uint8)
    rgba[..., 0] = 90
    Image.fromarray(rgba).save(tmp_path / "c.png")
    rgb = read_image(tmp_path / "c.png")
    assert rgb.shape == (H, W, 3)
    assert to_gray(rgb)[0, 0] == pytest.approx(30.0)
    tifffile.imwrite(tmp_path / "planar.tif", np.zeros((3, H, W), np.uint8))
    assert read_image(tmp_path / "planar.tif").shape == (H, W, 3)
    u8 = to_uint8(gray16)
    assert u8.dtype == np.uint8 and u8.min() == 0 and u8.max() == 255
    norm = normalize_percentile(np.array([[0, 100]], dtype=np.uint16), 0, 100)
    assert norm.tolist() == [[0.0, 1.0]] and norm.dtype == np.float32
    odd = normalize_percentile(np.array([[0, 1, 2, 7]], dtype=np.uint16))  # percentiles 0.03 and 6.85
    assert odd.dtype == np.float32  # float64 under NumPy 2 before: the percentiles promoted it
    np.testing.assert_array_equal(odd, np.float32((np.float32([[0, 1, 2, 7]]) - 0.03) / (6.85 - 0.03)))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "image file not found"),
        (b"", "image file is empty \\(0 bytes\\)"),
        (b"II*\x00garbage", "cannot decode image"),
    ],
)
def test_read_image_bad_files(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "bad.tif"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataError, match=f"bad.tif: {message}"):
        read_image(path)


# --------------------------------------------------------------------------------------------- COCO


def coco(**overrides: Any) -> dict[str, Any]:
    data = {
        "images": [
            {"id": 1, "file_name": "a.tif", "width": W, "height": H},
            {"id": 2, "file_name": "b.tif", "width": W, "height": H},
        ],
        "categories": [{"id": 7, "name": "cell"}, {"id": 8, "name": "soma"}],
        "annotations": [
            {"id": 11, "image_id": 1, "category_id": 7, "segmentation": [[1, 1, 9, 1, 9, 9, 1, 9]]},
            {"id": 12, "image_id": 1, "category_id": 8, "segmentation": [[2, 2, 4, 2, 4, 4]]},
            {"id": 13, "image_id": 2, "category_id": 7, "segmentation": [[0, 0, 5, 0, 5, 5, 0, 5]]},
        ],
    }
    data.update(overrides)
    return data


def write(tmp_path: Path, data: Any, text: str | None = None) -> Path:
    path = tmp_path / "ann.json"
    path.write_text(text if text is not None else json.dumps(data))
    for name in ("a.tif", "b.tif"):
        tifffile.imwrite(tmp_path / name, np.zeros((H, W), np.uint8))
    return path


def ann(k: int, **changes: Any) -> dict[str, Any]:
    """`coco()` with annotation k changed (a value of None deletes the key)."""
    data = coco()
    entry = data["annotations"][k]
    for key, value in changes.items():
        if value is None:
            entry.pop(key)
        else:
            entry[key] = value
    return data


def test_load_coco_good(tmp_path: Path) -> None:
    warnings: list[str] = []
    samples, cats = load_coco(write(tmp_path, coco()), warnings=warnings)
    assert cats == {7: "cell", 8: "soma"} and warnings == []
    assert [len(s.instances) for s in samples] == [2, 1]
    a = samples[0]
    assert a.image_path == tmp_path / "a.tif" and a.name == "a"
    assert [(i.category, i.order, i.area) for i in a.instances] == [("cell", 0, 64), ("soma", 1, 3)]
    assert a.load_image().shape == (H, W)


def test_load_coco_images_subfolder_and_rle(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    tifffile.imwrite(tmp_path / "images" / "a.tif", np.zeros((H, W), np.uint8))
    mask = np.zeros((H, W), np.uint8, order="F")
    mask[3:5, 6:9] = 1
    counts = mask_utils.encode(mask)["counts"].decode()
    data = coco(
        images=coco()["images"][:1],
        annotations=[
            {
                "id": 1,
                "image_id": 1,
                "category_id": 7,
                "segmentation": {"size": [H, W], "counts": counts},
                "score": 0.5,
            }
        ],
    )
    path = tmp_path / "x.json"
    path.write_text(json.dumps(data))
    samples, _ = load_coco(path)
    inst = samples[0].instances[0]
    assert samples[0].image_path == tmp_path / "images" / "a.tif"
    assert (inst.bbox, inst.area, inst.score) == ((3, 6, 5, 9), 6, 0.5)


BAD_JSON = [
    ("truncated", None, '{"images": [{"id": 1,', r"ann.json: not valid JSON \(line 1, column 22"),
    ("not json", None, "images: []", "ann.json: not valid JSON"),
    ("empty", None, "", "ann.json: annotation file is empty"),
    ("list", [], None, "ann.json: top level must be a JSON object"),
    ("no images key", {"annotations": [], "categories": []}, None, "ann.json: key 'images' is missing"),
    ("images not list", coco(images={}), None, r"ann.json: key 'images' is not a list \(dict\)"),
    (
        "image missing keys",
        coco(images=[{"id": 1, "file_name": "a.tif"}]),
        None,
        r"ann.json: image id 1 \(images\[0\], file 'a.tif'\): missing key\(s\) width, height",
    ),
    (
        "duplicate image id",
        coco(images=[coco()["images"][0], {**coco()["images"][1], "id": 1}]),
        None,
        r"ann.json: image id 1 \(images\[1\], file 'b.tif'\): duplicate image id 1 \(also 'a.tif'\)",
    ),
    (
        "duplicate file",
        coco(images=[coco()["images"][0], {**coco()["images"][1], "file_name": "a.tif"}]),
        None,
        r"image id 2 \(images\[1\], file 'a.tif'\): file 'a.tif' is listed twice",
    ),
    (
        "bad size",
        coco(images=[{**coco()["images"][0], "width": 0}]),
        None,
        r"image id 1 .*'width' and 'height' must be positive integers",
    ),
    (
        "category missing name",
        coco(categories=[{"id": 7}]),
        None,
        r"ann.json: categories\[0\] .* needs 'id' and 'name'",
    ),
    (
        "duplicate category",
        coco(categories=[{"id": 7, "name": "a"}, {"id": 7, "name": "b"}]),
        None,
        r"categories\[1\]: duplicate category id 7",
    ),
    (
        "annotation missing key",
        ann(1, segmentation=None),
        None,
        r"ann.json: annotation id 12 \(image 'a.tif'\): missing key\(s\) segmentation",
    ),
    (
        "unknown category",
        ann(1, category_id=99),
        None,
        r"annotation id 12 \(image 'a.tif'\): unknown category id 99; known ids: 7 \(cell\), 8 \(soma\)",
    ),
    (
        "unknown image",
        ann(2, image_id=5),
        None,
        r"annotation id 13: refers to image id 5, which is not in 'images'",
    ),
    ("duplicate annotation id", ann(2, id=11), None, "annotation id 11 .*duplicate annotation id 11"),
    (
        "two points",
        ann(1, segmentation=[[1, 1, 5, 5]]),
        None,
        r"annotation id 12 \(image 'a.tif'\): polygon part 0 has 2 point\(s\); a polygon needs at least 3",
    ),
    (
        "odd coordinates",
        ann(1, segmentation=[[1, 1, 5, 5, 3]]),
        None,
        "annotation id 12 .*odd number of coordinates",
    ),
    (
        "nan",
        None,
        json.dumps(ann(1)).replace("[[2, 2, 4, 2, 4, 4]]", "[[2, 2, NaN, 2, 4, 4]]"),
        "annotation id 12 .*polygon part 0 contains NaN or infinite coordinates",
    ),
    (
        "outside",
        ann(1, segmentation=[[2, 2, 45, 2, 4, 4]]),
        None,
        r"annotation id 12 .*polygon part 0 has coordinates outside the 30x20 image \(x 2..45, y 2..4\)",
    ),
    (
        "negative",
        ann(1, segmentation=[[2, -3, 4, 2, 4, 4]]),
        None,
        "annotation id 12 .*outside the 30x20 image",
    ),
    (
        "not numbers",
        ann(1, segmentation=[["a", 1, 2, 3, 4, 5]]),
        None,
        "annotation id 12 .*not a flat list of numbers",
    ),
    (
        "empty segmentation",
        ann(1, segmentation=[]),
        None,
        "annotation id 12 .*non-empty list of polygons or an RLE",
    ),
    (
        "rle size",
        ann(1, segmentation={"size": [5, 5], "counts": "05"}),
        None,
        r"annotation id 12 .*RLE size \[5, 5\] does not match the image size \[20, 30\]",
    ),
    (
        "rle truncated",
        ann(1, segmentation={"size": [H, W], "counts": [10, 5]}),
        None,
        "annotation id 12 .*RLE runs cover 15 pixels, the 30x20 image has 600",
    ),
    (
        "rle garbage",
        ann(1, segmentation={"size": [H, W], "counts": "~~~"}),
        None,
        "annotation id 12 .*invalid character",
    ),
    ("score", ann(1, score="high"), None, "annotation id 12 .*'score' must be a finite number"),
]


@pytest.mark.parametrize(("case", "data", "text", "message"), BAD_JSON, ids=[c[0] for c in BAD_JSON])
def test_bad_coco(tmp_path: Path, case: str, data: Any, text: str | None, message: str) -> None:
    with pytest.raises(DataError, match=message):
        load_coco(write(tmp_path, data, text))


def test_missing_annotation_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nope.json: annotation file not found"):
        load_coco(tmp_path / "nope.json")


def test_binary_annotation_file(tmp_path: Path) -> None:
    path = tmp_path / "ann.json"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(DataError, match="ann.json: not a UTF-8 text file"):
        load_coco(path)


def test_warnings_are_counted(tmp_path: Path) -> None:
    data = coco(
        annotations=[
            ann(0)["annotations"][0],
            {
                "id": 12,
                "image_id": 1,
                "category_id": 7,
                "segmentation": [[25, 15, 30.5, 15, 30.5, 20, 25, 20]],
            },
        ]
    )
    warnings: list[str] = []
    samples, _ = load_coco(write(tmp_path, data), warnings=warnings)
    assert len(warnings) == 2
    assert "annotation id 12 (image 'a.tif'): vertices up to 0.5 px outside the 30x20 image" in warnings[0]
    assert warnings[1].endswith("image id 2 ('b.tif') has no annotations")
    assert samples[1].extra["warnings"] == [warnings[1]] and samples[1].instances == ()
    assert samples[0].instances[1].area == 25  # clipped at the border: columns 25..29, rows 15..19


@pytest.mark.parametrize(
    ("problem", "message"),
    [
        ("missing", r"b.tif: image file not found"),
        ("empty", r"b.tif: image file is empty \(0 bytes\)"),
        ("corrupt", r"b.tif: cannot decode image"),
        (
            "size",
            r"b.tif: image is 31x20 \(WxH\) but the annotations say 30x20; fix the 'width'/'height' of image "
            r"id 2",
        ),
    ],
)
def test_image_problems_name_the_file(tmp_path: Path, problem: str, message: str) -> None:
    samples, _ = load_coco(write(tmp_path, coco()))
    path = tmp_path / "b.tif"
    if problem == "missing":
        path.unlink()
    elif problem == "empty":
        path.write_bytes(b"")
    elif problem == "corrupt":
        path.write_bytes(b"II*\x00" + b"\x01" * 40)
    else:
        tifffile.imwrite(path, np.zeros((H, W + 1), np.uint8))
    with pytest.raises(DataError, match=message):
        samples[1].load_image()
