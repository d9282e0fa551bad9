"""`c6bench stats`: instance morphology (the paper's Figure 2) of a dataset and, optionally, of a run.

Per class: area histogram, eccentricity (short/long axis) vs solidity (area / convex area) scatter and a
mean-size table. With ``--run``, each target × subset of the run's predictions is drawn next to the
ground truth of the same images, so a user sees whether a model's cells have the right shapes.
"""

from __future__ import annotations

import argparse
import logging
import sys

from harness.commands._args import path_arg

logger = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("stats",
                            help="morphology figures (area, eccentricity, solidity) of data and runs")
    parser.add_argument("--data", default="auto",
                        help="'auto', 'sample', 'glioma_c6', a dataset YAML or a Glioma C6 folder "
                             "(default auto)")
    parser.add_argument("--split", action="append", default=None, metavar="PART/SPLIT",
                        help="splits to describe (repeatable; default: every split of the dataset)")
    parser.add_argument("--run", type=path_arg, action="append", default=None, metavar="RUN_DIR",
                        help="also draw the predictions of this run next to the ground truth (repeatable)")
    parser.add_argument("--out", type=path_arg, required=True, help="output folder")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from harness import stats
    from harness.dataset import resolve_data
    from harness.io import ensure_dir

    cfg = resolve_data(args.data)
    ensure_dir(args.out)
    written = stats.write_stats(cfg, args.out, splits=args.split, runs=args.run or [])
    sys.stdout.write("\n".join(str(p) for p in written) + "\n")
    return 0
