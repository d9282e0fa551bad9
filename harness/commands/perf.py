"""`c6bench perf`: run every `benchmarks/bench_*.py` and merge their figures into one JSON file.

Speed is measured here, by scripts that write numbers, never by timed tests. Each benchmark module
defines ``run(quick: bool = False) -> dict``; its result lands in the output under the module's area
name (``bench_metrics.py`` → ``"metrics"``).
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

from harness.dataset import REPO_ROOT

logger = logging.getLogger(__name__)

BENCH_DIR = REPO_ROOT / "benchmarks"


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("perf", help="run the performance benchmarks and write perf.json")
    parser.add_argument("--out", type=Path, default=Path("perf.json"), help="output JSON (default perf.json)")
    parser.add_argument("--only", nargs="*", default=None, help="areas to run (default: all)")
    parser.add_argument("--quick", action="store_true", help="fewer repeats (smoke run)")
    parser.set_defaults(func=run)


def _load(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(f"benchmarks.{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(args: argparse.Namespace) -> int:
    results: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    for path in sorted(BENCH_DIR.glob("bench_*.py")):
        area = path.stem.removeprefix("bench_")
        if args.only and area not in args.only:
            continue
        logger.info("benchmark %s", area)
        start = time.perf_counter()
        results[area] = _load(path).run(quick=args.quick)
        results[area]["_wall_s"] = round(time.perf_counter() - start, 2)
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    tmp.replace(args.out)
    sys.stdout.write(json.dumps(results, indent=2) + "\n")
    return 0
