"""Bad-input cases: annotation files, images and prediction files (see corpus.py for the machinery)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from corpus import (
    Case,
    H,
    W,
    _ann,
    _coco,
    _image,
    _png_bytes,
    _tiff_bytes,
    _write,
    c6bench,
    dataset,
    dataset_yaml,
    load_annotations,
    load_first_image,
    validate_dataset,
)

EVALUATE = c6bench("evaluate", "--gt", "{json}", "--pred", "{pred}", "--out", "{out}")


def _predictions(root: Path, pred: Any, gt: dict[str, Any] | None = None) -> dict[str, Path]:
    paths = dataset(_coco() if gt is None else gt)(root)
    (root / "pred.json").write_text(json.dumps(pred))
    return {**paths, "pred": root / "pred.json", "out": root / "out"}


def _bowtie_area(result: Any) -> None:
    """The bow-tie covers exactly its two triangles, (10,10)-(20,20)-(10,30) and (30,10)-(30,30)-(20,20), which
    the same pixel-centre rasteriser fills with 110 px each (centres on the 45-degree edges count as inside)."""
    samples, _ = result
    (inst,) = samples[0].instances
    assert inst.area == 220, inst.area


def _count_only(result: Any) -> None:
    samples, _ = result
    assert len(samples[0].instances) == 1 and samples[0].instances[0].score is None


def _gzip(payload: Any) -> bytes:
    import gzip

    return gzip.compress(json.dumps(payload).encode())


def _frames() -> np.ndarray:
    return np.stack([_image() + k for k in range(3)]).astype(np.uint16)


def _with_nan() -> np.ndarray:
    image = _image().astype(np.float32)
    image[[1, 2, 3], [4, 5, 6]] = np.nan
    return image


def read_frame(paths: dict[str, Path], frame: int) -> Any:
    from harness.images import read_image

    return read_image(paths["image"], frame=frame)


def _is_planar_rgb(image: np.ndarray) -> None:
    assert image.shape == (H, W, 3) and np.array_equal(image[..., 2], _frames()[2]), image.shape


def _is_plane_1(image: np.ndarray) -> None:
    assert np.array_equal(image, _frames()[1])


def _counts(tp: int, fp: int, fn: int) -> Any:
    def check(paths: dict[str, Path]) -> None:
        block = json.loads((paths["out"] / "metrics.json").read_text())["targets"]["cell"]["pooled"]["0.5"]
        assert (block["tp"], block["fp"], block["fn"]) == (tp, fp, fn), block

    return check


def _crowd_scene(root: Path) -> dict[str, Path]:
    """GT: one cell + one crowd region (35..60 px); predictions: the cell (TP), a square inside the crowd
    region (ignored: neither TP nor FP) and a square elsewhere (FP)."""
    crowd = [35, 35, 60, 35, 60, 60, 35, 60]
    gt = _coco([_ann(), _ann(id=2, segmentation=[crowd], iscrowd=1)])
    inside, elsewhere = [40, 40, 50, 40, 50, 50, 40, 50], [8, 40, 20, 40, 20, 52, 8, 52]
    pred = _coco([_ann(score=0.9), _ann(id=2, segmentation=[inside], score=0.8),
                  _ann(id=3, segmentation=[elsewhere], score=0.7)])
    return _predictions(root, pred, gt=gt)


def _crowd_counts(paths: dict[str, Path]) -> None:
    target = json.loads((paths["out"] / "metrics.json").read_text())["targets"]["cell"]
    assert (target["n_gt"], target["n_gt_crowd"], target["n_pred"]) == (1, 1, 3)
    assert target["n_pred_crowd_ignored"] == {"0.5": 1, "0.75": 1, "0.9": 1}
    block = target["pooled"]["0.5"]
    assert (block["tp"], block["fp"], block["fn"]) == (1, 1, 0), block


def _per_folder(root: Path) -> dict[str, Path]:
    names = ["set26/raw.tif", "set36/raw.tif"]
    images = [{"id": k, "file_name": n, "width": W, "height": H} for k, n in enumerate(names, 1)]
    paths = dataset(_coco([_ann(), _ann(id=2, image_id=2)], images=images), image=b"<none>")(root)
    for name in names:
        _write(root / name, _tiff_bytes(_image()))
    return {**paths, "out": root / "out"}


def _flat_label_maps(paths: dict[str, Path]) -> None:
    assert sorted(p.name for p in paths["out"].glob("*.tif")) == ["set26__raw.tif", "set36__raw.tif"]
    record = json.loads((paths["out"] / "conversion.json").read_text())
    assert sorted(record["images"]) == ["set26__raw.tif", "set36__raw.tif"]
    assert record["totals"]["kept"] == 2


def _two_folders(root: Path) -> dict[str, Path]:
    for folder in ("A", "B"):
        _write(root / folder / "x.tif", _tiff_bytes(_image()))
    return {"a": root / "A", "b": root / "B", "out": root / "out"}


def _distinct_predictions(paths: dict[str, Path]) -> None:
    written = json.loads((paths["out"] / "predictions.json").read_text())
    assert [i["file_name"] for i in written["images"]] == ["A/x.tif", "B/x.tif"]
    assert sorted(p.name for p in (paths["out"] / "labels").glob("*.tif")) == ["A__x.tif", "B__x.tif"]


DATASET_CASES = [
    Case("truncated_json", "annotation JSON cut off mid-file", "load_coco / c6bench data validate",
         dataset(json.dumps(_coco())[:70]), load_annotations, "DataError", ("{json}", "not valid JSON", "line 1")),
    Case("empty_json", "annotation file of 0 bytes", "load_coco", dataset(b""), load_annotations, "DataError",
         ("{json}", "empty (0 bytes", "re-download")),
    Case("top_level_list", "top level is a list, not a COCO object", "load_coco", dataset([1, 2]),
         load_annotations, "DataError", ("{json}", "top level must be a JSON object")),
    Case("annotations_not_list", "'annotations' is an object", "load_coco",
         dataset({**_coco(), "annotations": {"1": {}}}), load_annotations, "DataError",
         ("{json}", "key 'annotations' is not a list (dict)", "COCO instances file")),
    Case("segmentation_string", "segmentation is a string", "load_coco",
         dataset(_coco([_ann(segmentation="10 10 30 30")])), load_annotations, "DataError",
         ("{json}: annotation id 1", "'a.tif'", "'segmentation' must be a non-empty list of polygons or an RLE")),
    Case("polygon_two_points", "polygon with 2 points (< 3)", "load_coco",
         dataset(_coco([_ann(segmentation=[[10, 10, 30, 30]])])), load_annotations, "DataError",
         ("{json}: annotation id 1", "polygon part 0 has 2 point(s); a polygon needs at least 3",
          "delete or redraw")),
    Case("polygon_odd_coordinates", "polygon with an odd number of coordinates", "load_coco",
         dataset(_coco([_ann(segmentation=[[10, 10, 30, 10, 30]])])), load_annotations, "DataError",
         ("{json}: annotation id 1", "odd number of coordinates (5)")),
    Case("polygon_nan", "NaN coordinate", "load_coco",
         dataset('{"images": [{"id": 1, "file_name": "a.tif", "width": 64, "height": 64}], "categories": '
                 '[{"id": 1, "name": "cell"}], "annotations": [{"id": 7, "image_id": 1, "category_id": 1, '
                 '"segmentation": [[10, 10, NaN, 10, 30, 30]]}]}'),
         load_annotations, "DataError", ("{json}: annotation id 7", "NaN or infinite")),
    Case("polygon_huge", "coordinates far outside the image (1e9)", "load_coco",
         dataset(_coco([_ann(id=3, segmentation=[[10, 10, 1e9, 10, 30, 30]])])), load_annotations, "DataError",
         ("{json}: annotation id 3", "outside the 64x64 image")),
    Case("polygon_negative", "negative coordinates far outside the image", "load_coco",
         dataset(_coco([_ann(id=4, segmentation=[[-500, 10, 30, 10, 30, 30]])])), load_annotations, "DataError",
         ("{json}: annotation id 4", "outside the 64x64 image")),
    Case("polygon_self_intersecting", "bow-tie polygon (edges cross): accepted, filled even-odd", "load_coco",
         dataset(_coco([_ann(segmentation=[[10, 10, 30, 30, 30, 10, 10, 30]])])), load_annotations, None,
         check=_bowtie_area),
    Case("rle_wrong_size", "RLE whose size differs from the image", "load_coco",
         dataset(_coco([_ann(id=5, segmentation={"size": [32, 32], "counts": [1024]})])), load_annotations,
         "DataError", ("{json}: annotation id 5", "RLE size [32, 32] does not match the image size [64, 64]")),
    Case("rle_corrupt_counts", "RLE run lengths that do not add up to the image", "load_coco",
         dataset(_coco([_ann(id=6, segmentation={"size": [64, 64], "counts": [10, 20]})])), load_annotations,
         "DataError", ("{json}: annotation id 6", "RLE")),
    Case("unknown_category", "annotation with a category id not in 'categories'", "load_coco",
         dataset(_coco([_ann(category_id=9)])), load_annotations, "DataError",
         ("{json}: annotation id 1", "unknown category id 9", "known ids: 1 (cell)")),
    Case("duplicate_annotation_id", "two annotations with id 1", "load_coco",
         dataset(_coco([_ann(), _ann()])), load_annotations, "DataError",
         ("{json}: annotation id 1", "duplicate annotation id 1")),
    Case("duplicate_image_id", "two images with id 1", "load_coco",
         dataset(_coco(images=[{"id": 1, "file_name": "a.tif", "width": W, "height": H},
                               {"id": 1, "file_name": "b.tif", "width": W, "height": H}])),
         load_annotations, "DataError", ("{json}: image id 1 (images[1], file 'b.tif')", "duplicate image id 1 (also 'a.tif')", "must be unique")),
    Case("annotation_without_image", "annotation refers to an image id that does not exist", "load_coco",
         dataset(_coco([_ann(image_id=42)])), load_annotations, "DataError",
         ("{json}: annotation id 1", "refers to image id 42, which is not in 'images'")),
    Case("missing_keys", "annotation without 'segmentation'", "load_coco",
         dataset(_coco([{"id": 2, "image_id": 1, "category_id": 1}])), load_annotations, "DataError",
         ("{json}: annotation id 2", "missing key(s) segmentation")),
    Case("image_size_wrong_type", "image width given as a string", "load_coco",
         dataset(_coco(images=[{"id": 1, "file_name": "a.tif", "width": "64", "height": H}])),
         load_annotations, "DataError", ("{json}: image id 1 (images[0], file 'a.tif')", "must be positive integers, got '64'")),
    Case("category_without_name", "category without 'name'", "load_coco",
         dataset(_coco(categories=[{"id": 1}])), load_annotations, "DataError",
         ("{json}: categories[0]", "needs 'id' and 'name'")),
    Case("score_not_number", "prediction 'score' is a string", "load_coco",
         dataset(_coco([_ann(score="high")])), load_annotations, "DataError",
         ("{json}: annotation id 1", "'score' must be a finite number, got 'high'")),
    Case("prediction_without_score", "prediction without 'score': accepted (scores are not used by the counts)",
         "load_coco", dataset(_coco()), load_annotations, None, check=_count_only),
    Case("polygons_normalised", "polygons in 0..1 (YOLO-style) instead of pixels", "load_coco",
         dataset(_coco([_ann(segmentation=[[0.1, 0.1, 0.5, 0.1, 0.5, 0.5]]),
                        _ann(id=2, segmentation=[[0.2, 0.2, 0.9, 0.2, 0.9, 0.8]])])), load_annotations, "DataError",
         ("{json}: all 2 polygon annotations lie within 0..1", "multiply x by the image width")),
    Case("annotation_utf8_bom", "annotation JSON starting with a UTF-8 byte-order mark: accepted, read as UTF-8 (1 instance)", "load_coco",
         dataset(b"\xef\xbb\xbf" + json.dumps(_coco()).encode()), load_annotations, None, check=_count_only),
    Case("annotation_gzip", "annotation JSON compressed with gzip (.json.gz): accepted, decompressed (1 instance)", "load_coco",
         dataset(_gzip(_coco())), load_annotations, None, check=_count_only),
    Case("duplicate_annotation", "two annotations with the same mask and category (IoU 1)", "c6bench data validate",
         dataset_yaml(_coco([_ann(id=1), _ann(id=2)])), validate_dataset, "CommandFailed",
         ("annotation id 2 (image 'a.tif'): exact duplicate of annotation id 1", "IoU 1", "delete one")),
    Case("one_folder_per_image", "images in one folder each (set26/raw.tif, set36/raw.tif): accepted, label maps set26__raw.tif and set36__raw.tif",
         "c6bench data convert --coco", _per_folder,
         c6bench("data", "convert", "--coco", "{json}", "--to", "labelmaps", "--out", "{out}"), None,
         check=_flat_label_maps),
]

IMAGE_CASES = [
    Case("image_missing", "image file named in the JSON does not exist", "Sample.load_image",
         dataset(_coco(), image=b"<none>"), load_first_image, "DataError", ("{image}", "image file not found")),
    Case("image_zero_bytes", "image file of 0 bytes", "Sample.load_image", dataset(_coco(), image=b""),
         load_first_image, "DataError", ("{image}", "empty (0 bytes)", "re-download")),
    Case("tiff_truncated", "TIFF cut to half its bytes", "Sample.load_image",
         dataset(_coco(), image=_tiff_bytes(_image())[:4000]), load_first_image, "DataError",
         ("{image}", "cannot decode image", "corrupt")),
    Case("png_as_tif", "PNG bytes saved with a .tif extension", "Sample.load_image",
         dataset(_coco(), image=_png_bytes((_image() % 255).astype(np.uint8))), load_first_image, "DataError",
         ("{image}", "cannot decode image", "corrupt")),
    Case("text_as_png", "a text file with a .png extension", "Sample.load_image",
         dataset(_coco(images=[{"id": 1, "file_name": "a.png", "width": W, "height": H}]),
                 image=b"not an image\n", image_name="a.png"), load_first_image, "DataError",
         ("{image}", "cannot decode image")),
    Case("image_size_mismatch", "image is 32x32 but the JSON says 64x64", "Sample.load_image",
         dataset(_coco(), image=_tiff_bytes(np.zeros((32, 32), np.uint16))), load_first_image, "DataError",
         ("{image}", "image is 32x32 (WxH) but the annotations say 64x64", "image id 1")),
    Case("image_empty_array", "a TIFF holding a 0x0 array", "Sample.load_image",
         dataset(_coco(), image=_tiff_bytes(np.zeros((0, 0), np.uint16))), load_first_image, "DataError",
         ("{image}",)),
    Case("image_stack", "a 5-plane TIFF stack where one image is expected", "Sample.load_image",
         dataset(_coco(), image=_tiff_bytes(np.zeros((5, H, W), np.uint16))), load_first_image, "DataError",
         ("{image}", "holds 5 frames of 64x64 (shape (5, 64, 64), axes QYX): a stack, not one image",
          "pass --frame K")),
    Case("tiff_time_lapse", "a 3-frame time-lapse (ImageJ axes TYX), shaped like planar RGB", "Sample.load_image",
         dataset(_coco(), image=_tiff_bytes(_frames(), imagej=True, metadata={"axes": "TYX"})), load_first_image,
         "DataError", ("{image}", "holds 3 time points of 64x64", "axes TYX", "pass --frame K")),
    Case("tiff_three_gray_planes", "3 grayscale planes (photometric minisblack), shaped like planar RGB",
         "Sample.load_image", dataset(_coco(), image=_tiff_bytes(_frames(), photometric="minisblack")),
         load_first_image, "DataError", ("{image}", "holds 3 frames of 64x64", "a stack, not one image")),
    Case("tiff_planar_rgb", "planar RGB (3, H, W) that says so (photometric rgb, separate planes): accepted as a 64x64 RGB image",
         "Sample.load_image", dataset(_coco(), image=_tiff_bytes(_frames(), photometric="rgb",
                                                                 planarconfig="separate")),
         load_first_image, None, check=_is_planar_rgb),
    Case("tiff_frame_picked", "a stack read with --frame 1: accepted, plane 1 exactly", "c6bench predict --frame K",
         dataset(_coco(), image=_tiff_bytes(_frames(), photometric="minisblack")),
         lambda paths: read_frame(paths, 1), None, check=_is_plane_1),
    Case("tiff_frame_out_of_range", "--frame 7 on a 3-plane stack", "c6bench predict --frame K",
         dataset(_coco(), image=_tiff_bytes(_frames(), photometric="minisblack")),
         lambda paths: read_frame(paths, 7), "DataError", ("{image}", "--frame 7 is out of range", "0..2")),
    Case("image_nan_pixels", "a float image with 3 NaN pixels", "Sample.load_image",
         dataset(_coco(), image=_tiff_bytes(_with_nan())), load_first_image, "DataError",
         ("{image}", "3 of 4096 pixel values are NaN or infinite")),
    Case("image_1x1", "a 1x1 image (and a JSON that says so)", "Sample.load_image",
         dataset(_coco([], images=[{"id": 1, "file_name": "a.tif", "width": 1, "height": 1}]),
                 image=_tiff_bytes(np.ones((1, 1), np.uint8))), load_first_image, "DataError",
         ("{image}", "image is 1x1 px; at least 8x8")),
]

PREDICTION_CASES = [
    Case("prediction_unknown_image", "prediction for an image the ground truth does not have", "c6bench evaluate",
         lambda root: _predictions(root, _coco(images=[{"id": 1, "file_name": "zz.tif", "width": W, "height": H}])),
         c6bench("evaluate", "--gt", "{json}", "--pred", "{pred}", "--out", "{out}"), "CommandFailed",
         ("image file_name 'zz.tif' is not in the ground truth", "same split")),
    Case("prediction_size_mismatch", "prediction file says the image is 32x32", "c6bench evaluate",
         lambda root: _predictions(root, _coco(
             [_ann(segmentation=[[1, 1, 9, 1, 9, 9]])],
             images=[{"id": 1, "file_name": "a.tif", "width": 32, "height": 32}])),
         c6bench("evaluate", "--gt", "{json}", "--pred", "{pred}", "--out", "{out}"), "CommandFailed",
         ("'a.tif' is 32x32 (WxH) but the ground truth says 64x64", "original resolution")),
    Case("prediction_no_images", "prediction file whose 'images' is empty", "c6bench evaluate",
         lambda root: _predictions(root, _coco([], images=[])), EVALUATE, "CommandFailed",
         ("{pred}: the prediction file lists no images", "1 ground-truth images")),
    Case("prediction_empty_results", "an empty COCO results list (no detection): accepted with a warning, TP 0, FP 0, FN 1",
         "c6bench evaluate", lambda root: _predictions(root, []), EVALUATE, None, check=_counts(0, 0, 1)),
    Case("prediction_is_folder", "--pred names the folder holding predictions.json", "c6bench evaluate",
         lambda root: {**_predictions(root, _coco()), "pred": _write(root / "p" / "predictions.json", "{}").parent},
         EVALUATE, "CommandFailed", ("{pred}: is a folder, not a JSON file", "(it holds predictions.json)")),
    Case("prediction_is_tiff", "--pred names a label TIFF", "c6bench evaluate",
         lambda root: {**_predictions(root, _coco()), "pred": _write(root / "labels.tif", _tiff_bytes(_image()))},
         EVALUATE, "CommandFailed", ("{pred}: is a TIFF image, not a JSON prediction file",)),
    Case("prediction_json_gz", "predictions compressed with gzip (.json.gz): accepted, TP 1, FP 0, FN 0", "c6bench evaluate",
         lambda root: {**_predictions(root, _coco()), "pred": _write(root / "pred.json.gz", _gzip(_coco()))},
         EVALUATE, None, check=_counts(1, 0, 0)),
    Case("all_gt_on_the_frame", "every ground-truth cell touches the 2-px frame", "c6bench evaluate",
         lambda root: _predictions(root, _coco(), gt=_coco([_ann(segmentation=[[0, 0, 20, 0, 20, 20, 0, 20]])])),
         EVALUATE, "CommandFailed",
         ("target cell: all 1 ground-truth instances of 1 image(s) were dropped before matching",
          "1 touch the 2-px frame", "scores would be 0 whatever was predicted")),
    Case("all_gt_empty", "every ground-truth polygon rasterises to 0 pixels", "c6bench evaluate",
         lambda root: _predictions(root, _coco(), gt=_coco([_ann(segmentation=[[10.1, 10.1, 10.4, 10.1, 10.4, 10.4]])])),
         EVALUATE, "CommandFailed", ("target cell: all 1 ground-truth instances", "1 rasterise to 0 px")),
    Case("boundary_wider_than_image", "--boundary 32 on a 64x64 image", "c6bench evaluate",
         lambda root: _predictions(root, _coco()),
         c6bench("evaluate", "--gt", "{json}", "--pred", "{pred}", "--out", "{out}", "--boundary", "32"),
         "CommandFailed", ("boundary 32 px: the frame covers all of image 'a.tif' (64x64)", "smaller --boundary")),
    Case("crowd_region", "GT with an iscrowd region; one prediction inside it, one elsewhere: accepted (COCO rule), n_gt 1 (crowd not counted), TP 1, FP 1, FN 0, 1 prediction ignored",
         "c6bench evaluate", _crowd_scene, EVALUATE, None, check=_crowd_counts),
    Case("predict_same_name_in_two_folders", "predict --images A/ B/, both holding x.tif: accepted, named A/x.tif, "
         "B/x.tif", "c6bench predict", _two_folders,
         c6bench("predict", "--model", "classical", "--images", "{a}", "{b}", "--out", "{out}", "--labels"), None,
         check=_distinct_predictions),
    Case("prediction_truncated", "prediction JSON cut off", "c6bench evaluate",
         lambda root: {**_predictions(root, _coco()),
                       "pred": _write(root / "pred.json", json.dumps(_coco())[:50])},
         c6bench("evaluate", "--gt", "{json}", "--pred", "{pred}", "--out", "{out}"), "CommandFailed",
         ("{pred}", "not valid JSON")),
]

