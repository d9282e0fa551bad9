"""`c6bench` command line: one sub-command per module in `harness.commands` (each has ``register``).

The CLI only parses arguments and calls library functions; a `C6BenchError` or an ``OSError`` (a file that
cannot be read or written: path and cause) is printed as one line (``error: ...``) and exits with status 2;
Ctrl-C exits with 130 and a one-line note.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
from collections.abc import Sequence

from harness import __version__, commands
from harness.errors import C6BenchError
from harness.io import describe_os_error

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    """The parser with every sub-command found in `harness.commands`."""
    parser = argparse.ArgumentParser(prog="c6bench", description="Glioma C6 cell-segmentation benchmark")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda i: i.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{commands.__name__}.{info.name}").register(sub)
    return parser


def configure_logging(verbose: bool) -> None:
    """Plain, timestamped log lines on stderr (tqdm bars share the stream)."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `c6bench` and `python -m harness`."""
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    try:
        return int(args.func(args) or 0)
    except C6BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)  # noqa: T201 - the CLI's own user-facing output
        return 2
    except OSError as exc:  # a file that cannot be read or written: the path and the cause, no traceback
        logger.debug("OSError", exc_info=True)
        print(f"error: {describe_os_error(exc)}", file=sys.stderr)  # noqa: T201
        return 2
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume (finished stages are kept)",  # noqa: T201
              file=sys.stderr)
        return 130
