"""Bad-input cases: output locations that cannot be written (machinery: corpus.py).

A full disk, a read-only folder, Ctrl-C and concurrent runs need a fault injected or a second process; they are
tested in ``tests/harness/test_faults.py`` and ``tests/harness/test_concurrency.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

from corpus import Case, _coco, _write, c6bench, dataset


def _scene(root: Path, out: str) -> dict[str, Path]:
    """GT + predictions that evaluate fine, and an --out that is `out` (relative to the case folder)."""
    paths = dataset(_coco())(root)
    _write(root / "pred.json", json.dumps(_coco()))
    _write(root / "taken", "a file where the output folder should go\n")
    return {**paths, "pred": root / "pred.json", "file": root / "taken", "out": root / out}


EVALUATE = c6bench("evaluate", "--gt", "{json}", "--pred", "{pred}", "--out", "{out}")

FAULT_CASES = [
    Case(
        "out_is_a_file",
        "evaluate --out names an existing file",
        "c6bench evaluate --out",
        lambda root: _scene(root, "taken"),
        EVALUATE,
        "CommandFailed",
        ("error: --out {out}: is a file, not a folder; choose another output folder",),
    ),
    Case(
        "out_below_a_file",
        "evaluate --out FILE/sub (a file where a folder must be)",
        "c6bench evaluate --out",
        lambda root: _scene(root, "taken/metrics"),
        EVALUATE,
        "CommandFailed",
        ("error: --out {out}: {file} is a file, so no folder can be made below it",),
    ),
    Case(
        "bench_out_is_a_file",
        "bench --out names an existing file (refused before any stage)",
        "c6bench bench --out",
        lambda root: _scene(root, "taken"),
        c6bench("bench", "--model", "classical", "--data", "sample", "--out", "{out}"),
        "CommandFailed",
        ("error: --out {out}: is a file, not a folder",),
    ),
    Case(
        "predict_out_below_a_file",
        "predict --out FILE/sub (refused before any image is predicted)",
        "c6bench predict --out",
        lambda root: _scene(root, "taken/pred"),
        c6bench("predict", "--model", "classical", "--images", "{image}", "--out", "{out}"),
        "CommandFailed",
        ("error: --out {out}: {file} is a file, so no folder can be made below it",),
    ),
    Case(
        "convert_out_is_a_file",
        "data convert --out names an existing file",
        "c6bench data convert --out",
        lambda root: _scene(root, "taken"),
        c6bench("data", "convert", "--coco", "{json}", "--to", "labelmaps", "--out", "{out}"),
        "CommandFailed",
        ("error: --out {out}: is a file, not a folder",),
    ),
    Case(
        "predict_image_given_twice",
        "predict --images a.tif a.tif",
        "c6bench predict --images",
        lambda root: _scene(root, "out"),
        c6bench("predict", "--model", "classical", "--images", "{image}", "{image}", "--out", "{out}"),
        "CommandFailed",
        ("error: {image}: given twice", "each image is predicted once"),
    ),
]
