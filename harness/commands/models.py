"""`c6bench models`: the registered adapters, their traits and known weights."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("models", help="list registered models and their known weights")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import adapters
    from harness import envs, weights

    rows = []
    for name in adapters.names():
        cls = adapters.get(name)
        known = ", ".join(
            f"{w.name} ({'present' if (weights.cache_dir() / w.file).is_file() else 'absent'})" for w in cls.weights
        )
        env = envs.of(cls)
        own = (f"\n{'':12} own environment: {' '.join(env.requirements)} ("
               f"{'prepared' if env.ready else f'not prepared: c6bench env prepare {name}'})") if env else ""
        traits = f"multiclass={str(cls.multiclass):<5} label_maps={str(cls.needs_label_maps):<5}"
        rows.append(f"{name:<12} {traits} weights: {known or '-'}\n{'':12} {cls.description}{own}")
    sys.stdout.write("\n".join(rows) + "\n")
    return 0
