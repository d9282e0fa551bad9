"""Known pretrained weights: name → file, URL, published hashes, licence; a local cache; explicit fetching.

Each adapter declares its own `adapters.base.WeightSpec`s (``weights = (...)`` on the class), so this module holds no
per-model table. Weights live in ``$C6BENCH_WEIGHTS`` (default ``~/.cache/glioma-c6-bench``) and are
downloaded only by ``c6bench weights fetch NAME`` (resumable: `harness.download`). A missing file is an
error with that exact command — never a silent download or a silent fallback to another model.

Integrity (`integrity.py` holds the rules): where a hash is published — a full sha256/md5 in the
`WeightSpec`, or a prefix in the release file name (SAM's ``sam_vit_b_01ec64.pth`` carries its md5's first
6 hex digits; torch.hub-style ``name-<sha256 prefix>.pth``) — it is checked. At ``weights fetch`` a mismatch
is an error and the file is not saved; at run time (a hand-copied or rebuilt file) it is a loud warning that
the run records in its manifest and in the row's ``init``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

import adapters
from adapters.base import WeightSpec
from harness import integrity
from harness.cache import cache_dir  # the weights cache is the harness's cache folder
from harness.errors import C6BenchError, DataError, MissingWeightsError

__all__ = ["WeightSpec", "cache_dir", "check", "fetch", "path_of", "resolve", "spec", "table", "verify"]

logger = logging.getLogger(__name__)

_WARNED: set[tuple[str, str]] = set()  # (path, sha256) of mismatching files already warned about

FETCH_TIMEOUT_S = 20


def table() -> dict[str, WeightSpec]:
    """Every known weights entry, from every registered adapter, by name."""
    out: dict[str, WeightSpec] = {}
    for adapter_name in adapters.names():
        for spec in adapters.get(adapter_name).weights:
            if spec.name in out:
                raise C6BenchError(f"weights name {spec.name!r} is declared by two adapters")
            named = spec if spec.adapter else dataclasses.replace(spec, adapter=adapter_name)
            out[spec.name] = named
    return out


def spec(name: str) -> WeightSpec:
    """Look up a known weights name; unknown names fail listing the known ones."""
    known = table()
    if name not in known:
        raise MissingWeightsError(f"unknown weights name {name!r}; known: "
                                  f"{', '.join(sorted(known)) or 'none'}")
    return known[name]


def path_of(name: str) -> Path:
    """Where a known weights file lives in the cache (it may be absent)."""
    return cache_dir() / spec(name).file


def resolve(weights: str | os.PathLike[str]) -> Path:
    """A weights argument (known name or local file path) → existing file, or `MissingWeightsError`."""
    text = os.fspath(weights)
    candidate = Path(text).expanduser()
    if candidate.is_file():
        return candidate.resolve()
    known = table()
    if text in known:
        path = cache_dir() / known[text].file
        if path.is_file():
            return path
        raise MissingWeightsError(
            f"weights {text} not found at {path} — run `c6bench weights fetch {text}` "
            f"(or place {known[text].file} from {known[text].url} there)"
        )
    if os.sep in text or candidate.suffix:
        raise MissingWeightsError(f"weights file {candidate} does not exist; check the path")
    raise MissingWeightsError(f"unknown weights name {text!r}; known: {', '.join(sorted(known)) or 'none'}")


def verify(name: str, path: Path) -> None:
    """Check a cached file against its published hashes (`weights fetch`): a mismatch is an error."""
    check = integrity.check_file(path, spec(name), label=name)
    if check.verified == "mismatch":
        raise C6BenchError(f"{path}: has {check.against} for weights {name}: it does not match; delete the file "
                           f"and run `c6bench weights fetch {name} --force`")
    if check.verified == "no":
        logger.warning("no hash published for %s; computed sha256 %s (pin it in the adapter's WeightSpec)", name,
                       check.sha256)


def fetch(name: str, force: bool = False) -> Path:
    """Download a known weights file into the cache (explicit command only, resumable), then verify it.

    The download goes to ``<file>.part`` (an interrupted one resumes there) and is checked against the
    published hashes *before* it is renamed, so a corrupt or tampered download never lands under the name
    that `resolve` looks for.
    """
    from harness.download import download

    entry = spec(name)
    target = cache_dir() / entry.file
    if target.is_file() and not force:
        verify(name, target)
        return target
    partial = target.with_name(target.name + ".part")
    logger.info("downloading %s from %s", name, entry.url)
    try:
        download(entry.url, partial, timeout=FETCH_TIMEOUT_S, what=f"weights {name} from {entry.url}",
                 offline_hint=f"on an offline machine, download {entry.file} elsewhere and copy it to {target}",
                 rerun=f"run `c6bench weights fetch {name}` again")
    except DataError as exc:
        raise C6BenchError(str(exc)) from exc
    problem = integrity.mismatch_of_download(partial, entry)
    if problem:
        partial.unlink(missing_ok=True)  # a complete but wrong file cannot be resumed
        raise C6BenchError(f"the file downloaded from {entry.url} {problem} for weights {name}; it was not saved. "
                           "The upstream file changed or the download was tampered with")
    partial.replace(target)
    logger.info("weights %s saved to %s", name, target)
    return target


def spec_for_path(path: Path) -> WeightSpec | None:
    """The known release whose file name `path` carries (a local copy claims to be that release)."""
    for entry in table().values():
        if Path(entry.file).name == path.name:
            return entry
    return None


def check(weights: str) -> integrity.WeightsCheck:
    """Resolve a weights argument (name or path) and check it; a mismatch is logged loudly, once per file.

    Raises `MissingWeightsError` (with the fetch command) when the file is absent.
    """
    path = resolve(weights)
    known = table().get(weights)
    result = integrity.check_file(path, known or spec_for_path(path), weights)
    if result.verified == "mismatch" and (str(path), result.sha256) not in _WARNED:
        _WARNED.add((str(path), result.sha256))
        logger.warning("WEIGHTS %s (%s) ARE NOT THE RELEASED FILE: %s. Results from it are recorded as such "
                       "(manifest.json, the row's init); `c6bench weights fetch %s --force` gets the released one",
                       weights, path, result.against, known.name if known else "NAME")
    return result
