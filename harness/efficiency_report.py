"""The label-efficiency section of a report: a plot per target and the "images needed" table.

F1@0.5 (and AP@0.5) against the number of training images, one line per model through the seed means, the seed
range (min–max) as a band, each model's zero-shot score as a dashed horizontal line — the picture a lab looks at
before deciding how many images to annotate. Only rows with a ``train_images`` field (runs made with
``--train-images``) take part; a report of ordinary runs has no such section.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness import efficiency
from harness.io import atomic_path

logger = logging.getLogger(__name__)

DPI = 110
METRICS = (("f1", "F1@0.5"), ("ap", "AP@0.5"))


def curves(rows: Sequence[dict[str, Any]], subset: str, gt_mode: str = "overlap"
           ) -> dict[str, dict[str, dict[int, efficiency.Spread]]]:
    """``target → model → training size (images) → Spread`` of each metric, as nested dicts keyed by metric.

    Returned shape: ``{metric: {target: {model: {n_images: Spread}}}}`` for `METRICS`; fine-tuned rows only.
    """
    out: dict[str, dict[str, dict[str, dict[int, efficiency.Spread]]]] = {m: {} for m, _ in METRICS}
    agg = efficiency.aggregate((r for r in rows if r.get("train_images") is not None), gt_mode)
    for (model, mode, target, row_subset, size), spreads in agg.items():
        if mode != "finetuned" or row_subset != subset:
            continue
        for metric, _ in METRICS:
            out[metric].setdefault(target, {}).setdefault(model, {})[int(size)] = spreads[metric]
    return out


def zero_shot_levels(rows: Sequence[dict[str, Any]], subset: str, metric: str, gt_mode: str = "overlap"
                     ) -> dict[tuple[str, str], float]:
    """``(model, target) → score`` of the zero-shot rows of a subset (drawn as horizontal lines)."""
    return {(r["model"], r["target"]): efficiency.score(r, metric, gt_mode)
            for r in rows if r.get("mode") == "zero_shot" and r.get("status") == "ok" and r["subset"] == subset}


def needed_table(rows: Sequence[dict[str, Any]], subset: str, fraction: float = 0.9, gt_mode: str = "overlap"
                 ) -> list[dict[str, Any]]:
    """One row per (model, target): images needed to reach ``fraction`` of the all-images mean F1@0.5."""
    table = []
    for target, models in sorted(curves(rows, subset, gt_mode)["f1"].items()):
        for model, curve in sorted(models.items()):
            means = {n: s.mean for n, s in curve.items()}
            top = max(means)
            table.append({"model": model, "target": target, "subset": subset,
                          "f1_all": round(100 * means[top], 1), "images_all": top, "seeds": curve[top].n,
                          f"images_for_{round(100 * fraction)}pct": efficiency.images_to_reach(means, fraction)})
    return table


def plot(rows: Sequence[dict[str, Any]], subset: str, target: str, out: Path, gt_mode: str = "overlap") -> Path:
    """Write the label-efficiency PNG of one target on one subset; returns its path."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.6))
    data = curves(rows, subset, gt_mode)
    for k, (metric, label) in enumerate(METRICS):
        ax = fig.add_subplot(1, len(METRICS), k + 1)
        flat = zero_shot_levels(rows, subset, metric, gt_mode)
        for model, curve in sorted(data[metric].get(target, {}).items()):
            xs = sorted(curve)
            line, = ax.plot(xs, [100 * curve[x].mean for x in xs], marker="o", label=model)
            ax.fill_between(xs, [100 * curve[x].min for x in xs], [100 * curve[x].max for x in xs],
                            color=line.get_color(), alpha=0.2, linewidth=0)
            if (model, target) in flat:
                ax.axhline(100 * flat[(model, target)], color=line.get_color(), linestyle="--", linewidth=1,
                           label=f"{model} zero-shot")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("training images")
        ax.set_ylabel(f"{label} (%)")
        ax.set_title(f"{target} · {subset}")
        ax.grid(True, alpha=0.3)
        if k == 0:
            ax.legend(fontsize=7)
    fig.suptitle("label efficiency: seed mean, band = min-max over seeds", fontsize=9)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return out


def targets_with_curves(rows: Sequence[dict[str, Any]], subset: str) -> list[str]:
    """Targets that have at least one fine-tuned row with a training size on the subset."""
    return sorted(curves(rows, subset)["f1"])
