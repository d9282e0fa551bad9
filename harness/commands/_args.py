"""Argument types shared by the sub-commands: a bad value is an argparse error (usage + one line, exit 2).

``type=Path`` would turn ``--out ""`` into ``.`` (the current folder) without a word, so paths are refused
when empty; counts and sizes are refused when out of range, before anything runs.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path


def path_arg(text: str) -> Path:
    """A non-empty path (``""`` is not the current folder)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("empty path; give a file or folder name")
    return Path(text)


def int_at_least(low: int) -> Callable[[str], int]:
    """An integer >= `low`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    parse.__name__ = f"integer >= {low}"
    return parse
