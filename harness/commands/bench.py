"""`c6bench bench`: zero-shot vs fine-tuned benchmark of one model or all (the product's main job).

``--launcher local`` runs the stages here (``--workers N``: N processes, one per GPU when there are
GPUs); ``--launcher slurm`` submits them as SLURM jobs through submitit and returns (see `c6bench status`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from harness.commands._args import int_at_least, path_arg
from harness.errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("bench", help="benchmark a model zero-shot and fine-tuned; prints the results table")
    parser.add_argument("--model", required=True,
                        help="registered model name (see `c6bench models`), several separated by commas, or all")
    parser.add_argument("--data", default="auto",
                        help="auto (Glioma C6 if downloaded, else the bundled sample), sample, glioma_c6, "
                             "a dataset YAML, or a folder with the Glioma C6 layout")
    parser.add_argument("--profile", default="quick", help="paper (the paper's schedules) or quick (CPU minutes)")
    parser.add_argument("--config", action="append", default=[], metavar="[MODEL=]YAML",
                        help="model YAML to use instead of configs/models/<model>.yaml (repeatable; MODEL= "
                             "needed when several models run)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--targets", nargs="+", action="extend", default=None,
                        help="targets to run (default: all of the dataset)")
    parser.add_argument("--modes", nargs="+", action="extend", default=None,
                        help="zero_shot and/or finetuned (default: both)")
    parser.add_argument("--out", type=path_arg, default=None,
                        help="run dir (default runs/<time>_<model>); an existing one is resumed")
    parser.add_argument("--resume", type=path_arg, default=None, help="resume this run dir (same as --out)")
    parser.add_argument("--seed", type=int_at_least(0), default=0,
                        help="seed of training, prediction and the bootstrap (with --seeds: zero-shot and bootstrap)")
    parser.add_argument("--seeds", type=_seeds, default=None, metavar="S,S,...",
                        help="fine-tune once per training seed (e.g. 0,1,2); zero-shot rows are not repeated")
    parser.add_argument("--train-images", type=_sizes, default=None, metavar="N,N,...,all",
                        help="fine-tune on nested, seeded subsets of the training split of these sizes "
                             "(e.g. 1,2,4,8,all); each seed draws its own chain (train_subsets.json)")
    parser.add_argument("--bootstrap", type=int_at_least(0), default=1000,
                        help="bootstrap resamples for 95%% intervals (0 = off)")
    parser.add_argument("--boundary", type=int_at_least(0), default=2,
                        help="frame width for the boundary rule (0 = off)")
    parser.add_argument("--rehearse", nargs="?", const=2, default=None, type=_steps, metavar="N",
                        help="rehearsal: the profile's real recipe with every schedule cut to N optimiser steps "
                             "(default 2) and every split to its first image; rows are marked, never mixed with "
                             "real ones")
    launch = parser.add_argument_group("launching (see README, 'Running on a cluster')")
    launch.add_argument("--launcher", choices=("local", "slurm"), default="local",
                        help="local: run here (default); slurm: one submitit job per stage with afterok dependencies")
    launch.add_argument("--workers", type=int_at_least(1), default=1,
                        help="local: parallel stage processes (one per visible GPU when there are GPUs)")
    launch.add_argument("--threads", type=int_at_least(1), default=None,
                        help="torch CPU threads per stage (default: all cores, or cores / workers); CPU results are "
                             "bit-identical across launchers for the same value")
    launch.add_argument("--launcher-config", type=path_arg, default=None, help="slurm: launcher YAML (options below)")
    launch.add_argument("--partition", default=None)
    launch.add_argument("--account", default=None)
    launch.add_argument("--qos", default=None)
    launch.add_argument("--time", dest="time_min", type=int_at_least(1), default=None, help="minutes per job")
    launch.add_argument("--gpus", dest="gpus_per_node", type=int_at_least(0), default=None, help="GPUs per train/predict job")
    launch.add_argument("--cpus", dest="cpus_per_task", type=int_at_least(1), default=None, help="CPUs per job")
    launch.add_argument("--mem", dest="mem_gb", type=float, default=None, help="memory per job (GB)")
    launch.add_argument("--array-parallelism", type=int_at_least(1), default=None,
                        help="at most this many first-wave jobs of the array run at once")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import time

    import adapters
    from harness.concurrency import run_dir_lock
    from harness.dataset import REPO_ROOT
    from harness.io import ensure_dir
    from harness.plan import BenchSpec, Plan
    from harness.run import Runner

    models = adapters.names() if args.model == "all" else _models(args.model)
    configs = _configs(args.config, models)
    if args.resume and args.out and args.resume.resolve() != args.out.resolve():
        raise ConfigError(f"--out {args.out} and --resume {args.resume} name different run dirs; give one")
    name = f"{time.strftime('%Y%m%d-%H%M%S')}_{'+'.join(models)}" + ("-rehearsal" if args.rehearse else "")
    root = args.resume or args.out or REPO_ROOT / "runs" / name
    modes = args.modes or ["zero_shot", "finetuned"]
    runners = [Runner(BenchSpec(
        model=m, data=args.data, profile=args.profile, device=args.device, targets=args.targets, modes=modes,
        out=root if len(models) == 1 else root / m, seed=args.seed, bootstrap=args.bootstrap,
        boundary=args.boundary, config=configs.get(m), threads=args.threads, rehearse=args.rehearse,
        seeds=args.seeds, train_images=args.train_images,
    )) for m in models]
    ensure_dir(root)
    with run_dir_lock(root):  # a second bench on this --out fails here, before touching plan.json
        return _launch(args, Plan.create(runners, root), runners)


def _launch(args: argparse.Namespace, plan: Any, runners: list[Any]) -> int:
    if args.launcher == "slurm":
        from harness.launch_slurm import SlurmOptions, submit

        options = SlurmOptions.from_yaml(args.launcher_config) if args.launcher_config else SlurmOptions()
        options = options.merged({k: getattr(args, k) for k in ("partition", "account", "qos", "time_min",
                                                                 "gpus_per_node", "cpus_per_task", "mem_gb",
                                                                 "array_parallelism")})
        jobs = submit(plan, options)
        sys.stdout.write(f"submitted {len(jobs)} job(s) for {len(plan.stages)} stage(s); "
                         f"follow with: c6bench status {plan.root}\n")
        return 0
    from harness.launch_local import run_local

    run_local(plan, workers=args.workers)
    for runner in runners:
        sys.stdout.write((runner.run_dir / "results.md").read_text() + f"\nrun dir: {runner.run_dir}\n")
    return 0


def _seeds(text: str) -> tuple[int, ...]:
    from harness.efficiency import parse_seeds

    try:
        return parse_seeds(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc).split(": ", 1)[1]) from None


def _sizes(text: str) -> tuple[int | str, ...]:
    from harness.efficiency import parse_sizes

    try:
        return parse_sizes(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc).split(": ", 1)[1]) from None


def _models(text: str) -> list[str]:
    """``--model a,b`` → names; empty names or one given twice are refused (nothing would run, or run twice)."""
    names = [m.strip() for m in text.split(",")]
    if not any(names) or "" in names:
        raise ConfigError(f"--model {text!r}: give model names separated by commas (see `c6bench models`), or all")
    twice = sorted({m for m in names if names.count(m) > 1})
    if twice:
        raise ConfigError(f"--model {text!r}: {', '.join(twice)} given twice")
    return names


def _steps(value: str) -> int:
    """``--rehearse N``: an integer >= 1, refused by argparse before anything runs."""
    from harness.rehearsal import check_steps

    try:
        return check_steps(value)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--rehearse ")) from None


def _configs(values: list[str], models: list[str]) -> dict[str, Path]:
    """``--config [MODEL=]YAML`` values → model → YAML (a bare path only when one model runs)."""
    out: dict[str, Path] = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep:
            if len(models) != 1:
                raise ConfigError(f"--config {value}: say which model it is for (MODEL=YAML) when several run")
            name, path = models[0], value
        if name not in models:
            raise ConfigError(f"--config {value}: model {name!r} is not part of this bench ({', '.join(models)})")
        out[name] = Path(path)
    return out
