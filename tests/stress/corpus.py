"""Machinery of the bad-input corpus: the `Case` record, file builders and the entry points users hit.

The cases themselves live in ``cases_*.py`` (inputs, configs and options, output locations and faults);
``make_bad_inputs.py`` collects them, writes them to a folder and renders ``docs/bad_inputs.md``.
"""


from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

H = W = 64
SQUARE = [10, 10, 30, 10, 30, 30, 10, 30]  # a 20 x 20 px square (400 px under the pixel-centre rule)


class CommandFailed(Exception):
    """A `c6bench` command exited non-zero; the message is the error line(s) it printed on stderr."""


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


def _tiff_bytes(array: np.ndarray, **options: Any) -> bytes:
    import tifffile

    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array, **options)
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
        root.mkdir(parents=True, exist_ok=True)
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
    from harness.coco import load_coco

    return load_coco(paths["json"])


def load_first_image(paths: dict[str, Path]) -> Any:
    from harness.coco import load_coco

    samples, _ = load_coco(paths["json"])
    return samples[0].load_image()


def c6bench(*args: str) -> Callable[[dict[str, Path]], Any]:
    """Run ``c6bench ARGS`` in-process ({name} in args = a path of the case); raise CommandFailed on exit != 0
    with the error line(s) it printed (``error: ...``, argparse's ``c6bench X: error: ...``). On success the
    case's paths are returned, for a check of what was written."""

    def run(paths: dict[str, Path]) -> Any:
        from harness.cli import main

        argv = [a.format(**{k: str(v) for k, v in paths.items()}) for a in args]
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            try:
                code = main(argv)
            except SystemExit as exc:  # argparse refuses a value: usage + one error line, exit 2
                code = exc.code
        if code != 0:
            lines = [ln for ln in stderr.getvalue().splitlines() if ln.startswith("error:") or ": error: " in ln]
            raise CommandFailed("\n".join(lines) or stderr.getvalue())
        return paths

    return run


def validate_dataset(paths: dict[str, Path]) -> Any:
    """What ``c6bench data validate --data YAML`` lists under ``problems:`` (CommandFailed when there are any)."""
    from harness.dataset import resolve_data, validate

    report = validate(resolve_data(str(paths["data"])))
    problems = [msg for entry in report["splits"].values() for msg in entry["problems"]]
    if problems:
        raise CommandFailed("\n".join(problems))
    return report


def dataset_yaml(payload: Any, image: bytes | None = None) -> Callable[[Path], dict[str, Path]]:
    """A one-split dataset (``spec/train`` holding ``ann.json`` + ``a.tif``) and its dataset YAML ``data.yaml``."""

    def make(root: Path) -> dict[str, Path]:
        paths = dataset(payload, image)(root / "spec" / "train")
        (root / "data.yaml").write_text(
            f"name: corpus\nroot: {root}\nparts:\n  spec:\n    splits: {{train: spec/train}}\n"
            "    targets: {cells: [cell]}\ntrain: spec/train\nvalid: spec/train\nevaluate: [spec/train]\n")
        return {**paths, "data": root / "data.yaml"}

    return make


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


def _write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text) if isinstance(text, bytes) else path.write_text(text)
    return path


