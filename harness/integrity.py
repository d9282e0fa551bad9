"""Is this weights file the released one? Published hashes, checked at fetch and recorded at run time.

Upstreams publish hashes in two ways, and both are checked:

- a full digest in the adapter's `WeightSpec` (``sha256`` / ``md5``: MEDIAR's files are known by md5);
- a prefix in the release file name. SAM's ``sam_vit_b_01ec64.pth``, ``sam_vit_l_0b3195.pth`` and
  ``sam_vit_h_4b8939.pth`` carry the first 6 hex digits of the file's **md5** (01ec64d29a2fca3f0661936605ae66f8
  for ViT-B, as every SAM downloader that verifies it uses), not of its sha256; torch.hub / torchvision names
  ``<name>-<hex>.<ext>`` (``resnet50-0676ba61.pth``) carry a **sha256** prefix (what
  ``torch.hub.download_url_to_file(hash_prefix=...)`` checks).

The file-name rules are applied to the known releases' file names (a date such as ``run-20240101.pt`` would
look like a prefix); a local file whose name is a known release's name is held to that release's hashes.
Where nothing is published, the file's sha256 is recorded, so a result can still be traced to the exact bytes.

Verdicts: ``yes`` (every published hash matches), ``no`` (nothing published: sha256 recorded only),
``mismatch``. At ``weights fetch`` a mismatch is an error (`harness.weights.fetch`); at run time it is a loud
warning, written into the run manifest and the row's ``init`` (``pretrained:sam_vit_b (md5 mismatch: not the
released file)``) — a rebuilt or hand-copied file is never silently taken for the released one.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.digest import file_digest, hash_file

if TYPE_CHECKING:
    from adapters.base import WeightSpec

logger = logging.getLogger(__name__)

#: (pattern on the file's base name, algorithm of the prefix it carries)
NAME_RULES = (
    (re.compile(r"^sam_vit_[bhl]_([0-9a-f]{6})\.pth$"), "md5"),
    (re.compile(r"^[A-Za-z0-9_.]+(?:-[A-Za-z0-9_.]+)*-([0-9a-f]{8,64})\.(?:pth|pt|bin|ckpt)$"), "sha256"),
)


@dataclass(frozen=True)
class Published:
    """One published hash: the algorithm, a full digest or a prefix of it, and where it comes from."""

    algorithm: str
    value: str
    source: str  # "recorded" (in the WeightSpec) or "file name"

    def describe(self) -> str:
        kind = "prefix " if len(self.value) < {"md5": 32, "sha256": 64}[self.algorithm] else ""
        where = "is published in its file name" if self.source == "file name" else "is recorded"
        return f"{self.algorithm} {kind}{self.value} {where}"


def published(entry: WeightSpec) -> list[Published]:
    """Every hash published for a known weights file (full digests first, then the file-name prefix)."""
    out = [Published(algo, value.lower(), "recorded")
           for algo, value in (("sha256", entry.sha256), ("md5", entry.md5)) if value]
    base = Path(entry.file).name
    for pattern, algorithm in NAME_RULES:
        match = pattern.match(base)
        if match:
            out.append(Published(algorithm, match.group(1), "file name"))
            break
    return out


@dataclass(frozen=True)
class WeightsCheck:
    """What a stage used: the name, the file, its sha256 and whether it is the released file."""

    name: str
    path: Path
    sha256: str
    verified: str  # "yes" | "no" | "mismatch"
    against: str = ""  # what was compared (and, on a mismatch, what was found)

    def note(self) -> str:
        """Suffix for a row's ``init``: empty unless the file is not the released one."""
        if self.verified != "mismatch":
            return ""
        algorithm = self.against.split(" ", 1)[0]
        return f" ({algorithm} mismatch: not the released file)"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "path": str(self.path), "sha256": self.sha256, "verified": self.verified,
                "against": self.against}


def _compare(hashes: list[Published], digest: Callable[[str], str]) -> tuple[str, str]:
    """``(verdict, what was compared)``; `digest(algorithm)` gives the file's digest."""
    if not hashes:
        return "no", "no hash published"
    for item in hashes:
        actual = digest(item.algorithm)
        if not actual.startswith(item.value):
            return "mismatch", f"{item.algorithm} {actual}, but {item.describe()}"
    return "yes", ", ".join(item.describe() for item in hashes)


def check_file(path: Path, entry: WeightSpec | None, label: str) -> WeightsCheck:
    """Compare a file with the hashes published for `entry` (digests cached: a 2.5 GB file is read once)."""
    path = Path(path)
    verdict, against = _compare(published(entry) if entry else [], lambda algo: file_digest(path, algo))
    return WeightsCheck(label, path, file_digest(path), verdict, against)


def mismatch_of_download(path: Path, entry: WeightSpec) -> str:
    """Empty when a finished download matches every published hash, else what differs (uncached: a part file)."""
    hashes = published(entry)
    digests = hash_file(path, sorted({"sha256", *(h.algorithm for h in hashes)}))
    verdict, against = _compare(hashes, digests.__getitem__)
    if verdict == "no":
        logger.warning("no hash published for %s; computed sha256 %s (pin it in the adapter's WeightSpec)",
                       entry.name, digests["sha256"])
    return f"has {against}" if verdict == "mismatch" else ""
