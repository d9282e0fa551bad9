"""Seeds × training-set size (issue 18): nested subsets, aggregates over seeds, images needed, matched-seed gaps."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from harness import efficiency
from harness.efficiency_report import needed_table, plot
from harness.errors import ConfigError
from harness.results import ResultRow

NAMES = [f"img{i:02d}.tif" for i in range(10)]


def test_subsets_are_nested_prefixes_of_one_seeded_permutation() -> None:
    subsets = efficiency.nested_subsets(NAMES, (1, 2, 4, 8, "all"), seed=3)
    assert [len(subsets[s]) for s in (1, 2, 4, 8, "all")] == [1, 2, 4, 8, 10]
    for small, big in ((1, 2), (2, 4), (4, 8), (8, "all")):
        assert set(subsets[small]) <= set(subsets[big])
    assert subsets["all"] == tuple(NAMES)
    # the same seed draws the same chain whatever the input order; another seed draws another
    assert efficiency.nested_subsets(list(reversed(NAMES)), (1, 2, 4, 8, "all"), seed=3) == subsets
    others = {efficiency.nested_subsets(NAMES, (4,), seed=s)[4] for s in range(5)}
    assert len(others) > 1


def test_a_size_larger_than_the_split_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"the training split has 10 image\(s\), fewer than 12"):
        efficiency.nested_subsets(NAMES, (2, 12), seed=0)


@pytest.mark.parametrize(("text", "message"), [
    ("0,x", "comma-separated integers"), ("1,1", "distinct"), ("-1", "distinct non-negative"), ("", "distinct"),
])
def test_seeds_are_validated(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        efficiency.parse_seeds(text)


@pytest.mark.parametrize(("text", "message"), [
    ("0,2", "at least 1"), ("4,2", "increasing"), ("all,2", "'all' last"), ("two", "neither"), ("2,2", "distinct"),
])
def test_sizes_are_validated(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        efficiency.parse_sizes(text)


def test_sizes_parse() -> None:
    assert efficiency.parse_sizes("1, 2,4,all") == (1, 2, 4, "all")
    assert efficiency.parse_seeds("0,1,2") == (0, 1, 2)


def _row(model: str, f1: float, seed: int, size: int | None, mode: str = "finetuned", ap: float = 0.0,
         status: str = "ok", target: str = "cells") -> ResultRow:
    pooled = {"0.5": {"f1": f1, "ap": ap, "precision": f1, "recall": f1}}
    return ResultRow(model=model, mode=mode, target=target, subset="spec/test", status=status, seed=seed,
                     train_images=size, metrics={"overlap": {"pooled": pooled}})


def test_aggregate_over_seeds_is_mean_sample_sd_min_max() -> None:
    rows = [_row("a", 0.5, 0, 2), _row("a", 0.7, 1, 2), _row("a", 0.6, 2, 2), _row("a", 0.9, 0, 4),
            _row("a", 0.0, 1, 4, status="skipped")]
    agg = efficiency.aggregate(rows)
    two = agg[("a", "finetuned", "cells", "spec/test", 2)]["f1"]
    assert (two.n, two.min, two.max) == (3, 0.5, 0.7)
    assert math.isclose(two.mean, 0.6) and math.isclose(two.sd, 0.1)
    four = agg[("a", "finetuned", "cells", "spec/test", 4)]["f1"]
    assert four.to_dict() == {"n": 1, "mean": 0.9, "sd": 0.0, "min": 0.9, "max": 0.9}  # the skipped row is no zero


def test_images_to_reach_ninety_percent_of_all() -> None:
    assert efficiency.images_to_reach({1: 0.30, 2: 0.55, 4: 0.73, 8: 0.80}) == 4  # 0.73 >= 0.9 * 0.80
    assert efficiency.images_to_reach({1: 0.30, 2: 0.55, 4: 0.71, 8: 0.80}) == 8
    assert efficiency.images_to_reach({1: 0.0, 2: 0.0}) is None


def test_seed_gap_uses_matched_seeds_and_says_whether_it_beats_the_spread() -> None:
    gap = efficiency.seed_gap({0: 0.80, 1: 0.82, 2: 0.81, 5: 0.1}, {0: 0.70, 1: 0.71, 2: 0.72})
    assert gap is not None and gap.seeds == (0, 1, 2)
    assert [round(g, 2) for g in gap.gaps] == [0.10, 0.11, 0.09] and round(gap.mean, 2) == 0.10
    assert gap.exceeds_spread
    noisy = efficiency.seed_gap({0: 0.80, 1: 0.60}, {0: 0.70, 1: 0.65})
    assert noisy is not None and not noisy.exceeds_spread  # gaps +0.10 and -0.05: the sign flips
    assert efficiency.seed_gap({0: 0.8}, {0: 0.7}) is None


def test_needed_table_and_plot(tmp_path: Path) -> None:
    rows = [_row("a", f1, seed, n) for n, (f1a, f1b) in {1: (0.2, 0.3), 2: (0.6, 0.5), 4: (0.7, 0.7)}.items()
            for seed, f1 in ((0, f1a), (1, f1b))]
    rows.append(_row("a", 0.1, 0, None, mode="zero_shot"))
    assert needed_table(rows, "spec/test") == [{"model": "a", "target": "cells", "subset": "spec/test",
                                                "f1_all": 70.0, "images_all": 4, "seeds": 2,
                                                "images_for_90pct": 4}]
    png = plot(rows, "spec/test", "cells", tmp_path / "le.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
