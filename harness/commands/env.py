"""`c6bench env prepare [MODEL…|all]` / `c6bench env list`: the per-model environments (`harness.envs`).

``prepare`` is the only step that installs anything (from the package registry, once; ``make setup`` runs it
for every shipped model); runs never download: a model whose environment is missing stops naming this command.
"""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("env", help="prepare or list the per-model environments (own requirements)")
    actions = parser.add_subparsers(dest="env_command", required=True, metavar="ACTION")
    prepare = actions.add_parser("prepare", help="install declared requirements into .envs/ (registry)")
    prepare.add_argument("models", nargs="*", default=["all"], metavar="MODEL",
                         help="models to prepare (default: all models that declare requirements)")
    prepare.add_argument("--pip-arg", action="append", default=[], metavar="ARG",
                         help="extra argument for pip (repeatable), e.g. --pip-arg=--no-index "
                              "--pip-arg=--find-links=DIR for an offline wheel folder")
    prepare.set_defaults(func=run_prepare)
    listing = actions.add_parser("list", help="each model's requirements, folder, prepared or not, size")
    listing.set_defaults(func=run_list)


def _selected(models: list[str]) -> list[str]:
    import adapters
    from harness import envs
    from harness.errors import ConfigError

    names = adapters.names() if "all" in models else models
    plain = [n for n in names if envs.for_model(n) is None]  # also checks that every name is a model
    if plain and "all" not in models:
        raise ConfigError(f"model(s) {', '.join(plain)} declare no requirements: they run in the project's "
                          "own environment, nothing to prepare")
    return [n for n in names if n not in plain]


def run_prepare(args: argparse.Namespace) -> int:
    from harness import envs

    for name in _selected(args.models):
        env = envs.for_model(name)
        was_ready = env.ready
        record = envs.prepare(env, pip_args=args.pip_arg)
        state = "ready" if was_ready else f"prepared in {record.get('seconds', 0):.1f} s"
        packages = ", ".join(f"{k} {v}" for k, v in record.get("packages", {}).items())
        sys.stdout.write(f"{name}: {state}, {record.get('bytes', 0) / 1e6:.1f} MB, {packages} → {env.path}\n")
    return 0


def run_list(args: argparse.Namespace) -> int:
    import adapters
    from harness import envs

    rows = [("model", "requirements", "prepared", "size", "path")]
    for name in adapters.names():
        env = envs.for_model(name)
        if env is None:
            rows.append((name, "-", "-", "-", "(project environment)"))
            continue
        record = env.record()
        size = f"{record['bytes'] / 1e6:.1f} MB" if env.ready and "bytes" in record else "-"
        rows.append((name, " ".join(env.requirements), "yes" if env.ready else "no", size, str(env.path)))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [f"environments: {envs.envs_root()}  (set {envs.ROOT_ENV} to change it)"]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + "  " + r[4] for r in rows]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0
