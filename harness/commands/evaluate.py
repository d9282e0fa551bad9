"""`c6bench evaluate`: score any prediction file against any annotation file (also annotator vs annotator).

Writes ``OUT/metrics.json`` and ``OUT/per_image.csv`` and prints a table. Without ``--targets`` every
ground-truth category is its own target; with a dataset YAML, the targets of the part whose categories
the ground truth has.
"""

from __future__ import annotations

import argparse
import logging
import sys

from harness.commands._args import int_at_least, path_arg

logger = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("evaluate", help="P/R/F1/AP of a prediction file against a COCO annotation file")
    parser.add_argument("--gt", type=path_arg, required=True, help="ground truth: COCO instances JSON")
    parser.add_argument(
        "--pred",
        type=path_arg,
        required=True,
        help="predictions: COCO results JSON (list) or COCO instances JSON",
    )
    parser.add_argument("--out", type=path_arg, required=True, help="output folder (metrics.json, per_image.csv)")
    parser.add_argument(
        "--thresholds",
        type=float,
        nargs="+",
        default=[0.5, 0.75, 0.9],
        metavar="T",
        help="IoU thresholds (default 0.5 0.75 0.9)",
    )
    parser.add_argument(
        "--boundary",
        type=int_at_least(0),
        default=2,
        metavar="PX",
        help="drop instances touching the outer frame this wide, GT and predictions separately "
        "(default 2, as NeurIPS-CellSeg; 0 = off)",
    )
    parser.add_argument(
        "--resolve-gt",
        choices=("last", "first", "smallest"),
        default=None,
        help="non-overlapping mode: resolve the ground truth with this priority rule first "
        "(the paper's appendix); default: overlapping ground truth",
    )
    parser.add_argument(
        "--min-pixels",
        type=int_at_least(0),
        default=10,
        help="with --resolve-gt: resolved GT instances below this size are dropped (default 10)",
    )
    parser.add_argument(
        "--targets",
        type=path_arg,
        default=None,
        metavar="DATASET_YAML",
        help="dataset YAML whose targets to use (default: each GT category is a target)",
    )
    parser.add_argument(
        "--bootstrap",
        type=int_at_least(0),
        default=0,
        metavar="N",
        help="95%% bootstrap intervals over images with N resamples (default 0 = off)",
    )
    parser.add_argument("--seed", type=int_at_least(0), default=0, help="bootstrap seed (default 0)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from harness.coco import load_coco
    from harness.evaluate import evaluate
    from harness.evaluation import write_outputs
    from harness.io import ensure_dir
    from harness.predictions import load_predictions
    from harness.targets import targets_for

    ensure_dir(args.out)
    gt, categories = load_coco(args.gt)
    pred, pred_categories = load_predictions(args.pred, gt, categories)
    targets, pred_targets, skipped, paired = targets_for(
        set(categories.values()), pred_categories, args.targets
    )
    for target, reason in skipped.items():
        logger.warning("target %s skipped: %s", target, reason)
    evaluation = evaluate(
        gt,
        pred,
        targets,
        pred_targets,
        thresholds=args.thresholds,
        boundary=args.boundary,
        resolve_gt=args.resolve_gt,
        min_pixels=args.min_pixels,
        bootstrap=args.bootstrap,
        seed=args.seed,
    )
    evaluation.settings.update(
        {
            "gt_file": str(args.gt),
            "pred_file": str(args.pred),
            "pred_format": "coco_results" if pred_categories is None else "coco_instances",
            "targets_from": str(args.targets) if args.targets else "ground-truth categories",
            "skipped_targets": skipped,
            "category_pairing": paired,
        }
    )
    metrics_path, csv_path = write_outputs(evaluation, args.out)
    mode = "overlapping GT" if args.resolve_gt is None else f"GT resolved ({args.resolve_gt})"
    sys.stdout.write(f"{args.pred} vs {args.gt} — {mode}, boundary {args.boundary} px\n")
    if paired:
        sys.stdout.write(f"note: {paired}\n")
    sys.stdout.write(evaluation.table() + "\n")
    for target, reason in skipped.items():
        sys.stdout.write(f"skipped {target}: {reason}\n")
    sys.stdout.write(f"wrote {metrics_path} and {csv_path}\n")
    return 0
