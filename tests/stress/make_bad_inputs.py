"""The bad-input corpus: malformed datasets, images, prediction files, configs and checkpoints.

Each :class:`Case` writes its files into a folder (``make``), calls the entry point a user would hit
(``run``), and says what must happen: the error type and fragments the message must contain (file, item,
what to do), or — for the few inputs that are accepted on purpose — nothing raised (``error=None``) and a
check of what was read. ``tests/stress/test_bad_inputs.py`` runs every case; ``docs/bad_inputs.md``
tabulates them. Run this file to write the corpus to a folder for a look::

    python tests/stress/make_bad_inputs.py /tmp/bad_inputs
"""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

H = W = 64
SQUARE = [10, 10, 30, 10, 30, 30, 10, 30]  # a 20 x 20 px square (400 px under the pixel-centre rule)


class CommandFailed(Exception):
    """A `c6bench` command exited non-zero; the message is what it printed on stderr."""


@dataclass
class Case:
    """One malformed input and the behaviour the user must see."""

    id: str
    what: str  # what is malformed
    entry: str  # the entry point, as a user meets it
    make: Callable[[Path], dict[str, Path]]
    run: Callable[[dict[str, Path]], Any]
    error: str | None  # exception class name (harness.errors.*, or CommandFailed for a CLI exit)
    expect: tuple[str, ...] = ()  # fragments of the message; {name} = str(paths[name])
    check: Callable[[Any], None] | None = field(default=None, repr=False)  # for accepted inputs
    known_gap: str | None = None  # a case that still fails badly: strict xfail with the reason


# --------------------------------------------------------------------------------------------- builders


def _coco(annotations: list[dict[str, Any]] | None = None, images: list[dict[str, Any]] | None = None,
          categories: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "images": images if images is not None else [{"id": 1, "file_name": "a.tif", "width": W, "height": H}],
        "annotations": annotations if annotations is not None else [
            {"id": 1, "image_id": 1, "category_id": 1, "segmentation": [SQUARE]}],
        "categories": categories if categories is not None else [{"id": 1, "name": "cell"}],
    }


def _ann(**overrides: Any) -> dict[str, Any]:
    return {"id": 1, "image_id": 1, "category_id": 1, "segmentation": [SQUARE], **overrides}


def _tiff_bytes(array: np.ndarray) -> bytes:
    import tifffile

    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array)
    return buffer.getvalue()


def _png_bytes(array: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _image() -> np.ndarray:
    return (np.arange(H * W, dtype=np.uint16).reshape(H, W) * 7) % 4000


def dataset(payload: Any | str | bytes, image: bytes | None = None, image_name: str = "a.tif"
            ) -> Callable[[Path], dict[str, Path]]:
    """Writer of ``ann.json`` (+ one image): payload as JSON, or raw text/bytes for broken files."""

    def make(root: Path) -> dict[str, Path]:
        path = root / "ann.json"
        if isinstance(payload, bytes):
            path.write_bytes(payload)
        elif isinstance(payload, str):
            path.write_text(payload)
        else:
            path.write_text(json.dumps(payload))
        paths = {"json": path, "image": root / image_name}
        data = _tiff_bytes(_image()) if image is None else image
        if data != b"<none>":
            (root / image_name).write_bytes(data)
        return paths

    return make


def files(**named: str | bytes) -> Callable[[Path], dict[str, Path]]:
    """Writer of arbitrary named files (configs, checkpoints)."""

    def make(root: Path) -> dict[str, Path]:
        out = {}
        for key, content in named.items():
            name = key.replace("__", ".")
            path = root / name
            path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
            out[key.split("__")[0]] = path
        return out

    return make


# --------------------------------------------------------------------------------------------- entry points


def load_annotations(paths: dict[str, Path]) -> Any:
    from harness.data import load_coco

    return load_coco(paths["json"])


def load_first_image(paths: dict[str, Path]) -> Any:
    from harness.data import load_coco

    samples, _ = load_coco(paths["json"])
    return samples[0].load_image()


def c6bench(*args: str) -> Callable[[dict[str, Path]], Any]:
    """Run ``c6bench ARGS`` in-process ({name} in args = a path of the case); raise CommandFailed on exit != 0."""

    def run(paths: dict[str, Path]) -> Any:
        import contextlib

        from harness.cli import main

        argv = [a.format(**{k: str(v) for k, v in paths.items()}) for a in args]
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            code = main(argv)
        if code != 0:
            raise CommandFailed(stderr.getvalue())
        return code

    return run


def model_config(model: str) -> Callable[[dict[str, Path]], Any]:
    def run(paths: dict[str, Path]) -> Any:
        from harness.config import load_model_config

        return load_model_config(model, "quick", paths["config"])

    return run


def load_checkpoint(model: str) -> Callable[[dict[str, Path]], Any]:
    def run(paths: dict[str, Path]) -> Any:
        import adapters

        params = {"encoder": "mit_b0"} if model == "mediar" else (
            {"variant": "tiny"} if model == "cellseg1" else {})
        adapter = adapters.get(model).build(params, device="cpu")
        return adapter.load(paths["checkpoint"])

    return run


# --------------------------------------------------------------------------------------------- the cases


def _predictions(root: Path, pred: dict[str, Any]) -> dict[str, Path]:
    paths = dataset(_coco())(root)
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
         ("{image}", "expected a 2-D grayscale or RGB image")),
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
    Case("prediction_truncated", "prediction JSON cut off", "c6bench evaluate",
         lambda root: {**_predictions(root, _coco()),
                       "pred": _write(root / "pred.json", json.dumps(_coco())[:50])},
         c6bench("evaluate", "--gt", "{json}", "--pred", "{pred}", "--out", "{out}"), "CommandFailed",
         ("{pred}", "not valid JSON")),
]

CONFIG_CASES = [
    Case("config_unknown_top_key", "model YAML with a misspelt top-level key", "load_model_config / --config",
         files(config__yaml="model: classical\nparms: {}\nprofiles: {quick: {}}\n"), model_config("classical"),
         "ConfigError", ("{config}", "unknown key(s) parms", "allowed: classes, evaluate, finetune, model, params")),
    Case("config_unknown_param", "model YAML with a parameter the adapter does not take",
         "load_model_config / --config",
         files(config__yaml="model: cellpose\nparams: {diamter: 30}\nprofiles: {quick: {}}\n"),
         model_config("cellpose"), "ConfigError", ("{config}", "diamter")),
    Case("config_unknown_train_key", "profile schedule with a key train() does not take",
         "load_model_config / --config",
         files(config__yaml="model: cellpose\nprofiles: {quick: {train: {epoch: 3}}}\n"),
         model_config("cellpose"), "ConfigError", ("{config}", "profiles.quick.train", "epoch")),
    Case("config_unknown_profile", "asking for a profile the YAML lacks", "load_model_config / --profile",
         files(config__yaml="model: classical\nprofiles: {paper: {}}\n"), model_config("classical"),
         "ConfigError", ("{config}", "unknown profile 'quick'", "available: paper")),
    Case("config_not_yaml", "model YAML that is not YAML", "load_model_config / --config",
         files(config__yaml="model: [classical\n"), model_config("classical"), "ConfigError",
         ("{config}", "not valid YAML")),
    Case("dataset_yaml_unknown_key", "dataset YAML with an unknown key", "c6bench bench --data FILE.yaml",
         files(data__yaml="name: x\nroot: .\ntrian: a.json\n"),
         lambda paths: __import__("harness.dataset", fromlist=["x"]).resolve_data(str(paths["data"])),
         "ConfigError", ("{data}", "trian")),
    Case("unknown_model", "a model name nobody registered", "c6bench bench --model", files(),
         c6bench("bench", "--model", "cellpse", "--data", "sample"), "CommandFailed",
         ("unknown model 'cellpse'", "cellpose")),
    Case("unknown_weights_name", "a weights name that is not in any adapter's table", "c6bench weights fetch",
         files(), c6bench("weights", "path", "cyto4"), "CommandFailed", ("cyto4", "known:", "cyto3")),
    Case("missing_weights_file", "a weights path that does not exist", "c6bench predict --weights PATH",
         files(), lambda paths: __import__("harness.weights", fromlist=["x"]).resolve("/nonexistent/cyto3.pth"),
         "MissingWeightsError", ("/nonexistent/cyto3.pth does not exist", "check the path")),
]

CLASSICAL_CHECKPOINT = json.dumps({"format": "c6bench-classical/1", "params": {"sigma": 2.0}})
CHECKPOINT_CASES = [
    Case("classical_checkpoint_to_cellpose", "a classical-adapter checkpoint given to cellpose",
         "Adapter.load (fine-tuned predict, c6bench predict --checkpoint)",
         files(checkpoint__json=CLASSICAL_CHECKPOINT), load_checkpoint("cellpose"), "ConfigError",
         ("{checkpoint}", "cellpose")),
    Case("cellpose_checkpoint_to_classical", "a torch file given to the classical adapter", "Adapter.load",
         files(checkpoint__pt=b"PK\x03\x04 not json"), load_checkpoint("classical"), "ConfigError",
         ("{checkpoint}", "not a classical-adapter checkpoint")),
    Case("classical_checkpoint_to_yolo", "a classical-adapter checkpoint given to YOLO", "Adapter.load",
         files(checkpoint__json=CLASSICAL_CHECKPOINT), load_checkpoint("yolo11"), "ConfigError",
         ("{checkpoint}",)),
    Case("classical_checkpoint_to_mediar", "a classical-adapter checkpoint given to MEDIAR", "Adapter.load",
         files(checkpoint__json=CLASSICAL_CHECKPOINT), load_checkpoint("mediar"), "ConfigError",
         ("{checkpoint}",)),
    Case("classical_checkpoint_to_cellseg1", "a classical-adapter checkpoint given to CellSeg1", "Adapter.load",
         files(checkpoint__json=CLASSICAL_CHECKPOINT), load_checkpoint("cellseg1"), "ConfigError",
         ("{checkpoint}", "not a cellseg1 checkpoint", "another adapter")),
    Case("empty_checkpoint", "a 0-byte checkpoint", "Adapter.load", files(checkpoint__pth=b""),
         load_checkpoint("cellpose"), "ConfigError", ("{checkpoint}",)),
]


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


CASES: list[Case] = DATASET_CASES + IMAGE_CASES + PREDICTION_CASES + CONFIG_CASES + CHECKPOINT_CASES


def outcome(case: Case, root: Path) -> str:
    """What a user sees for this case: ``ErrorType: message`` (folder shown as ``<dir>``), or ``accepted``."""
    import logging
    import warnings

    logging.disable(logging.CRITICAL)
    paths = case.make(root)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            case.run(paths)
    except Exception as exc:  # noqa: BLE001 - recording what the user sees
        text = " ".join(str(exc).split())
        return f"{type(exc).__name__}: {text.replace(str(root), '<dir>')}"
    finally:
        logging.disable(logging.NOTSET)
    return "accepted"


def markdown(scratch: Path) -> str:
    """The table of ``docs/bad_inputs.md``, from running every case."""
    lines = ["# Bad-input corpus", "",
             f"{len(CASES)} malformed inputs, generated by `tests/stress/make_bad_inputs.py` and checked one by one in",
             "`tests/stress/test_bad_inputs.py` (error type + the fragments of the message that name the file, the item",
             "and what to do). Regenerate this table with `python tests/stress/make_bad_inputs.py --markdown "
             "docs/bad_inputs.md`.", "",
             "| case | what is malformed | entry point | what the user gets | test |", "|---|---|---|---|---|"]
    for case in CASES:
        folder = scratch / case.id
        folder.mkdir(parents=True, exist_ok=True)
        seen = outcome(case, folder).replace("|", "\\|")
        if case.error is None:
            seen = f"accepted on purpose: {case.what.split(': ', 1)[-1]}"
        lines.append(f"| `{case.id}` | {case.what.split(': ')[0]} | {case.entry} | {seen} "
                     f"| `test_bad_input[{case.id}]` |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    """Write every case into ``OUT/<case id>/`` (for a look at the files), or ``--markdown FILE`` the table."""
    import tempfile

    if argv[:1] == ["--markdown"]:
        with tempfile.TemporaryDirectory() as scratch:
            Path(argv[1]).write_text(markdown(Path(scratch)))
        sys.stdout.write(f"{len(CASES)} cases tabulated in {argv[1]}\n")
        return 0
    out = Path(argv[0] if argv else "bad_inputs")
    for case in CASES:
        folder = out / case.id
        folder.mkdir(parents=True, exist_ok=True)
        case.make(folder)
    sys.stdout.write(f"{len(CASES)} cases written to {out}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
