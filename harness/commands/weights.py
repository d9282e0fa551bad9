"""`c6bench weights list|fetch NAME|path NAME`: the known pretrained weights, the only way to download them.

Nothing else in the harness touches the network for weights: a run that needs a missing file stops with the
exact `c6bench weights fetch NAME` command (see `harness.weights.resolve`).
"""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("weights", help="list, fetch or locate known pretrained weights")
    actions = parser.add_subparsers(dest="weights_command", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="known weights, their licence, whether they are in the cache")
    listing.set_defaults(func=run_list)
    fetch = actions.add_parser("fetch", help="download NAME into the cache, verify its sha256 (network)")
    fetch.add_argument("name", help="a known weights name (see `c6bench weights list`)")
    fetch.add_argument("--force", action="store_true", help="download again even if the file is present")
    fetch.set_defaults(func=run_fetch)
    path = actions.add_parser("path", help="print where NAME lives in the cache (present or not)")
    path.add_argument("name", help="a known weights name")
    path.set_defaults(func=run_path)


def run_list(args: argparse.Namespace) -> int:
    from harness import weights
    from harness.cache import CACHE_ENV

    cache = weights.cache_dir()
    rows = [("name", "adapter", "file", "status", "licence")]
    for name, entry in sorted(weights.table().items()):
        status = "present" if (cache / entry.file).is_file() else "absent"
        rows.append((name, entry.adapter, entry.file, status, entry.licence))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [f"cache dir: {cache}  (set {CACHE_ENV} to change it)"]
    for row in rows:
        cells = (cell.ljust(width) for cell, width in zip(row[:4], widths, strict=True))
        lines.append("  ".join(cells) + "  " + row[4])
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def run_fetch(args: argparse.Namespace) -> int:
    from harness import weights

    path = weights.fetch(args.name, force=args.force)
    sys.stdout.write(f"{path}\n")
    return 0


def run_path(args: argparse.Namespace) -> int:
    from harness import weights

    sys.stdout.write(f"{weights.path_of(args.name)}\n")
    return 0
