"""`c6bench models`: the registered adapters, their traits and known weights (``--markdown``: the README's tables).

The README's model and weights tables are this command's ``--markdown`` output (a test checks they match), so a
new adapter appears in them by being registered, never by someone remembering to edit a list.
"""

from __future__ import annotations

import argparse
import sys

MODELS_BEGIN, MODELS_END = "<!-- models: `c6bench models --markdown` -->", "<!-- /models -->"


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("models", help="list registered models and their known weights")
    parser.add_argument("--markdown", action="store_true", help="print the README's model and weights tables")
    parser.set_defaults(func=run)


def markdown() -> str:
    """The README block: one row per registered model, then one row per (model, licence) of known weights."""
    import adapters

    lines = [MODELS_BEGIN, "", "| model | what | one model for | training data | own environment |",
             "|---|---|---|---|---|"]
    weights = ["", "| weights | model | licence |", "|---|---|---|"]
    for name in adapters.names():
        cls = adapters.get(name)
        lines.append(f"| `{name}` | {cls.description} | {'all classes' if cls.multiclass else 'each target'} | "
                     f"{'label maps (overlaps flattened)' if cls.needs_label_maps else 'overlapping instances'} | "
                     f"{' '.join(f'`{r}`' for r in cls.requirements) or '-'} |")
        by_licence: dict[str, list[str]] = {}
        for spec in cls.weights:
            by_licence.setdefault(spec.licence, []).append(f"`{spec.name}`")
        weights += [f"| {', '.join(names)} | {name} | {licence} |" for licence, names in by_licence.items()]
    return "\n".join([*lines, *weights, "", MODELS_END]) + "\n"


def run(args: argparse.Namespace) -> int:
    import adapters
    from harness import envs, weights

    if args.markdown:
        sys.stdout.write(markdown())
        return 0
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
