"""`c6bench report RUN_DIR... --out DIR`: the paper's tables, paired comparisons, figures and report.html.

Each argument is a run directory (``runs/<time>_<model>/``) or a folder of them (``make report`` passes
``runs``). Nothing is recomputed from models: tables come from each run's ``results.json``, comparisons
from ``per_image.csv``, figures from the saved predictions and the ground truth.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from harness.commands._args import int_at_least, path_arg

logger = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("report",
                            help="tables, comparisons, overlays, morphology and report.html from runs")
    parser.add_argument("runs", nargs="+", type=path_arg, metavar="RUN_DIR",
                        help="run directories, or folders holding run directories (e.g. runs)")
    parser.add_argument("--out", type=path_arg, required=True, help="output folder (e.g. reports)")
    parser.add_argument("--data", default=None,
                        help="dataset for the figures' ground truth (default: the one each run recorded)")
    parser.add_argument("--overlay-images", type=int_at_least(0), default=1, metavar="N",
                        help="full-image overlays per prediction file (default 1)")
    parser.add_argument("--sheet-images", type=int_at_least(0), default=2, metavar="N",
                        help="zoomed tiles per prediction file on each run's contact sheet (default 2)")
    parser.add_argument("--bootstrap", type=int_at_least(0), default=2000, metavar="N",
                        help="bootstrap replicates of the paired comparison (default 2000)")
    parser.add_argument("--seed", type=int_at_least(0), default=0, help="bootstrap seed (default 0)")
    parser.add_argument("--no-figures", action="store_true", help="tables and comparisons only")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from harness.dataset import resolve_data
    from harness.io import ensure_dir
    from harness.report import generate_report

    data = resolve_data(args.data) if args.data else None
    ensure_dir(args.out)
    summary = generate_report(args.runs, args.out, data=data, overlay_images=args.overlay_images,
                              sheet_images=args.sheet_images,
                              n_boot=args.bootstrap, seed=args.seed, figures=not args.no_figures)
    table2 = (args.out / "table2.md").read_text()
    shown = {k: v for k, v in summary.items() if k != "files"}
    sys.stdout.write(table2 + "\n" + json.dumps(shown, indent=2) + "\n")
    sys.stdout.write(f"report: {args.out / 'report.html'}\n")
    return 0
