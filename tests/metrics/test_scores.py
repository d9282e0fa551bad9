"""Counts → P/R/F1/AP, pooled and per-image aggregation, zero conventions, identity check, bootstrap."""

from __future__ import annotations

import math

import numpy as np
import pytest

from metrics.scores import (
    Counts,
    MetricIdentityError,
    bootstrap_intervals,
    check_identity,
    per_image_mean,
    pool,
)


def test_scores_by_hand() -> None:
    c = Counts(tp=3, fp=1, fn=2)
    assert c.precision == 0.75
    assert c.recall == 0.6
    assert c.f1 == pytest.approx(6 / 9, abs=1e-15)
    assert c.ap == 0.5
    assert c.to_dict() == {
        "tp": 3,
        "fp": 1,
        "fn": 2,
        "precision": 0.75,
        "recall": 0.6,
        "f1": 6 / 9,
        "ap": 0.5,
    }


def test_from_matching() -> None:
    assert Counts.from_matching(2, n_gt=5, n_pred=3) == Counts(2, 1, 3)
    with pytest.raises(ValueError, match="impossible"):
        Counts.from_matching(4, n_gt=5, n_pred=3)


def test_paper_row_identity() -> None:
    """metrics.md §5.3: P 88.87 / R 78.87 → F1 83.57, AP 71.78 from one set of counts."""
    c = Counts(tp=8887 * 7887, fp=(10000 - 8887) * 7887, fn=(10000 - 7887) * 8887)  # P, R exact
    assert c.precision == pytest.approx(0.8887, abs=1e-12)
    assert c.recall == pytest.approx(0.7887, abs=1e-12)
    assert round(100 * c.f1, 2) == 83.57
    assert round(100 * c.ap, 2) == 71.78
    check_identity(c)


def test_zero_conventions() -> None:
    for c in (Counts(0, 0, 5), Counts(0, 4, 0), Counts(0, 2, 3), Counts(0, 0, 0)):
        assert c.scores() == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "ap": 0.0}
        check_identity(c)
    assert Counts(0, 0, 0).is_empty and not Counts(0, 1, 0).is_empty
    assert Counts(2, 0, 0).scores() == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "ap": 1.0}


def test_negative_counts_refused() -> None:
    with pytest.raises(ValueError):
        Counts(1, -1, 0)


def test_pool_sums_and_checks_identity() -> None:
    images = [Counts(2, 0, 0), Counts(0, 0, 0), Counts(0, 1, 0), Counts(1, 1, 2)]
    total = pool(images)
    assert total == Counts(3, 2, 2)
    assert total.ap == 3 / 7
    assert pool([]) == Counts(0, 0, 0)  # nothing at all: zeros, never NaN
    assert pool([Counts(0, 0, 0)] * 3).scores() == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "ap": 0.0}


def test_identity_violation_raises() -> None:
    class Broken(Counts):
        @property
        def ap(self) -> float:  # a bookkeeping bug: AP from another threshold's counts
            return 0.4

    with pytest.raises(MetricIdentityError):
        check_identity(Broken(3, 1, 2))


def test_per_image_mean_excludes_empty_images() -> None:
    images = [Counts(2, 0, 0), Counts(0, 0, 0), Counts(0, 1, 0), Counts(1, 1, 2)]
    m = per_image_mean(images)
    assert (m.n_scored, m.n_empty) == (3, 1)
    assert m.precision == pytest.approx((1 + 0 + 0.5) / 3, abs=1e-15)
    assert m.recall == pytest.approx((1 + 0 + 1 / 3) / 3, abs=1e-15)
    assert m.f1 == pytest.approx((1 + 0 + 0.4) / 3, abs=1e-15)
    assert m.ap == pytest.approx((1 + 0 + 0.25) / 3, abs=1e-15)
    assert (m.tp, m.fp, m.fn) == (1.0, 2 / 3, 2 / 3)
    none = per_image_mean([Counts(0, 0, 0)] * 2)
    assert (none.n_scored, none.n_empty, none.f1, none.ap) == (0, 2, None, None)


def test_bootstrap_two_images_percentiles() -> None:
    # Image A: one TP; image B: one FN. Replicates AA (p 1/4) → R 1, AB/BA → R 0.5, BB → R 0.
    counts = np.array([[[1, 0, 0]], [[0, 0, 1]]])
    (ci,) = bootstrap_intervals(counts, n_boot=4000, seed=0)
    assert ci["recall"] == (0.0, 1.0)
    assert ci["precision"] == (0.0, 1.0)  # BB has TP = 0 → 0 by convention
    assert set(ci) == {"precision", "recall", "f1", "ap"}


def test_bootstrap_degenerate_and_reproducible() -> None:
    one = np.array([[[3, 1, 2], [1, 3, 4]]])  # a single image, two thresholds
    ci = bootstrap_intervals(one, n_boot=50, seed=1)
    assert ci[0]["ap"] == pytest.approx((0.5, 0.5), abs=1e-15)
    assert ci[1]["f1"] == pytest.approx((2 / 9, 2 / 9), abs=1e-15)
    rng = np.random.default_rng(7)
    many = rng.integers(0, 20, size=(30, 3, 3))
    a = bootstrap_intervals(many, n_boot=300, seed=11)
    assert a == bootstrap_intervals(many, n_boot=300, seed=11)
    assert a != bootstrap_intervals(many, n_boot=300, seed=12)
    pooled = Counts(*many[:, 0].sum(0).tolist())
    lo, hi = a[0]["f1"]
    assert lo < pooled.f1 < hi and not math.isnan(lo)
    assert bootstrap_intervals(many, n_boot=0, seed=0) == [{}, {}, {}]
