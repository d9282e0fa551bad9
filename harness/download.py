"""The one downloader, for the dataset and the weights: resumable over HTTP ``Range``, fails fast offline.

Only the explicit fetch commands call it (`c6bench data fetch`, `c6bench weights fetch`). Bytes go to a
``.part`` file next to the target; a rerun asks the server for the rest with ``Range: bytes=<size>-``
(a server that ignores it answers 200 with the whole file, which restarts the part file; 416 means the
part file is already complete). An interrupted transfer keeps what arrived, so the 2.5 GB SAM ViT-H file
or the dataset archive never starts over. Callers verify the part file (zip CRCs, published hashes)
before renaming it to its final name.
"""

from __future__ import annotations

import logging
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.errors import DataError

logger = logging.getLogger(__name__)

#: Seconds to wait for a connection / a read: short, so an offline machine fails fast.
TIMEOUT_S = 20.0
CHUNK = 1 << 20

Opener = Callable[..., Any]


def _request(url: str, offset: int) -> urllib.request.Request:
    headers = {"User-Agent": "glioma-c6-bench"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    return urllib.request.Request(url, headers=headers)


def _total_size(response: Any, offset: int, resumed: bool) -> int | None:
    """Expected size of the complete file, from Content-Range (resumed) or Content-Length."""
    content_range = response.headers.get("Content-Range") if response.headers else None
    if resumed and content_range and "/" in content_range:
        tail = content_range.rsplit("/", 1)[1].strip()
        return int(tail) if tail.isdigit() else None
    length = response.headers.get("Content-Length") if response.headers else None
    if length and str(length).isdigit():
        return int(length) + (offset if resumed else 0)
    return None


def download(url: str, part: Path, timeout: float = TIMEOUT_S, opener: Opener | None = None,
             what: str = "", offline_hint: str = "", rerun: str = "run the fetch again") -> Path:
    """Download ``url`` into ``part``, resuming from its current size; returns ``part`` when complete.

    Errors are `DataError`s that say how many bytes were kept for resuming; `what` (default: the URL)
    names the download, `offline_hint` (what to do without network) and `rerun` (the command that
    resumes) complete their messages.
    """
    from tqdm import tqdm

    opener = opener or urllib.request.urlopen
    part.parent.mkdir(parents=True, exist_ok=True)
    offset = part.stat().st_size if part.is_file() else 0
    if offset:
        logger.info("resuming %s at %d bytes", part, offset)
    total = None
    try:
        with opener(_request(url, offset), timeout=timeout) as response:
            status = getattr(response, "status", None) or getattr(response, "code", None)
            resumed = offset > 0 and status == 206
            if offset and not resumed:
                logger.warning(
                    "the server ignored the Range request (status %s): downloading from the start", status
                )
                offset = 0
            total = _total_size(response, offset, resumed)
            with (
                part.open("ab" if resumed else "wb") as out,
                tqdm(total=total, initial=offset, unit="B", unit_scale=True,
                     desc=part.name.removesuffix(".part")) as bar,
            ):
                while block := response.read(CHUNK):
                    out.write(block)
                    bar.update(len(block))
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # asked for bytes past the end: the part file is already complete
            return part
        raise DataError(
            f"download of {what or url} failed: HTTP {exc.code} {exc.reason}; {part} kept for resuming"
        ) from exc
    except (OSError, ValueError) as exc:
        have = part.stat().st_size if part.is_file() else 0
        kept = f"{part} keeps the {have} bytes that arrived and a rerun resumes; " if have else ""
        if not have:
            part.unlink(missing_ok=True)
        raise DataError(
            f"could not download {what or url} ({type(exc).__name__}: {exc}). The network is unreachable or the URL "
            f"is gone; {kept}{offline_hint}"
        ) from exc
    size = part.stat().st_size
    if total is not None and size != total:
        raise DataError(f"{part}: download stopped at {size} of {total} bytes; {rerun} to resume")
    return part
