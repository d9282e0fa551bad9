"""The label-efficiency section of a report: a plot per target and the "images needed" table.

F1@0.5 (and AP@0.5) against the number of training images, one line per model through the seed means, the seed
range (min–max) as a band, each model's zero-shot score as a dashed horizontal line — the picture a lab looks at
before deciding how many images to annotate. Only rows with a training-set size (`ResultRow.train_images`, runs made
with ``--train-images``) take part; a report of ordinary runs has no such section.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness import efficiency
from harness.io import atomic_path

if TYPE_CHECKING:
    from harness.results import ResultRow

logger = logging.getLogger(__name__)

DPI = 110
METRICS = (("f1", "F1@0.5"), ("ap", "AP@0.5"))


def curves(rows: Sequence[ResultRow], subset: str, gt_mode: str = "overlap"
           ) -> dict[str, dict[str, dict[int, efficiency.Spread]]]:
    """``target → model → training size (images) → Spread`` of each metric, as nested dicts keyed by metric.

    Returned shape: ``{metric: {target: {model: {n_images: Spread}}}}`` for `METRICS`; fine-tuned rows only.
    """
    out: dict[str, dict[str, dict[str, dict[int, efficiency.Spread]]]] = {m: {} for m, _ in METRICS}
    agg = efficiency.aggregate((r for r in rows if r.train_images is not None), gt_mode)
    for (model, mode, target, row_subset, size), spreads in agg.items():
        if mode != "finetuned" or row_subset != subset:
            continue
        for metric, _ in METRICS:
            out[metric].setdefault(target, {}).setdefault(model, {})[int(size)] = spreads[metric]
    return out


def zero_shot_levels(rows: Sequence[ResultRow], subset: str, metric: str, gt_mode: str = "overlap"
                     ) -> dict[tuple[str, str], float]:
    """``(model, target) → score`` of the zero-shot rows of a subset (drawn as horizontal lines)."""
    return {(r.model, r.target): efficiency.score(r, metric, gt_mode)
            for r in rows if r.mode == "zero_shot" and r.status == "ok" and r.subset == subset}


def needed_table(rows: Sequence[ResultRow], subset: str, fraction: float = 0.9, gt_mode: str = "overlap"
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


def plot(rows: Sequence[ResultRow], subset: str, target: str, out: Path, gt_mode: str = "overlap") -> Path:
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
        ticks = sorted({x for curve in data[metric].get(target, {}).values() for x in curve})
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.minorticks_off()
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


def targets_with_curves(rows: Sequence[ResultRow], subset: str) -> list[str]:
    """Targets that have at least one fine-tuned row with a training size on the subset."""
    return sorted(curves(rows, subset)["f1"])


def gap_rows(rows: Sequence[ResultRow], gt_mode: str = "overlap") -> list[dict[str, Any]]:
    """Every two models fine-tuned on the same target, subset and training size, compared on matched seeds."""
    import itertools

    by: dict[tuple[str, str, int], dict[str, dict[int, float]]] = {}
    for r in rows:
        if r.mode == "finetuned" and r.status == "ok" and r.train_images is not None and r.seed is not None:
            by.setdefault((r.target, r.subset, r.train_images), {}).setdefault(
                r.model, {})[r.seed] = efficiency.score(r, "f1", gt_mode)
    out = []
    for (target, subset, size), models in sorted(by.items()):
        for a, b in itertools.combinations(sorted(models), 2):
            gap = efficiency.seed_gap(models[a], models[b])
            if gap is None:
                continue
            out.append({"target": target, "subset": subset, "train images": size, "A": a, "B": b,
                        "seeds": len(gap.seeds), "ΔF1 mean (A−B)": round(100 * gap.mean, 1),
                        "ΔF1 sd over seeds": round(100 * gap.sd, 1),
                        "beyond seed noise": "yes" if gap.exceeds_spread else "no"})
    return out


def write_section(rows: Sequence[ResultRow], out_dir: Path) -> tuple[list[Path], str]:
    """The report's label-efficiency files (PNGs, ``label_efficiency.{md,json}``) and its HTML fragment.

    Nothing (``[], ""``) when no row has a ``train_images`` size.
    """
    import html
    import json

    from harness.figures import png_data_uri
    from harness.io import write_text
    from harness.results import html_table, markdown_table

    subsets = sorted({r.subset for r in rows if r.train_images is not None})
    if not subsets:
        return [], ""
    written, parts = [], ["<h2>Label efficiency (fine-tuned, by training-set size)</h2><p class='note'>"
                          "Seed mean; band = min–max over seeds; dashed = zero-shot.</p>"]
    needed = [row for subset in subsets for row in needed_table(rows, subset)]
    gaps = gap_rows(rows)
    for subset in subsets:
        for target in targets_with_curves(rows, subset):
            png = plot(rows, subset, target, out_dir / "label_efficiency" / f"{target}__{subset.replace('/', '_')}.png")
            written.append(png)
            parts.append(f"<figure><img alt='{html.escape(target)} {html.escape(subset)}' src='{png_data_uri(png)}'>"
                         f"<figcaption>{html.escape(target)} · {html.escape(subset)}</figcaption></figure>")
    need_cols = list(needed[0]) if needed else []
    gap_cols = list(gaps[0]) if gaps else []
    md = ("## Label efficiency\n\nImages needed to reach 90 % of the F1@0.5 with the most training images "
          "(seed means):\n\n" + markdown_table(needed, need_cols)
          + "\n## Models compared on matched seeds (F1@0.5, percentage points)\n\n"
          "'beyond seed noise': every matched seed's gap has the same sign and the mean gap exceeds twice the "
          "sd of the gaps.\n\n" + (markdown_table(gaps, gap_cols) if gaps else "no two models share seeds\n"))
    written.append(write_text(out_dir / "label_efficiency.md", md))
    written.append(write_text(out_dir / "label_efficiency.json",
                              json.dumps({"needed": needed, "seed_gaps": gaps}, indent=2) + "\n"))
    parts += ["<h3>Images needed for 90 % of the all-images F1@0.5</h3>", html_table(needed, need_cols),
              "<h3>Models on matched seeds</h3>", html_table(gaps, gap_cols) if gaps else "<p>none</p>"]
    return written, "\n".join(parts)
