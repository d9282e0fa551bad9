"""Statistics of finished runs: paired model comparisons (bootstrap over images), object sizes and morphology.

``c6bench stats`` and the comparison section of ``c6bench report``: the paired bootstrap itself is
`metrics.scores.paired_f1_bootstrap`; here are the run files it reads and the tables and plots it writes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from harness.figures import morphology_figure, save_png, size_rows
from harness.io import write_text
from harness.predictions import prediction_files
from harness.results import ci_text, markdown_table, pct, write_csv
from harness.runs import Run, run_label
from metrics.scores import paired_f1_bootstrap

if TYPE_CHECKING:
    from metrics.morphology import Shape

logger = logging.getLogger(__name__)


# ======================================================================================= morphology files


@dataclass
class MorphologySet:
    """Shapes of one class (or target × subset) from several sources, drawn as one figure."""

    title: str
    slug: str
    keys: dict[str, str]
    groups: dict[str, list[Shape]]


SIZE_COLUMNS = ("class", "subset", "source", "count", "mean_area", "median_area", "mean_equivalent_diameter",
                "mean_eccentricity", "mean_solidity")


def gt_shapes_by_category(samples: Sequence[Any]) -> dict[str, list[Shape]]:
    """Ground-truth shapes of every sample, grouped by COCO category name (sorted)."""
    from metrics.morphology import shapes

    found: dict[str, list[Shape]] = {}
    for shape in shapes(inst for s in samples for inst in s.instances):
        found.setdefault(shape.category, []).append(shape)
    return {k: found[k] for k in sorted(found)}


def write_morphology(
    sets: Sequence[MorphologySet], out_dir: Path
) -> tuple[list[dict[str, Any]], list[tuple[str, Path]]]:
    """One ``morphology_<slug>.png`` per set and the mean-size rows of all sets (written by the caller)."""
    from tqdm import tqdm

    rows: list[dict[str, Any]] = []
    figures: list[tuple[str, Path]] = []
    for mset in tqdm(sets, desc="morphology figures", unit="fig"):
        fig = morphology_figure(mset.groups, mset.title)
        figures.append((mset.title, save_png(fig, out_dir / f"morphology_{mset.slug}.png")))
        rows.extend(size_rows(mset.groups, **mset.keys))
    return rows, figures


def write_size_tables(rows: Sequence[Mapping[str, Any]], out_dir: Path, stem: str = "sizes") -> list[Path]:
    """The mean-size table as Markdown, CSV and JSON."""

    columns = [c for c in SIZE_COLUMNS if any(c in r for r in rows)]
    md = ("# Instance sizes and shapes\n\nArea in pixels; eccentricity = short/long axis of the moment "
          "ellipse; solidity = area / convex-hull area (see `metrics/morphology.py`).\n\n"
          + markdown_table(rows, columns))
    return [
        write_text(out_dir / f"{stem}.md", md),
        write_csv(out_dir / f"{stem}.csv", rows, columns),
        write_text(out_dir / f"{stem}.json", json.dumps(list(rows), indent=2) + "\n"),
    ]


def slugify(*parts: str) -> str:
    """File-name-safe join of parts (``spec/test`` → ``spec-test``)."""
    text = "_".join(p for p in parts if p)
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text).strip("-") or "all"


# ======================================================================================= runs on disk


def target_gt(cfg: Any, subset: str, target: str) -> list[Any]:
    """Ground-truth samples of a subset (``part/split``) restricted to one target (instances renamed to it)."""
    from harness.dataset import load_split, select
    from harness.errors import ConfigError

    targets = cfg.targets_of(subset)  # an undefined split is an error listing those defined
    if target not in targets:
        raise ConfigError(f"target {target!r} is not defined for {subset} in {cfg.source}; targets: "
                          f"{', '.join(targets)}")
    return select(load_split(cfg, subset), targets[target], target)


def load_predictions(path: Path) -> dict[str, Any]:
    """Predicted samples of a predictions JSON keyed by file name (pair them with the GT by name)."""
    from harness.coco import load_coco

    samples, _ = load_coco(path, predictions=True)
    return {s.file_name: s for s in samples}


def prediction_morphology_sets(cfg: Any, runs: Sequence[Path]) -> list[MorphologySet]:
    """Per target × subset in the runs: GT shapes of those images next to each run/mode's predictions."""
    from tqdm import tqdm

    from metrics.morphology import shapes

    found: dict[tuple[str, str], dict[str, list[Shape]]] = {}
    files = [(run, f) for run in runs for f in prediction_files(run) if not f.trial]  # trials: label_efficiency
    models = {run: run_label(run) for run in runs}  # read each run's manifest once, not once per file
    for run, pf in tqdm(files, desc="prediction shapes", unit="file"):
        key = (pf.target, pf.subset)
        if key not in found:
            gt = target_gt(cfg, key[1], key[0])
            found[key] = {"ground truth": shapes(i for s in gt for i in s.instances)}
        preds = load_predictions(pf.path)
        label = f"{models[run]} {pf.mode}"
        if label in found[key]:  # two runs of one model: tell them apart by run folder
            label = f"{label} ({Path(run).name})"
        found[key][label] = shapes(i for s in preds.values() for i in s.instances)
    return [
        MorphologySet(title=f"{target} · {subset} · ground truth vs predictions",
                      slug=slugify(target, subset), keys={"class": target, "subset": subset}, groups=groups)
        for (target, subset), groups in sorted(found.items())
    ]


def write_stats(
    cfg: Any, out_dir: Path, splits: Sequence[str] | None = None, runs: Sequence[Path] = ()
) -> list[Path]:
    """`c6bench stats`: GT morphology per class over `splits` (default all), per run predictions vs GT."""
    from harness.dataset import load_split

    out_dir = Path(out_dir)
    refs = list(splits) if splits else [f"{p}/{s}" for p, part in cfg.parts.items() for s in part.splits]
    samples = [s for ref in refs for s in load_split(cfg, ref)]
    by_cat = gt_shapes_by_category(samples)
    subset = "+".join(refs)
    sets = [MorphologySet(title=f"{cat} · {cfg.name} {subset} · ground truth", slug=slugify("gt", cat),
                          keys={"class": cat, "subset": subset}, groups={"ground truth": items})
            for cat, items in by_cat.items()]
    sets += prediction_morphology_sets(cfg, runs)
    rows, figures = write_morphology(sets, out_dir)
    return [*write_size_tables(rows, out_dir), *(p for _, p in figures)]


# ======================================================================================= comparisons

COMPARE_COLUMNS = ("gt_mode", "target", "subset", "A", "B", "n_images", "F1 A", "F1 B", "ΔF1 (A−B)", "95% CI")


def paired_comparisons(
    runs: Sequence[Run], n_boot: int = 2000, seed: int = 0
) -> tuple[list[dict[str, Any]], list[str]]:
    """F1@0.5 of every two rows on the same target, subset and images, A − B with a bootstrap interval.

    Pairs: two models in the same mode, and one model's modes against each other (zero-shot vs
    fine-tuned). Returns the comparison rows (percentage points) and lines saying which pairs were
    impossible and why (different images, no per-image counts).
    """
    import itertools

    entries = [(run, key, counts) for run in runs for key, counts in run.per_image.items()]
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    groups: dict[tuple[str, str, str], list[tuple[Run, str, dict[str, tuple[int, int, int]]]]] = {}
    for run, (mode, target, subset, gt_mode), counts in entries:
        groups.setdefault((gt_mode, target, subset), []).append((run, mode, counts))
    for (gt_mode, target, subset), members in sorted(groups.items()):
        for (ra, ma, ca), (rb, mb, cb) in itertools.combinations(members, 2):
            if not (ra.model != rb.model and ma == mb) and not (ra.model == rb.model and ma != mb):
                continue
            name_a, name_b = f"{ra.model} {ma}", f"{rb.model} {mb}"
            if set(ca) != set(cb):
                notes.append(f"{name_a} vs {name_b} ({gt_mode}, {target}, {subset}): not compared, different "
                             f"images ({len(ca)} vs {len(cb)})")
                continue
            images = sorted(ca)
            res = paired_f1_bootstrap(np.array([ca[i] for i in images]), np.array([cb[i] for i in images]),
                                      n_boot=n_boot, seed=seed)
            ci = None if res["ci_low"] is None else [pct(res["ci_low"]), pct(res["ci_high"])]
            rows.append({"gt_mode": gt_mode, "target": target, "subset": subset, "A": name_a, "B": name_b,
                         "n_images": res["n_images"], "F1 A": pct(res["f1_a"]), "F1 B": pct(res["f1_b"]),
                         "ΔF1 (A−B)": pct(res["diff"]), "95% CI": ci, "n_boot": n_boot, "seed": seed})
    return rows, notes


def write_comparisons(rows: Sequence[dict[str, Any]], notes: Sequence[str], out_dir: Path) -> list[Path]:

    display = [{**r, "95% CI": ci_text(r["95% CI"])} for r in rows]
    md = ("## Paired comparison: F1@0.5 difference on the same images\n\nPercentage points; 95% percentile "
          "bootstrap interval over images (images resampled with replacement, pooled F1 of both recomputed "
          "from per-image TP/FP/FN). An interval excluding 0 means the difference is unlikely to be image "
          "sampling noise; with few images (the bundled sample has 2 test images) the interval is coarse. "
          "ΔF1 is computed before rounding.\n\n" + markdown_table(display, COMPARE_COLUMNS))
    if notes:
        md += "\nNot compared:\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    csv_rows = [{**r, "95% CI": None, "CI lo": r["95% CI"][0] if r["95% CI"] else None,
                 "CI hi": r["95% CI"][1] if r["95% CI"] else None} for r in rows]
    return [
        write_text(out_dir / "comparison.md", md),
        write_csv(out_dir / "comparison.csv", csv_rows,
                  [c for c in COMPARE_COLUMNS if c != "95% CI"] + ["CI lo", "CI hi"]),
        write_text(out_dir / "comparison.json", json.dumps({"rows": list(rows), "not_compared": list(notes)},
                                                           indent=2, ensure_ascii=False) + "\n"),
    ]
