"""Counts → the paper's scores: precision, recall, F1 and cellpose-style AP, pooled and per image.

``AP@t = TP / (TP + FP + FN)`` at one IoU threshold (cellpose ``average_precision``, stardist ``accuracy``,
DSB-2018), **not** COCO's ranked AP. The paper's figures are pooled (micro): TP/FP/FN summed over the
images of a target, then the scores; the per-image (macro) means that NeurIPS-CellSeg/cellpose report are
given as well.

Zero-division conventions (NeurIPS-CellSeg): when ``TP == 0`` every score is 0 — this includes a target
with no ground truth and no prediction at all, so pooled results never hold NaN. Per-image means leave out
images with neither ground truth nor prediction (their scores are undefined, not 0) and count them
(`PerImageMean.n_empty`); an image with ground truth but no prediction, or the reverse, scores 0.

Every pooled score is checked against the identity ``AP = F1 / (2 - F1)`` (both come from one set of
counts), so a bug in the bookkeeping fails loudly instead of publishing inconsistent numbers.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

SCORE_NAMES = ("precision", "recall", "f1", "ap")
IDENTITY_TOLERANCE = 1e-9
CI_LEVEL = 0.95


class MetricIdentityError(ArithmeticError):
    """AP and F1 computed from the same counts disagree: the bookkeeping is broken."""


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if num > 0 and den > 0 else 0.0


@dataclass(frozen=True)
class Counts:
    """True positives, false positives, false negatives at one IoU threshold (one image or pooled)."""

    tp: int
    fp: int
    fn: int

    def __post_init__(self) -> None:
        if min(self.tp, self.fp, self.fn) < 0:
            raise ValueError(f"counts must be non-negative, got {self}")

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)

    @classmethod
    def from_matching(cls, tp: int, n_gt: int, n_pred: int) -> Counts:
        """FP = n_pred − TP, FN = n_gt − TP (one-to-one matching)."""
        if not 0 <= tp <= min(n_gt, n_pred):
            raise ValueError(f"tp={tp} impossible with {n_gt} ground-truth and {n_pred} predicted instances")
        return cls(tp, n_pred - tp, n_gt - tp)

    @property
    def is_empty(self) -> bool:
        """Neither ground truth nor prediction: every score is undefined (reported as 0, see module doc)."""
        return self.tp + self.fp + self.fn == 0

    @property
    def precision(self) -> float:
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> float:
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def f1(self) -> float:
        return _ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn)

    @property
    def ap(self) -> float:
        """Cellpose/stardist/DSB-2018 "average precision" at this threshold: TP / (TP + FP + FN)."""
        return _ratio(self.tp, self.tp + self.fp + self.fn)

    def scores(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in SCORE_NAMES}

    def to_dict(self) -> dict[str, float | int]:
        return {"tp": self.tp, "fp": self.fp, "fn": self.fn, **self.scores()}


def check_identity(counts: Counts) -> None:
    """Raise `MetricIdentityError` unless ``AP == F1 / (2 - F1)`` to within 1e-9."""
    f1, ap = counts.f1, counts.ap
    if abs(ap - f1 / (2.0 - f1)) > IDENTITY_TOLERANCE:
        raise MetricIdentityError(f"AP {ap!r} != F1/(2-F1) = {f1 / (2.0 - f1)!r} for {counts}")


def pool(per_image: Sequence[Counts]) -> Counts:
    """Micro aggregation: counts summed over images, identity-checked."""
    total = Counts(0, 0, 0)
    for counts in per_image:
        total = total + counts
    check_identity(total)
    return total


@dataclass(frozen=True)
class PerImageMean:
    """Macro aggregation at one threshold: the mean of per-image counts and scores.

    Images with neither ground truth nor prediction are excluded (``n_empty`` of them); ``n_scored``
    images enter the mean. With no scored image at all the scores are ``None``.
    """

    n_scored: int
    n_empty: int
    tp: float | None
    fp: float | None
    fn: float | None
    precision: float | None
    recall: float | None
    f1: float | None
    ap: float | None

    def to_dict(self) -> dict[str, float | None]:
        return {
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "ap": self.ap,
        }


def per_image_mean(per_image: Sequence[Counts]) -> PerImageMean:
    """Mean over images of counts and scores, leaving out images with no GT and no prediction."""
    scored = [c for c in per_image if not c.is_empty]
    n_empty = len(per_image) - len(scored)
    if not scored:
        return PerImageMean(0, n_empty, None, None, None, None, None, None, None)

    def mean(values: list[float]) -> float:
        return float(np.mean(values))

    return PerImageMean(
        n_scored=len(scored),
        n_empty=n_empty,
        tp=mean([c.tp for c in scored]),
        fp=mean([c.fp for c in scored]),
        fn=mean([c.fn for c in scored]),
        precision=mean([c.precision for c in scored]),
        recall=mean([c.recall for c in scored]),
        f1=mean([c.f1 for c in scored]),
        ap=mean([c.ap for c in scored]),
    )


# --------------------------------------------------------------------------------------------- bootstrap


def _scores_from_arrays(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> dict[str, np.ndarray]:
    """Vectorised `Counts` scores with the same zero conventions (0 when TP == 0)."""
    tp, fp, fn = (np.asarray(a, dtype=np.float64) for a in (tp, fp, fn))

    def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
        out = np.zeros(np.broadcast(num, den).shape)
        ok = (num > 0) & (den > 0)
        np.divide(num, den, out=out, where=ok)
        return out

    return {
        "precision": ratio(tp, tp + fp),
        "recall": ratio(tp, tp + fn),
        "f1": ratio(2 * tp, 2 * tp + fp + fn),
        "ap": ratio(tp, tp + fp + fn),
    }


def bootstrap_intervals(
    counts: np.ndarray, n_boot: int, seed: int, level: float = CI_LEVEL
) -> list[dict[str, tuple[float, float]]]:
    """Percentile intervals of every pooled score, resampling images with replacement.

    `counts` is ``(n_images, n_thresholds, 3)`` (TP, FP, FN). Each replicate draws ``n_images`` images with
    replacement (``numpy.random.default_rng(seed)``, the same draws for every threshold), sums their counts
    and recomputes the pooled scores. Returns, per threshold, score name → ``(low, high)``.
    """
    counts = np.asarray(counts, dtype=np.int64)
    if counts.ndim != 3 or counts.shape[2] != 3:
        raise ValueError(f"counts must be (n_images, n_thresholds, 3), got shape {counts.shape}")
    n_images, n_thr, _ = counts.shape
    if n_boot <= 0 or n_images == 0:
        return [{} for _ in range(n_thr)]
    rng = np.random.default_rng(seed)
    # Multiplicity of each image in each replicate: same distribution as drawing indices, less memory.
    weights = rng.multinomial(n_images, np.full(n_images, 1.0 / n_images), size=n_boot)  # (B, n_images)
    sums = np.einsum("bi,itk->btk", weights, counts)  # (B, n_thr, 3)
    tail = 100.0 * (1.0 - level) / 2.0
    out = []
    for t in range(n_thr):
        scores = _scores_from_arrays(sums[:, t, 0], sums[:, t, 1], sums[:, t, 2])
        out.append(
            {
                name: (float(np.percentile(values, tail)), float(np.percentile(values, 100.0 - tail)))
                for name, values in scores.items()
            }
        )
    return out


# --------------------------------------------------------------------------------------------- paired bootstrap


def pooled_f1(counts: np.ndarray) -> np.ndarray:
    """F1 = 2TP / (2TP + FP + FN) from (..., 3) summed counts; 0 where nothing was counted."""
    tp, fp, fn = counts[..., 0], counts[..., 1], counts[..., 2]
    denom = 2 * tp + fp + fn
    return np.divide(2 * tp, denom, out=np.zeros(denom.shape, dtype=np.float64), where=denom > 0)


def paired_f1_bootstrap(a: np.ndarray, b: np.ndarray, n_boot: int = 2000, seed: int = 0,
                        level: float = 0.95) -> dict[str, Any]:
    """Pooled F1 of A and B and their difference (A − B) with a percentile bootstrap interval over images.

    ``a`` and ``b`` are ``(n_images, 3)`` per-image TP/FP/FN of the two models **on the same images in
    the same order**; each bootstrap replicate resamples images with replacement and recomputes both
    pooled F1 values from the summed counts, so the interval accounts for the pairing.
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1, 3)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 3)
    if a.shape != b.shape:
        raise ValueError(f"paired counts need the same images: {a.shape[0]} vs {b.shape[0]} rows")
    n = a.shape[0]
    f1_a, f1_b = float(pooled_f1(a.sum(0))), float(pooled_f1(b.sum(0)))
    out: dict[str, Any] = {"n_images": n, "f1_a": f1_a, "f1_b": f1_b, "diff": f1_a - f1_b,
                           "ci_low": None, "ci_high": None, "n_boot": n_boot, "seed": seed}
    if n < 2 or n_boot <= 0:
        return out
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    diffs = pooled_f1(a[idx].sum(1)) - pooled_f1(b[idx].sum(1))
    tail = (1.0 - level) / 2.0 * 100.0
    out["ci_low"], out["ci_high"] = (float(v) for v in np.percentile(diffs, [tail, 100.0 - tail]))
    return out
