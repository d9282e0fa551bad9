"""`c6bench stage ROOT STAGE_ID`: execute one stage of a planned run (what local workers and cluster jobs run)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("stage", help="run one stage of a planned bench (used by --workers and --launcher slurm)")
    parser.add_argument("root", type=Path, help="run dir holding plan.json")
    parser.add_argument("stage_id", help="stage id, as `c6bench status` lists them")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from harness.launch import run_stage

    run_stage(args.root, args.stage_id)
    return 0
