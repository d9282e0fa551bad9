"""Atomic files: every file the harness writes appears whole or not at all.

One mechanism for all writers (JSON, text, bytes, and anything a library saves itself, such as
``torch.save`` or ``tifffile.imwrite``): write to a temporary name that is unique to this process and call
(``.<name>.<pid>.<random>.tmp`` in the same folder), then ``os.replace`` it onto the final name. A fixed temporary
name would be shared by concurrent writers and lose races; a killed writer leaves at most a hidden ``.tmp``.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def temp_path(path: Path) -> Path:
    """A temporary sibling of `path` no other process or call will use."""
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


@contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path to write to; on success it replaces `path`, on any error it is removed.

    For writers that take a file name (``torch.save(obj, str(tmp))``, ``tifffile.imwrite(tmp, ...)``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(path: Path | str, data: bytes) -> Path:
    """Write `data` to `path` atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: Path | str, text: str) -> Path:
    """Write UTF-8 `text` to `path` atomically; returns the path."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: Path | str, payload: Any, indent: int | None = None) -> Path:
    """Write `payload` as JSON atomically (compact unless `indent` is given); returns the path."""
    return write_text(path, json.dumps(payload, indent=indent))
