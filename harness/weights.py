"""Known pretrained weights: name → file, URL, sha256, licence; a local cache; explicit fetching.

Each adapter declares its own `WeightSpec`s (``weights = (...)`` on the class), so this module holds no
per-model table. Weights live in ``$C6BENCH_WEIGHTS`` (default ``~/.cache/glioma-c6-bench``) and are
downloaded only by ``c6bench weights fetch NAME``. A missing file is an error with that exact command —
never a silent download or a silent fallback to another model.
"""

from __future__ import annotations

import logging
import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from harness.digest import file_digest, sha256_file
from harness.errors import C6BenchError, MissingWeightsError

logger = logging.getLogger(__name__)

CACHE_ENV = "C6BENCH_WEIGHTS"
FETCH_TIMEOUT_S = 20


@dataclass(frozen=True)
class WeightSpec:
    """One downloadable weights file.

    ``sha256=None`` means the upstream publishes no checksum and none has been recorded yet: `fetch`
    then prints the digest it computed so it can be pinned here.
    """

    name: str
    file: str
    url: str
    sha256: str | None
    licence: str
    description: str = ""
    adapter: str = ""


def cache_dir() -> Path:
    """The weights cache folder (not created here)."""
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "glioma-c6-bench")).expanduser()


def table() -> dict[str, WeightSpec]:
    """Every known weights entry, from every registered adapter, by name."""
    import adapters

    out: dict[str, WeightSpec] = {}
    for adapter_name in adapters.names():
        for spec in adapters.get(adapter_name).weights:
            if spec.name in out:
                raise C6BenchError(f"weights name {spec.name!r} is declared by two adapters")
            named = spec if spec.adapter else WeightSpec(**{**spec.__dict__, "adapter": adapter_name})
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


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file (cached by size and mtime: `harness.digest`)."""
    return file_digest(path)


def verify(name: str, path: Path) -> None:
    """Check a file against the recorded sha256 (no-op with a warning when none is recorded)."""
    expected = spec(name).sha256
    if expected is None:
        logger.warning("no sha256 recorded for %s; computed %s (pin it in the adapter's WeightSpec)",
                       name, sha256_of(path))
        return
    actual = sha256_of(path)
    if actual != expected:
        raise C6BenchError(f"{path}: sha256 {actual} does not match {expected} recorded for weights {name}; "
                           f"delete the file and run `c6bench weights fetch {name} --force`")


def fetch(name: str, force: bool = False) -> Path:
    """Download a known weights file into the cache (explicit command only), then verify it.

    The download goes to ``<file>.part`` and is checked *before* it is renamed, so a corrupt or
    tampered download never lands under the name that `resolve` looks for.
    """
    from tqdm import tqdm

    entry = spec(name)
    target = cache_dir() / entry.file
    if target.is_file() and not force:
        verify(name, target)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    logger.info("downloading %s from %s", name, entry.url)
    try:
        with (urllib.request.urlopen(entry.url, timeout=FETCH_TIMEOUT_S) as response,
              partial.open("wb") as out):
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=entry.file) as bar:
                while block := response.read(1 << 20):
                    out.write(block)
                    bar.update(len(block))
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise C6BenchError(
            f"could not download weights {name} from {entry.url} ({exc}); the network is unreachable or the "
            f"URL is gone — on an offline machine, download {entry.file} elsewhere and copy it to {target}"
        ) from exc
    actual = sha256_file(partial)
    if entry.sha256 is not None and actual != entry.sha256:
        partial.unlink(missing_ok=True)
        raise C6BenchError(
            f"the file downloaded from {entry.url} has sha256 {actual}, but {entry.sha256} is recorded for "
            f"weights {name}; it was not saved. The upstream file changed or the download was tampered with"
        )
    if entry.sha256 is None:
        logger.warning("no sha256 recorded for %s; computed %s (pin it in the adapter's WeightSpec)", name,
                       actual)
    partial.replace(target)
    logger.info("weights %s saved to %s", name, target)
    return target
