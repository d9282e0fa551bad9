"""`c6bench bench`: zero-shot vs fine-tuned benchmark of one model (the product's main job)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("bench", help="benchmark a model zero-shot and fine-tuned; prints the results table")
    parser.add_argument("--model", required=True, help="registered model name (see `c6bench models`)")
    parser.add_argument("--data", default="auto",
                        help="auto (Glioma C6 if downloaded, else the bundled sample), sample, glioma_c6, "
                             "a dataset YAML, or a folder with the Glioma C6 layout")
    parser.add_argument("--profile", default="quick", help="paper (the paper's schedules) or quick (CPU minutes)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--targets", nargs="*", default=None, help="targets to run (default: all of the dataset)")
    parser.add_argument("--modes", nargs="*", default=["zero_shot", "finetuned"], help="zero_shot and/or finetuned")
    parser.add_argument("--out", type=Path, default=None,
                        help="run dir (default runs/<time>_<model>); an existing one is resumed")
    parser.add_argument("--resume", type=Path, default=None, help="resume this run dir (same as --out)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for 95%% intervals (0 = off)")
    parser.add_argument("--boundary", type=int, default=2, help="frame width for the boundary rule (0 = off)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from harness.run import BenchSpec, run_bench

    run_dir = run_bench(BenchSpec(
        model=args.model, data=args.data, profile=args.profile, device=args.device, targets=args.targets,
        modes=args.modes, out=args.resume or args.out, seed=args.seed, bootstrap=args.bootstrap,
        boundary=args.boundary,
    ))
    sys.stdout.write((run_dir / "results.md").read_text() + f"\nrun dir: {run_dir}\n")
    return 0
