"""`c6bench status RUN_DIR`: the state of every stage of a run (done, running, failed with its log, ...)."""

from __future__ import annotations

import argparse
import json
import sys

from harness.commands._args import path_arg


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("status", help="show each stage of a run: pending, submitted, running, done, failed")
    parser.add_argument("run_dir", type=path_arg, help="run dir written by `c6bench bench` (holds plan.json)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from harness.plan import Plan
    from harness.status import stage_status

    rows = stage_status(Plan.load(args.run_dir))
    if args.json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return 0
    width = max(len(r["stage"]) for r in rows)
    counts: dict[str, int] = {}
    lines = []
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
        line = f"{r['stage']:<{width}}  {r['state']:<11}  {r['detail']}"
        if r["state"] in ("failed", "interrupted"):
            line += f"\n{'':<{width}}  {'':<11}  log: {r['log']}" + (f"  job log: {r['job_log']}" if r["job_log"] else "")
        lines.append(line)
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    sys.stdout.write("\n".join(lines) + f"\n\n{len(rows)} stages: {summary}\n")
    return 0
