"""What a stage's result depends on, as content digests: data files, weights files, consumed outputs, code.

A stage is reused on resume only when its key is unchanged, so the key must change whenever anything the
stage reads changes — not only its settings:

* **data**: the annotation JSON of each split it reads and (for train and predict) every image file the JSON
  lists; an edited annotation or a replaced image re-runs exactly the stages that read that split;
* **weights**: the sha256 of the weights files it loads (zero-shot weights, the fine-tuning init);
* **consumed outputs**: the digest of every output file of the stages it needs (the checkpoint a predict
  stage loads, the prediction file an evaluate stage scores), so a retrained or replaced checkpoint
  re-runs its predictions even when the training settings are the same;
* **code**: the sources of the project modules that compute the stage — found by following the imports
  (``import``/``from`` anywhere in the file, within ``harness``, ``adapters``, ``metrics``) from the stage's
  roots (`STAGE_ROOTS`: a train stage starts from ``adapters/<model>.py``, an evaluate stage from
  ``harness/evaluate.py``, a results stage from ``harness/results.py``) — plus the runner's own modules
  (`RUNNER`: ``harness/run.py`` holds the stage bodies, ``harness/planner.py`` and ``harness/plan.py`` what a
  stage reads) and the versions of the installed packages. An edit in ``metrics/`` therefore re-runs
  evaluation but not a cellpose training; an edit in ``adapters/cellpose.py`` re-runs cellpose's train and
  predict stages only. Any byte counts (a
  comment too): a stale number is worse than a recomputation. A git hash would miss uncommitted edits.

File digests come from `harness.digest` (cached by size, mtime and inode), so a resume of an untouched
dataset costs one ``stat`` per file (``make perf``, area ``resume``).
"""

from __future__ import annotations

import ast
import functools
import json
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from harness import digest
from harness.dataset import REPO_ROOT, DatasetConfig, split_images

logger = logging.getLogger(__name__)

PROJECT = ("harness", "adapters", "metrics")
RUNNER = tuple(REPO_ROOT / "harness" / name for name in ("run.py", "planner.py", "plan.py"))
#: Modules whose import closure computes each kind of stage (``{adapter}`` = the adapter's module).
STAGE_ROOTS: dict[str, tuple[str, ...]] = {
    "train": ("{adapter}", "harness.dataset"),
    "predict": ("{adapter}", "harness.dataset", "harness.predictions"),
    "evaluate": ("harness.evaluate", "harness.dataset"),
    "results": ("harness.results",),
}


# --------------------------------------------------------------------------------------------- code


def module_file(name: str) -> Path | None:
    """The source file of a project module (``harness.records`` → ``harness/records.py``), or None."""
    parts = name.split(".")
    if parts[0] not in PROJECT:
        return None
    base = REPO_ROOT.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported(path: Path, module: str) -> set[str]:
    """Project modules named by any import statement of a file (cached per version of the file)."""
    return set(digest.derived(path, f"imports:{module}", lambda p: sorted(_parse_imports(p, module))))


def _parse_imports(path: Path, module: str) -> set[str]:
    """Project modules named by any import statement of a file (function-level imports included)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_bytes(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {name for name in found if name.split(".")[0] in PROJECT}


@functools.cache
def closure(roots: tuple[str, ...]) -> tuple[Path, ...]:
    """Source files of `roots` and of every project module they import, transitively (sorted)."""
    files: dict[str, Path] = {}
    todo = list(roots)
    while todo:
        name = todo.pop()
        path = module_file(name)
        if path is None or name in files:
            continue
        files[name] = path
        parent = name.rpartition(".")[0]
        todo += [parent] if parent else []  # importing a.b runs a/__init__.py
        todo += sorted(_imported(path, name))
    return tuple(sorted(set(files.values())))


@functools.cache
def package_versions() -> dict[str, str]:
    """Python and the installed versions of the packages that can change a result (`harness.manifest`)."""
    from harness.manifest import versions

    return versions()


def code_files(kind: str, model: str) -> tuple[Path, ...]:
    """The source files that compute a stage of `kind` for `model` (see the module docstring)."""
    import adapters

    module = adapters.get(model).__module__
    roots = tuple(root.format(adapter=module) for root in STAGE_ROOTS[kind])
    return tuple(sorted({*RUNNER, *closure(roots)}))


def code_digest(kind: str, model: str) -> str:
    """One digest of a stage kind's source files (path relative to the repo + content) and package versions."""
    files = code_files(kind, model)
    parts = [
        f"{os.path.relpath(p, REPO_ROOT)}={d}" for p, d in zip(files, digest.files_digest(files), strict=True)
    ]
    parts += [f"{k}=={v}" for k, v in sorted(model_versions(model).items())]
    return digest.combined(parts)


def model_versions(model: str) -> dict[str, str]:
    """The package versions a model's stages run with: the project's, its own environment's on top
    (`harness.envs`), so the bench process and the model's child under its environment compute one key."""
    import adapters
    from harness import envs

    return envs.versions(adapters.get(model), package_versions())


# --------------------------------------------------------------------------------------------- files


def file_digests(paths: Iterable[Path]) -> list[str]:
    """Digest of each file; a missing file is ``missing:<path>`` (the stage then runs and names it)."""
    paths = list(paths)
    present = [p for p in paths if p.is_file()]
    known = dict(zip(present, digest.files_digest(present), strict=True))
    return [known.get(p, f"missing:{p}") for p in paths]


def data_digest(
    cfg: DatasetConfig, refs: Sequence[str], annotations: bool = True, images: bool = True
) -> str:
    """Digest of what a stage reads of each split in `refs`: the annotation JSON (``annotations``) and/or the
    image entries of the JSON (id, file name, size) with the content of every image file (``images``).

    A prediction reads only the images, so an edited polygon re-runs scoring but not prediction.
    """
    parts = []
    for ref in refs:
        json_path, entries, files = split_images(cfg, ref)
        parts.append(ref)
        if annotations:
            parts.append(f"annotations={file_digests([json_path])[0]}")
        if images:
            parts.append(json.dumps(entries))
            parts += [f"{e[1]}={d}" for e, d in zip(entries, file_digests(files), strict=True)]
    return digest.combined(parts)


def weights_digest(names: str | Sequence[str] | None) -> list[str] | None:
    """sha256 of the weights file(s) a stage loads (a known name or a path); None when there are none."""
    if names is None:
        return None
    from harness import weights
    from harness.errors import MissingWeightsError

    out = []
    for name in [names] if isinstance(names, str) else list(names):
        try:
            out.append(digest.file_digest(weights.resolve(name)))
        except MissingWeightsError:
            out.append(f"missing:{name}")
    return out


def outputs_digest(run_dir: Path, outputs: dict[str, Any]) -> dict[str, str]:
    """Digest of each output of a stage record (paths relative to the run dir; a folder = all its files)."""
    out = {}
    for name, rel in sorted(outputs.items()):
        path = Path(run_dir) / rel
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        out[name] = digest.combined(
            f"{os.path.relpath(p, path)}={d}" for p, d in zip(files, file_digests(files), strict=True)
        )
    return out
