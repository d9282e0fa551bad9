"""What an evaluation produced: per image, per target and per run (`Evaluation`), and its files.

`harness.evaluate.evaluate` returns an `Evaluation`; ``c6bench evaluate`` writes it with `write_outputs`
(``metrics.json`` and ``per_image.csv``), the bench keeps it in each evaluate stage's file.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.io import write_text
from metrics.scores import Counts, PerImageMean

logger = logging.getLogger(__name__)


def threshold_key(threshold: float) -> str:
    """``0.5`` → ``"0.5"``: the key of a threshold in metrics.json."""
    return f"{float(threshold):g}"


# --------------------------------------------------------------------------------------------- records


@dataclass(frozen=True)
class ImageResult:
    """One target on one image: what was removed, what was evaluated, counts per threshold."""

    target: str
    image: str
    image_id: int | None
    n_gt: int
    n_pred: int
    n_gt_boundary: int
    n_pred_boundary: int
    n_gt_resolve_dropped: int
    n_gt_empty: int
    n_pred_empty: int
    counts: tuple[Counts, ...]
    n_gt_crowd: int = 0
    n_pred_crowd_ignored: tuple[int, ...] = ()


@dataclass(frozen=True)
class TargetResult:
    """All images of one target, aggregated."""

    name: str
    gt_categories: tuple[str, ...]
    pred_categories: tuple[str, ...]
    thresholds: tuple[float, ...]
    images: tuple[ImageResult, ...]
    pooled: tuple[Counts, ...]
    means: tuple[PerImageMean, ...]
    intervals: tuple[dict[str, tuple[float, float]], ...]

    def total(self, attr: str) -> int:
        return int(sum(getattr(r, attr) for r in self.images))

    def to_dict(self) -> dict[str, Any]:
        pooled: dict[str, Any] = {}
        for t, counts, ci in zip(self.thresholds, self.pooled, self.intervals, strict=True):
            pooled[threshold_key(t)] = counts.to_dict()
            if ci:
                pooled[threshold_key(t)]["ci"] = {name: [lo, hi] for name, (lo, hi) in ci.items()}
        means = {threshold_key(t): m.to_dict() for t, m in zip(self.thresholds, self.means, strict=True)}
        first = self.means[0] if self.means else PerImageMean(0, 0, *([None] * 7))
        return {
            "n_images": len(self.images),
            "n_gt": self.total("n_gt"),
            "n_pred": self.total("n_pred"),
            "n_gt_boundary": self.total("n_gt_boundary"),
            "n_pred_boundary": self.total("n_pred_boundary"),
            "n_gt_resolve_dropped": self.total("n_gt_resolve_dropped"),
            "n_gt_empty": self.total("n_gt_empty"),
            "n_pred_empty": self.total("n_pred_empty"),
            "n_gt_crowd": self.total("n_gt_crowd"),
            "n_pred_crowd_ignored": {threshold_key(t): int(sum(r.n_pred_crowd_ignored[k] for r in self.images
                                                               if r.n_pred_crowd_ignored))
                                     for k, t in enumerate(self.thresholds)},
            "n_images_scored": first.n_scored,
            "n_images_empty": first.n_empty,
            "pooled": pooled,
            "per_image_mean": means,
        }


PER_IMAGE_COLUMNS = (
    "target",
    "image",
    "image_id",
    "threshold",
    "n_gt",
    "n_pred",
    "n_gt_boundary",
    "n_pred_boundary",
    "n_gt_resolve_dropped",
    "n_gt_crowd",
    "n_pred_crowd_ignored",
    "tp",
    "fp",
    "fn",
    "precision",
    "recall",
    "f1",
    "ap",
)


@dataclass(frozen=True)
class Evaluation:
    """The result of `evaluate`: settings + one `TargetResult` per target."""

    settings: dict[str, Any]
    targets: dict[str, TargetResult] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The ``metrics.json`` structure (fractions in [0, 1])."""
        return {"settings": self.settings, "targets": {name: t.to_dict() for name, t in self.targets.items()}}

    def per_image_rows(self) -> list[dict[str, Any]]:
        """One row per target × image × threshold (``per_image.csv``)."""
        rows = []
        for target in self.targets.values():
            for r in target.images:
                for k, (t, c) in enumerate(zip(target.thresholds, r.counts, strict=True)):
                    rows.append(
                        {
                            "target": r.target,
                            "image": r.image,
                            "image_id": r.image_id,
                            "threshold": threshold_key(t),
                            "n_gt": r.n_gt,
                            "n_pred": r.n_pred,
                            "n_gt_boundary": r.n_gt_boundary,
                            "n_pred_boundary": r.n_pred_boundary,
                            "n_gt_resolve_dropped": r.n_gt_resolve_dropped,
                            "n_gt_crowd": r.n_gt_crowd,
                            "n_pred_crowd_ignored": r.n_pred_crowd_ignored[k] if r.n_pred_crowd_ignored else 0,
                            **c.to_dict(),
                        }
                    )
        return rows

    def table(self) -> str:
        """Plain-text table of pooled and per-image-mean scores (percent)."""
        head = (
            f"{'target':<12} {'IoU':>5} {'n_img':>5} {'n_gt':>6} {'n_pred':>6} {'TP':>6} {'FP':>6} {'FN':>6} "
            f"{'P':>6} {'R':>6} {'F1':>6} {'AP':>6} | {'mF1':>6} {'mAP':>6}"
        )
        lines = [head, "-" * len(head)]
        for name, target in self.targets.items():
            n_gt, n_pred = target.total("n_gt"), target.total("n_pred")
            for t, c, m in zip(target.thresholds, target.pooled, target.means, strict=True):
                mf1 = "-" if m.f1 is None else f"{100 * m.f1:.2f}"
                map_ = "-" if m.ap is None else f"{100 * m.ap:.2f}"
                lines.append(
                    f"{name:<12} {threshold_key(t):>5} {len(target.images):>5} {n_gt:>6} {n_pred:>6} "
                    f"{c.tp:>6} {c.fp:>6} {c.fn:>6} {100 * c.precision:>6.2f} {100 * c.recall:>6.2f} "
                    f"{100 * c.f1:>6.2f} {100 * c.ap:>6.2f} | {mf1:>6} {map_:>6}"
                )
        lines.append("P/R/F1/AP pooled over images (percent); mF1/mAP = per-image means.")
        return "\n".join(lines)


def write_outputs(evaluation: Evaluation, out_dir: Path | str) -> tuple[Path, Path]:
    """Write ``metrics.json`` and ``per_image.csv`` into `out_dir` (temp file + rename each)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics_path, csv_path = out_dir / "metrics.json", out_dir / "per_image.csv"
    write_text(metrics_path, json.dumps(evaluation.to_dict(), indent=2) + "\n")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=PER_IMAGE_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(evaluation.per_image_rows())
    write_text(csv_path, buffer.getvalue())
    return metrics_path, csv_path
