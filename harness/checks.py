"""Value checks that run before any stage: types from the adapters' annotations, ranges from their `limits`.

The constructor of an adapter is the schema of its ``params`` and the keyword-only arguments of its ``train``
the schema of a schedule (`adapters.base`). Their annotations (``epochs: int``, ``diameter: float | None``,
``threshold_scales: Sequence[float]``) say which type a value must have, so ``epochs: "ten"`` fails when the
config is read, naming the file and key, instead of inside a stage hours later. Ranges cannot be read from an
annotation, so adapters declare them in a small ``limits`` mapping, one clause list per key::

    limits = {"sigma": "> 0", "tile_overlap": "in [0, 1)", "threshold_scales": "non-empty and > 0",
              "bsize": ">= 16 and multiple of 16", "scratch_encoder": ("vit_l", "small", "tiny")}

Clauses, joined by ``and``: ``> x``, ``>= x``, ``< x``, ``<= x``, ``in [a, b)`` (any bracket mix),
``non-empty`` and ``multiple of n``; a tuple lists the allowed values. For a list value, ``non-empty`` applies
to the list and every other clause to each element. ``None`` (where the annotation allows it) passes.
"""

from __future__ import annotations

import collections.abc
import inspect
import logging
import math
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.errors import ConfigError

logger = logging.getLogger(__name__)

_UNKNOWN = object()  # an annotation that cannot be evaluated here (a TYPE_CHECKING-only name): not checked


# --------------------------------------------------------------------------------------------- types


def annotations_of(func: Any, skip: int = 1) -> dict[str, Any]:
    """Parameter name → evaluated annotation (or `_UNKNOWN`) of `func`, after the first `skip` parameters."""
    namespace = {**vars(typing), "Path": Path, **getattr(func, "__globals__", {})}
    out = {}
    for param in list(inspect.signature(func).parameters.values())[skip:]:
        if param.kind not in (param.KEYWORD_ONLY, param.POSITIONAL_OR_KEYWORD):
            continue
        hint = param.annotation
        if hint is inspect.Parameter.empty:
            out[param.name] = typing.Any
            continue
        if isinstance(hint, str):
            try:
                hint = eval(hint, namespace)  # noqa: S307 - the adapter's own annotation text
            except Exception:  # noqa: BLE001 - e.g. a name imported under TYPE_CHECKING only
                hint = _UNKNOWN
        out[param.name] = hint
    return out


def matches(value: Any, hint: Any) -> bool:
    """Does `value` (as read from YAML) have the annotated type? ``bool`` is never an ``int`` or ``float``."""
    if hint is _UNKNOWN or hint is typing.Any or hint is object:
        return True
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(matches(value, a) for a in args)
    if hint is None or hint is type(None):
        return value is None
    if origin is typing.Literal:
        return value in args
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if hint is str:
        return isinstance(value, str)
    if hint is Path:
        return isinstance(value, (str, Path))
    if origin in (list, tuple, collections.abc.Sequence, typing.Sequence):
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(matches(v, a) for v, a in zip(value, args, strict=True))
        return not args or all(matches(v, args[0]) for v in value)
    if origin in (dict, collections.abc.Mapping, typing.Mapping):
        if not isinstance(value, dict):
            return False
        return not args or all(matches(k, args[0]) and matches(v, args[1]) for k, v in value.items())
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True


def describe(hint: Any) -> str:
    """Plain words for an annotation (``float | None`` → ``a number or null``)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(dict.fromkeys(describe(a) for a in args))
    if hint is None or hint is type(None):
        return "null"
    if origin is typing.Literal:
        return "one of " + ", ".join(map(repr, args))
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string", Path: "a path"}
    if hint in names:
        return names[hint]
    if origin in (list, tuple, collections.abc.Sequence, typing.Sequence):
        return "a list" + (f" of {_plural(describe(args[0]))}" if args else "")
    if origin in (dict, collections.abc.Mapping, typing.Mapping):
        return "a mapping"
    return getattr(hint, "__name__", str(hint))


def _plural(words: str) -> str:
    return {
        "an integer": "integers",
        "a number": "numbers",
        "a string": "strings",
        "true or false": "booleans",
        "a path": "paths",
    }.get(words, words)


def _shown(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})" if not isinstance(value, (list, dict)) else repr(value)


# --------------------------------------------------------------------------------------------- limits


_COMPARE = re.compile(r"^(>=|<=|>|<)\s*(\S+)$")
_INTERVAL = re.compile(r"^in\s*([\[(])\s*(\S+)\s*,\s*(\S+)\s*([\])])$")
_MULTIPLE = re.compile(r"^multiple of\s+(\d+)$")


def _clauses(rule: str) -> list[str]:
    return [c.strip() for c in rule.split(" and ") if c.strip()]


def _element_ok(value: Any, clause: str) -> bool:
    if clause == "non-empty":
        return True  # applies to the list, handled by the caller
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return True  # the type check speaks for non-numbers
    if m := _COMPARE.match(clause):
        op, bound = m.group(1), float(m.group(2))
        return {">": value > bound, ">=": value >= bound, "<": value < bound, "<=": value <= bound}[op]
    if m := _INTERVAL.match(clause):
        lo, hi = float(m.group(2)), float(m.group(3))
        return ((value >= lo) if m.group(1) == "[" else (value > lo)) and (
            (value <= hi) if m.group(4) == "]" else (value < hi)
        )
    if m := _MULTIPLE.match(clause):
        return float(value) % int(m.group(1)) == 0
    raise ValueError(f"limit clause {clause!r} is not understood (see harness.checks)")


def check_limit(value: Any, rule: str | tuple[Any, ...]) -> str | None:
    """What is wrong with `value` under `rule` (see the module docstring), or None when it is fine."""
    if value is None:
        return None
    if isinstance(rule, tuple):
        return None if value in rule else f"must be one of {', '.join(map(repr, rule))}"
    clauses = _clauses(rule)
    if isinstance(value, (list, tuple)):
        if "non-empty" in clauses and not value:
            return "must not be empty"
        bad = [v for v in value if not all(_element_ok(v, c) for c in clauses)]
        return f"every value must be {rule.replace('non-empty and ', '')}; {bad} are not" if bad else None
    return None if all(_element_ok(value, c) for c in clauses) else f"must be {rule}"


def validate_limits(limits: Mapping[str, Any]) -> None:
    """Fail on a clause nobody can read (a test runs this over every adapter's `limits`)."""
    for key, rule in limits.items():
        if isinstance(rule, tuple):
            continue
        for clause in _clauses(rule):
            if clause != "non-empty" and not (
                _COMPARE.match(clause) or _INTERVAL.match(clause) or _MULTIPLE.match(clause)
            ):
                raise ValueError(f"limits[{key!r}]: clause {clause!r} is not understood")


# --------------------------------------------------------------------------------------------- together


def check_values(
    func: Any,
    given: Mapping[str, Any],
    limits: Mapping[str, Any],
    where: Mapping[str, str] | str,
    skip: int = 1,
) -> None:
    """Type (from `func`'s annotations) and range (from `limits`) of every given value; the first problem raises.

    `where` names the place of each key (``{"epochs": "cfg.yaml: profiles.quick.train.epochs"}``) or is one
    prefix (the key is appended). Keys `func` does not take are left to `adapters.base.check_keys`.
    """
    hints = annotations_of(func, skip)
    for key, value in given.items():
        if key not in hints:
            continue
        place = where.get(key, key) if isinstance(where, Mapping) else f"{where}.{key}"
        if not matches(value, hints[key]):
            raise ConfigError(f"{place}: expected {describe(hints[key])}, got {_shown(value)}")
        if key in limits:
            problem = check_limit(value, limits[key])
            if problem:
                raise ConfigError(f"{place}: {problem}, got {value!r}")


# --------------------------------------------------------------------------------------------- a bench request


def _unique(values: Any, option: str, allowed: tuple[str, ...] | None = None) -> None:
    if not isinstance(values, (list, tuple)) or not values:
        raise ConfigError(
            f"{option}: give at least one value" + (f" ({', '.join(allowed)})" if allowed else "")
        )
    seen: set[Any] = set()
    for value in values:
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{option}: {value!r} is not a name")
        if value in seen:
            raise ConfigError(f"{option}: {value!r} is given twice; each value runs once")
        seen.add(value)
    unknown = [v for v in values if allowed is not None and v not in allowed]
    if unknown:
        raise ConfigError(f"{option}: unknown value(s) {', '.join(unknown)}; available: {', '.join(allowed)}")


def check_bench_spec(spec: Any, modes: tuple[str, ...]) -> None:
    """Every field of a `harness.run.BenchSpec` (CLI options or ``plan.json``), before anything is planned."""
    for name in ("model", "profile", "data", "device"):
        value = getattr(spec, name)
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"--{name}: expected a non-empty name, got {value!r}")
    _unique(spec.modes, "--modes", modes)
    if spec.targets is not None:
        _unique(spec.targets, "--targets")
    if getattr(spec, "seeds", None) is not None:  # plan.json holds lists: the same rules as the CLI options
        from harness.efficiency import parse_seeds

        parse_seeds(",".join(map(str, spec.seeds)))
    if getattr(spec, "train_images", None) is not None:
        from harness.efficiency import parse_sizes

        parse_sizes(",".join(map(str, spec.train_images)))
    for name, low in (("seed", 0), ("bootstrap", 0), ("boundary", 0), ("threads", 1)):
        value = getattr(spec, name)
        if value is None and name == "threads":
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ConfigError(f"--{name}: expected an integer >= {low}, got {value!r}")
