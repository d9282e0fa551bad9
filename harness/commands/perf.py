"""`c6bench perf`: run every `benchmarks/bench_*.py` and merge their figures into one JSON file.

Speed is measured here, by scripts that write numbers, never by timed tests. Each benchmark module
defines ``run(quick: bool = False) -> dict``; its result lands in the output under the module's area
name (``bench_metrics.py`` → ``"metrics"``). The JSON goes to ``--out``; stdout gets a compact table
(area, figure, value) of the scalar figures, long free-text notes left out (they stay in the JSON).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from harness.commands._args import path_arg
from harness.dataset import REPO_ROOT
from harness.errors import ConfigError
from harness.io import ensure_dir, write_text

logger = logging.getLogger(__name__)

BENCH_DIR = REPO_ROOT / "benchmarks"


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("perf", help="run the performance benchmarks and write perf.json")
    parser.add_argument("--out", type=path_arg, default=Path("perf.json"), help="output JSON (default perf.json)")
    parser.add_argument("--only", nargs="*", default=None, help="areas to run (default: all)")
    parser.add_argument("--quick", action="store_true", help="fewer repeats (smoke run)")
    parser.set_defaults(func=run)


def _load(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(f"benchmarks.{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses (and pickling) look the module up by name
    spec.loader.exec_module(module)
    return module


def run(args: argparse.Namespace) -> int:
    results: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    ensure_dir(Path(args.out).resolve().parent, "--out")
    paths = {path.stem.removeprefix("bench_"): path for path in sorted(BENCH_DIR.glob("bench_*.py"))}
    unknown = sorted(set(args.only or ()) - set(paths))
    if unknown:
        raise ConfigError(f"perf --only: no benchmark named {unknown}; the areas are {sorted(paths)}")
    failed = []
    total = time.perf_counter()
    for area, path in paths.items():
        if args.only and area not in args.only:
            continue
        logger.info("benchmark %s", area)
        start = time.perf_counter()
        try:
            results[area] = _load(path).run(quick=args.quick)
            if results[area].get("counts_match") is False:  # its figures stay, but a wrong count fails the run
                logger.error("benchmark %s: %s", area, "; ".join(results[area].get("mismatches", ())))
                failed.append(area)
        except Exception as exc:  # noqa: BLE001 - one broken benchmark must not lose the others' figures
            logger.exception("benchmark %s failed", area)
            results[area] = {"error": f"{type(exc).__name__}: {exc}"}
            failed.append(area)
        results[area]["_wall_s"] = round(time.perf_counter() - start, 2)
    results["wall_s"] = round(time.perf_counter() - total, 2)
    write_text(args.out, json.dumps(results, indent=2) + "\n")
    sys.stdout.write(format_table(results) + f"\nwrote {args.out} ({results['wall_s']} s)\n")
    if failed:
        sys.stderr.write(f"error: benchmarks failed: {', '.join(failed)} (see {args.out} and the log)\n")
        return 1
    return 0


MAX_TEXT = 48  # longer strings (explanatory notes, commands) stay in the JSON only


def table_rows(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(area, dotted figure name, value) for every scalar or short list figure of every area."""
    rows: list[tuple[str, str, str]] = []

    def walk(area: str, prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(area, f"{prefix}.{key}" if prefix else str(key), item)
            return
        text = json.dumps(value) if isinstance(value, (list, bool)) or value is None else str(value)
        if prefix.split(".")[-1] == "error":  # a failure always shows, shortened
            rows.append((area, prefix, text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 3] + "..."))
        elif len(text) <= MAX_TEXT:
            rows.append((area, prefix, text))

    for area, figures in results.items():
        if not isinstance(figures, dict) or area == "machine":
            continue
        walk(area, "", figures)
    return rows


def format_table(results: dict[str, Any]) -> str:
    """A fixed-width three-column table for the terminal."""
    rows = [("area", "figure", "value"), *table_rows(results)]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)
