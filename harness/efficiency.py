"""Seeds and training-set size as experiment dimensions: nested subsets, aggregates over seeds, label efficiency.

A lab deciding whether to annotate its own images asks how many it needs and whether the gap between two rows
exceeds run-to-run noise. Bootstrap intervals cover image sampling only; these functions cover the training side:

- `nested_subsets`: the ``--train-images`` subsets of one seed, drawn from ONE seeded permutation of the training
  images, so the 4-image subset contains the 2-image one (the curve moves because of added images, not because of
  a different draw). Each seed draws its own chain: the spread over seeds covers which images were annotated as well
  as the training noise.
- `aggregate`: mean, sd (sample, n-1), min and max over seeds of each score, per (model, mode, target, subset,
  GT mode, train size).
- `images_to_reach`: the smallest training size whose mean F1 reaches a fraction of the all-images F1.
- `seed_gap`: two models compared on matched seeds, and whether the gap exceeds the seed-to-seed spread.

Pure functions over result rows (`harness.results.ResultRow`); no I/O.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from harness.errors import ConfigError

if TYPE_CHECKING:
    from harness.results import ResultRow

logger = logging.getLogger(__name__)

ALL = "all"
SCORES = ("f1", "ap", "precision", "recall")  # pooled scores aggregated over seeds (IoU 0.5 unless asked)


def parse_seeds(text: str, option: str = "--seeds") -> tuple[int, ...]:
    """``"0,1,2"`` → ``(0, 1, 2)``; non-negative, distinct integers, else a ConfigError naming the option."""
    try:
        seeds = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise ConfigError(f"{option} {text!r}: give comma-separated integers, e.g. 0,1,2") from None
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise ConfigError(f"{option} {text!r}: give distinct non-negative integers, e.g. 0,1,2")
    return seeds


def parse_sizes(text: str, option: str = "--train-images") -> tuple[int | str, ...]:
    """``"1,2,4,all"`` → ``(1, 2, 4, "all")``: positive, distinct sizes in increasing order, ``all`` last."""
    sizes: list[int | str] = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        if part == ALL:
            sizes.append(ALL)
            continue
        try:
            n = int(part)
        except ValueError:
            raise ConfigError(f"{option} {text!r}: {part!r} is neither a number of images nor 'all'") from None
        if n < 1:
            raise ConfigError(f"{option} {text!r}: sizes are numbers of training images, at least 1")
        sizes.append(n)
    numbers = [s for s in sizes if s != ALL]
    if not sizes or len(set(sizes)) != len(sizes) or numbers != sorted(numbers) or ALL in sizes[:-1]:
        raise ConfigError(f"{option} {text!r}: give distinct sizes in increasing order, 'all' last, e.g. 1,2,4,all")
    return tuple(sizes)


def nested_subsets(names: Sequence[str], sizes: Sequence[int | str], seed: int) -> dict[int | str, tuple[str, ...]]:
    """The training images of each size for one seed: prefixes of one seeded permutation of the sorted names.

    A size larger than the split is an error (a silently smaller subset would mislabel the curve's x axis).
    """
    pool = sorted(names)
    too_big = [s for s in sizes if s != ALL and int(s) > len(pool)]
    if too_big:
        raise ConfigError(f"--train-images {','.join(map(str, sizes))}: the training split has {len(pool)} "
                          f"image(s), fewer than {too_big[0]}; give sizes up to {len(pool)} (or 'all')")
    order = list(pool)
    random.Random(seed).shuffle(order)
    return {s: tuple(pool) if s == ALL else tuple(sorted(order[: int(s)])) for s in sizes}


def size_value(size: int | str, n_all: int) -> int:
    """A size as a number of images (``all`` = the whole split)."""
    return n_all if size == ALL else int(size)


# --------------------------------------------------------------------------------------------- aggregates


@dataclass(frozen=True)
class Spread:
    """One score over seeds: n seeds, mean, sample sd (0 for one seed), min, max."""

    n: int
    mean: float
    sd: float
    min: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        n = len(values)
        mean = sum(values) / n
        sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
        return cls(n, mean, sd, min(values), max(values))

    def to_dict(self) -> dict[str, float]:
        return {"n": self.n, "mean": self.mean, "sd": self.sd, "min": self.min, "max": self.max}


def score(row: ResultRow, name: str, gt_mode: str = "overlap", iou: str = "0.5") -> float:
    """A pooled score of an ``ok`` result row (``metrics[gt_mode].pooled[iou][name]``)."""
    return float(row.metrics[gt_mode]["pooled"][iou][name])


def group_key(row: ResultRow) -> tuple[Any, ...]:
    """What a row is apart from its seed: model, mode, target, subset, training size."""
    return (row.model, row.mode, row.target, row.subset, row.train_images)


def aggregate(rows: Iterable[ResultRow], gt_mode: str = "overlap", iou: str = "0.5"
              ) -> dict[tuple[Any, ...], dict[str, Spread]]:
    """Per `group_key`: each of `SCORES` over the seeds of the ``ok`` rows (skipped rows are not a zero)."""
    groups: dict[tuple[Any, ...], list[ResultRow]] = {}
    for row in rows:
        if row.status == "ok":
            groups.setdefault(group_key(row), []).append(row)
    return {key: {s: Spread.of([score(r, s, gt_mode, iou) for r in members]) for s in SCORES}
            for key, members in groups.items()}


def images_to_reach(curve: dict[int, float], fraction: float = 0.9) -> int | None:
    """Smallest training size whose mean score reaches ``fraction`` of the score with the most images.

    ``curve``: training size (images) → mean score. None when the largest size has no positive score.
    """
    if not curve:
        return None
    best = curve[max(curve)]
    if best <= 0:
        return None
    return min(n for n, v in curve.items() if v >= fraction * best)


@dataclass(frozen=True)
class SeedGap:
    """Model A minus model B on matched seeds: the gaps, their spread, and whether the gap beats it."""

    seeds: tuple[int, ...]
    gaps: tuple[float, ...]
    mean: float
    sd: float
    exceeds_spread: bool

    def to_dict(self) -> dict[str, Any]:
        return {"seeds": list(self.seeds), "gaps": list(self.gaps), "mean": self.mean, "sd": self.sd,
                "exceeds_spread": self.exceeds_spread}


def seed_gap(a: dict[int, float], b: dict[int, float]) -> SeedGap | None:
    """Compare two models' scores by seed (only seeds both ran). None with fewer than two matched seeds.

    The gap exceeds the seed-to-seed spread when every matched seed's gap has the same sign and the mean gap is
    larger than twice the sd of the gaps (a paired reading: what each seed's training noise does to the gap).
    """
    seeds = tuple(sorted(set(a) & set(b)))
    if len(seeds) < 2:
        return None
    gaps = tuple(a[s] - b[s] for s in seeds)
    spread = Spread.of(gaps)
    same_sign = all(g > 0 for g in gaps) or all(g < 0 for g in gaps)
    return SeedGap(seeds, gaps, spread.mean, spread.sd, same_sign and abs(spread.mean) > 2 * spread.sd)


def seeds_markdown(rows: Sequence[ResultRow]) -> str:
    """``results.md``'s section of a run with trials: F1@0.5 and AP@0.5 over seeds per training size (percent)."""
    lines = ["### Over seeds — fine-tuned rows by training-set size (overlapping ground truth)", "",
             "| model | target | subset | train images | seeds | F1@0.5 mean ± sd [min, max] | AP@0.5 mean ± sd |",
             "|---|---|---|---:|---:|---|---|"]
    for (model, mode, target, subset, size), spreads in sorted(
            aggregate(rows).items(), key=lambda kv: (*map(str, kv[0][:4]), kv[0][4] or 0)):
        if mode != "finetuned" or size is None:
            continue
        f1, ap = spreads["f1"], spreads["ap"]
        lines.append(f"| {model} | {target} | {subset} | {size} | {f1.n} | {100 * f1.mean:.1f} ± {100 * f1.sd:.1f} "
                     f"[{100 * f1.min:.1f}, {100 * f1.max:.1f}] | {100 * ap.mean:.1f} ± {100 * ap.sd:.1f} |")
    return "\n".join(lines) + "\n"
