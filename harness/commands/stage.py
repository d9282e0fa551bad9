"""`c6bench stage ROOT STAGE_ID`: execute one stage of a planned run (what local workers and cluster jobs run)."""

from __future__ import annotations

import argparse

from harness.commands._args import path_arg


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("stage", help="run one stage of a planned bench (used by --workers and --launcher slurm)")
    parser.add_argument("root", type=path_arg, help="run dir holding plan.json")
    parser.add_argument("stage_id", help="stage id, as `c6bench status` lists them")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from harness.concurrency import exit_with_parent
    from harness.run import run_stage

    exit_with_parent()  # a worker of `bench --workers` ends with its launcher
    run_stage(args.root, args.stage_id)
    return 0
