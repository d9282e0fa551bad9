"""Reports people look at: the paper's tables across runs, overlays, morphology plots, paired comparisons.

Everything here reads finished run directories (``runs/<time>_<model>/``: ``config.yaml``, ``manifest.json``,
``results.json``, ``per_image.csv``, ``predictions/<mode>/<target>/<subset>.json``) and writes files; it
never trains or predicts. Figures use matplotlib's Agg backend (no display).

Overlays follow the paper's Figures 4/5: the percentile-normalised image, ground-truth borders in light
blue, predicted borders in red over semi-transparent red predicted masks, full image and a zoomed window
(the window holding the most ground-truth cells). Borders are found per instance on its bounding-box crop
(`skimage.segmentation.find_boundaries`) and pasted into one canvas per view: ground truth as the *outer*
boundary, predictions as the *inner* one, so a perfect prediction shows both lines side by side.
"""

from __future__ import annotations

import base64
import functools
import html
import io
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from harness.images import to_gray, to_uint8
from harness.io import atomic_path, write_text
from harness.records import Instance

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from metrics.morphology import Shape

logger = logging.getLogger(__name__)

#: (y0, x0, y1, x1), end-exclusive.
Region = tuple[int, int, int, int]

GT_COLOR = (135, 206, 250)  # light sky blue, as in the paper's figures
PRED_COLOR = (255, 0, 0)
WINDOW_COLOR = "yellow"
MASK_ALPHA = 0.3
FULL_MAX_SIDE = 900  # max display size (px) of the full-image panel (integer down-sampling)
DPI = 100


# ======================================================================================= overlays


def _paste(layer: np.ndarray, region: Region, top: int, left: int, patch: np.ndarray) -> None:
    """OR a boolean `patch` placed at image coordinates (top, left) into `layer` covering `region`."""
    ry0, rx0, ry1, rx1 = region
    y0, x0 = max(top, ry0), max(left, rx0)
    y1, x1 = min(top + patch.shape[0], ry1), min(left + patch.shape[1], rx1)
    if y1 <= y0 or x1 <= x0:
        return
    layer[y0 - ry0 : y1 - ry0, x0 - rx0 : x1 - rx0] |= patch[y0 - top : y1 - top, x0 - left : x1 - left]


def _overlaps(bbox: Region, region: Region, margin: int = 1) -> bool:
    return not (
        bbox[2] + margin <= region[0] or bbox[0] - margin >= region[2]
        or bbox[3] + margin <= region[1] or bbox[1] - margin >= region[3]
    )


def boundary_layer(instances: Sequence[Instance], region: Region, mode: str) -> np.ndarray:
    """Union of the instances' boundaries inside `region` (``mode``: find_boundaries' inner/outer)."""
    from skimage.segmentation import find_boundaries

    layer = np.zeros((region[2] - region[0], region[3] - region[1]), dtype=bool)
    for inst in instances:
        if inst.crop.size == 0 or not _overlaps(inst.bbox, region):
            continue
        edge = find_boundaries(np.pad(inst.crop, 1), mode=mode)
        _paste(layer, region, inst.bbox[0] - 1, inst.bbox[1] - 1, edge)
    return layer


def mask_layer(instances: Sequence[Instance], region: Region) -> np.ndarray:
    """Union of the instances' masks inside `region`."""
    layer = np.zeros((region[2] - region[0], region[3] - region[1]), dtype=bool)
    for inst in instances:
        if inst.crop.size and _overlaps(inst.bbox, region, margin=0):
            _paste(layer, region, inst.bbox[0], inst.bbox[1], inst.crop)
    return layer


def _resample(layer: np.ndarray, down: int, up: int, reduce: str) -> np.ndarray:
    """Integer down-sampling (block mean or max, so thin lines survive) then nearest up-sampling."""
    from skimage.measure import block_reduce

    out = layer.astype(np.float32)
    if down > 1:
        out = block_reduce(out, (down, down), func=np.max if reduce == "max" else np.mean, cval=0.0)
    if up > 1:
        out = np.repeat(np.repeat(out, up, axis=0), up, axis=1)
    return out


def overlay_rgb(
    image8: np.ndarray,
    gt: Sequence[Instance],
    pred: Sequence[Instance],
    region: Region | None = None,
    down: int = 1,
    up: int = 1,
    thickness: int = 1,
) -> np.ndarray:
    """RGB uint8 canvas of `region`: gray image, red predicted masks (alpha), red/light-blue borders.

    ``image8`` is the whole 8-bit gray image (normalised once, so the zoom has the full view's contrast).
    ``down``/``up`` are integer display factors; borders are max-pooled so they stay visible, then
    widened to ``thickness`` display pixels.
    """
    h, w = image8.shape[:2]
    region = region or (0, 0, h, w)
    gray = _resample(image8[region[0] : region[2], region[1] : region[3]], down, up, "mean")
    cover = _resample(mask_layer(pred, region), down, up, "mean")
    gt_edge = _resample(boundary_layer(gt, region, "outer"), down, up, "max") > 0
    pred_edge = _resample(boundary_layer(pred, region, "inner"), down, up, "max") > 0
    if thickness > 1:
        from scipy.ndimage import binary_dilation

        footprint = np.ones((thickness, thickness), dtype=bool)
        gt_edge, pred_edge = binary_dilation(gt_edge, footprint), binary_dilation(pred_edge, footprint)
    rgb = np.repeat(gray[..., None], 3, axis=-1)
    alpha = (MASK_ALPHA * cover)[..., None]
    rgb = rgb * (1.0 - alpha) + np.asarray(PRED_COLOR, np.float32) * alpha
    rgb[gt_edge] = GT_COLOR
    rgb[pred_edge] = PRED_COLOR
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)


def densest_window(instances: Sequence[Instance], height: int, width: int, size: int) -> tuple[Region, int]:
    """The ``size``×``size`` window (stride size/4, inside the image) holding the most instance centres.

    Returns the window and its count; ties go to the top-most, then left-most window.
    """
    size = max(1, min(size, height, width))
    stride = max(1, size // 4)
    ys = list(range(0, height - size + 1, stride))
    xs = list(range(0, width - size + 1, stride))
    if ys[-1] != height - size:
        ys.append(height - size)
    if xs[-1] != width - size:
        xs.append(width - size)
    centres = np.array(
        [((b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0) for b in (i.bbox for i in instances if i.crop.size)]
    ).reshape(-1, 2)
    best, best_count = (0, 0, size, size), -1
    for y in ys:
        in_rows = (centres[:, 0] >= y) & (centres[:, 0] < y + size)
        for x in xs:
            count = int((in_rows & (centres[:, 1] >= x) & (centres[:, 1] < x + size)).sum())
            if count > best_count:
                best, best_count = (y, x, y + size, x + size), count
    return best, best_count


def _legend_handles(n_gt: int, n_pred: int) -> list[Any]:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    rgb = [tuple(c / 255 for c in col) for col in (GT_COLOR, PRED_COLOR)]
    return [
        Line2D([], [], color=rgb[0], lw=2, label=f"ground-truth border (n={n_gt})"),
        Line2D([], [], color=rgb[1], lw=2, label=f"predicted border (n={n_pred})"),
        Patch(facecolor=(*rgb[1], MASK_ALPHA), edgecolor="none", label="predicted mask"),
        Line2D([], [], color=WINDOW_COLOR, lw=1.5, ls="--", label="zoom window"),
    ]


def overlay_figure(
    image: np.ndarray,
    gt: Sequence[Instance],
    pred: Sequence[Instance],
    title: str,
    window: Region | None = None,
) -> Figure:
    """Full image + zoomed window side by side, with a legend and pixel axes (paper Figures 4/5)."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    image8 = to_uint8(to_gray(image))
    h, w = image8.shape
    if window is None:
        window, _ = densest_window(gt, h, w, min(h, w) // 4)
    down = max(1, math.ceil(max(h, w) / FULL_MAX_SIDE))
    full = overlay_rgb(image8, gt, pred, None, down=down, thickness=2)
    wh = window[2] - window[0]
    up = max(1, round(full.shape[0] / wh))
    zoom = overlay_rgb(image8, gt, pred, window, up=up, thickness=1 if up > 1 else 2)
    n_win = sum(1 for i in gt if i.crop.size and _overlaps(i.bbox, window, margin=0))

    # the zoom panel is drawn as tall as the full-image panel (nearest-neighbour, so borders stay crisp)
    panel_h = full.shape[0]
    fig_w = (full.shape[1] + panel_h) / DPI + 1.6
    fig = Figure(figsize=(fig_w, panel_h / DPI + 1.4), dpi=DPI)
    axes = fig.subplots(1, 2, gridspec_kw={"width_ratios": [full.shape[1] / panel_h, 1.0]})
    axes[0].imshow(full, extent=(0, w, h, 0), interpolation="nearest")
    axes[0].add_patch(Rectangle((window[1], window[0]), window[3] - window[1], wh, fill=False,
                                ec=WINDOW_COLOR, lw=1.5, ls="--"))
    axes[0].set_title(f"full image ({w}×{h} px)", fontsize=10)
    axes[1].imshow(zoom, extent=(window[1], window[3], window[2], window[0]), interpolation="nearest")
    axes[1].set_title(f"zoom x {window[1]}–{window[3]}, y {window[0]}–{window[2]} ({n_win} GT cells)",
                      fontsize=10)
    for ax in axes:
        ax.set_xlabel("x (px)")
        ax.set_ylabel("y (px)")
        ax.tick_params(labelsize=8)
    fig.suptitle(title, fontsize=11)
    fig.legend(handles=_legend_handles(len(gt), len(pred)), loc="lower center", ncol=4, fontsize=9,
               frameon=False, bbox_to_anchor=(0.5, 0.0))
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig


def contact_sheet(cells: Sequence[tuple[str, np.ndarray]], title: str, columns: int = 4) -> Figure:
    """A grid of pre-rendered RGB tiles (zoomed overlays), each with its caption."""
    from matplotlib.figure import Figure

    n = max(1, len(cells))
    cols = min(columns, n)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(3.4 * cols, 3.7 * rows + 0.6), dpi=DPI)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax, (caption, tile) in zip(axes, cells):
        ax.imshow(tile, interpolation="nearest")
        ax.set_title(caption, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes[len(cells):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=11)
    fig.legend(handles=_legend_handles(0, 0)[:3], labels=["ground-truth border", "predicted border",
               "predicted mask"], loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig


def zoom_tile(
    image: np.ndarray, gt: Sequence[Instance], pred: Sequence[Instance], size_px: int = 320
) -> np.ndarray:
    """The densest-window overlay of one image, resampled to about `size_px` on a side (for sheets)."""
    image8 = to_uint8(to_gray(image))
    h, w = image8.shape
    window, _ = densest_window(gt, h, w, min(h, w) // 4)
    side = window[2] - window[0]
    up = max(1, round(size_px / side))
    down = max(1, math.ceil(side / size_px)) if up == 1 else 1
    return overlay_rgb(image8, gt, pred, window, down=down, up=up)


# ======================================================================================= morphology


GROUP_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


def morphology_figure(groups: Mapping[str, Sequence[Shape]], title: str, columns: int = 3) -> Figure:
    """Paper Figure 2 for one class: area histogram of every group, then eccentricity-vs-solidity per group.

    ``groups`` maps a label ("ground truth", "cellpose zero_shot", ...) to its shapes; the first is the
    reference and is drawn in the background of every scatter panel, so a model's shapes are read
    against the ground truth's.
    """
    from matplotlib.figure import Figure

    labels = list(groups)
    n_panels = 1 + len(labels)
    cols = min(columns, n_panels)
    rows = math.ceil(n_panels / cols)
    fig = Figure(figsize=(4.2 * cols, 3.6 * rows + 0.5), dpi=DPI)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()

    areas = [np.asarray([s.area for s in groups[k]], float) for k in labels]
    positive = np.concatenate([a[a > 0] for a in areas]) if areas else np.zeros(0)
    lo, hi = (positive.min(), positive.max()) if positive.size else (1.0, 10.0)
    bins = np.geomspace(max(1.0, lo), max(hi, lo * 1.01, 2.0), 30)
    ax = axes[0]
    for k, (label, a) in enumerate(zip(labels, areas)):
        ax.hist(a, bins=bins, histtype="step", lw=1.6, color=GROUP_COLORS[k % len(GROUP_COLORS)],
                label=f"{label} (n={a.size}, mean {a.mean():.0f} px)" if a.size else f"{label} (n=0)")
    from matplotlib.ticker import LogFormatter, NullFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(0, 0)))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("area (px, log scale)")
    ax.set_ylabel("instances")
    ax.set_title("area distribution", fontsize=10)
    ax.set_ylim(0, ax.get_ylim()[1] * 1.35)  # head room for the legend
    ax.legend(fontsize=7, loc="upper left")

    ref = groups[labels[0]] if labels else []
    for k, label in enumerate(labels):
        ax = axes[1 + k]
        if k > 0 and ref:
            ax.scatter([s.solidity for s in ref], [s.eccentricity for s in ref], s=6, c="#bbbbbb",
                       label=f"{labels[0]}", alpha=0.6, lw=0)
        pts = groups[label]
        ax.scatter([s.solidity for s in pts], [s.eccentricity for s in pts], s=8, alpha=0.7, lw=0,
                   c=GROUP_COLORS[k % len(GROUP_COLORS)], label=f"{label} (n={len(pts)})")
        ax.set_xlim(0.0, 1.02)
        ax.set_ylim(0.0, 1.02)
        ax.set_xlabel("solidity (area / convex area)")
        ax.set_ylabel("eccentricity (short / long axis)")
        ax.set_title(label, fontsize=10)
        ax.legend(fontsize=7, loc="lower left")
    for ax in axes[n_panels:]:
        ax.axis("off")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def size_rows(groups: Mapping[str, Sequence[Shape]], **keys: str) -> list[dict[str, Any]]:
    """One mean-size row per group (count, mean/median area, equivalent diameter, shape means)."""
    from metrics.morphology import summarize

    rows = []
    for label, items in groups.items():
        summary = summarize(_renamed(items, "all")).get("all")
        row: dict[str, Any] = {**keys, "source": label, "count": len(items)}
        for measure, stat, digits in (("area", "mean", 1), ("area", "median", 1),
                                      ("equivalent_diameter", "mean", 1), ("eccentricity", "mean", 3),
                                      ("solidity", "mean", 3)):
            value = summary[measure][stat] if summary else math.nan
            row[f"{stat}_{measure}"] = None if math.isnan(value) else round(value, digits)
        rows.append(row)
    return rows


def _renamed(items: Sequence[Shape], category: str) -> list[Shape]:
    from dataclasses import replace

    return [replace(s, category=category) for s in items]


# ======================================================================================= files


def save_png(fig: Figure, path: Path) -> Path:
    """Write a figure as PNG with nothing clipped (``bbox_inches="tight"``), via a temp name."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight", pad_inches=0.1)
    return path


def png_data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """A GitHub-style Markdown table (``-`` for missing cells)."""
    def cell(v: Any) -> str:
        return "-" if v is None or v == "" else str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def html_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape('-' if r.get(c) in (None, '') else str(r.get(c)))}</td>"
                         for c in columns) + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> Path:
    import csv

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({c: "" if r.get(c) is None else r.get(c) for c in columns})
    return write_text(path, buf.getvalue())


@dataclass
class Figures:
    """PNG files written for a report, grouped for the HTML page."""

    overlays: list[tuple[str, Path]]
    sheets: list[tuple[str, Path]]
    morphology: list[tuple[str, Path]]


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
    import json

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


# ======================================================================================= paired bootstrap


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


# ======================================================================================= runs on disk


@dataclass(frozen=True)
class PredictionFile:
    """One ``predictions/<mode>/<target>/<subset>.json`` of a run."""

    mode: str
    target: str
    subset: str
    path: Path
    trial: str = ""  # a --seeds/--train-images trial (``s1-n4``), else empty


def prediction_files(run_dir: Path) -> list[PredictionFile]:
    """Every predictions JSON of a run (``<mode>/<unit>/<subset>[.<trial>].json``; a subset written as
    ``spec/test`` may be a nested folder). ``*.models.json`` (what predicted) are not predictions."""
    root = Path(run_dir) / "predictions"
    found = []
    for path in sorted(root.glob("*/*/**/*.json")):
        if path.name.endswith(".models.json"):
            continue
        mode, target, *subset = path.relative_to(root).with_suffix("").parts
        last, _, trial = subset[-1].partition(".")
        found.append(PredictionFile(mode=mode, target=target, subset="/".join([*subset[:-1], last]), path=path,
                                    trial=trial))
    return found


def subset_ref(cfg: Any, subset: str) -> str:
    """The dataset's ``part/split`` reference a (possibly slugified) subset name stands for."""
    refs = [f"{p}/{s}" for p, part in cfg.parts.items() for s in part.splits]
    if subset in refs:
        return subset
    for ref in refs:
        if slugify(ref) == slugify(subset) or ref.replace("/", "_") == subset:
            return ref
    from harness.errors import ConfigError

    raise ConfigError(f"subset {subset!r} is not a split of dataset {cfg.name!r} ({cfg.source}); "
                      f"splits: {', '.join(refs)}")


def target_gt(cfg: Any, subset: str, target: str) -> list[Any]:
    """Ground-truth samples of a subset restricted to one target (instances renamed to the target)."""
    from harness.dataset import load_split, select
    from harness.errors import ConfigError

    ref = subset_ref(cfg, subset)
    targets = cfg.targets_of(ref)
    if target not in targets:
        raise ConfigError(f"target {target!r} is not defined for {ref} in {cfg.source}; targets: "
                          f"{', '.join(targets)}")
    return select(load_split(cfg, ref), targets[target], target)


def load_predictions(path: Path) -> dict[str, Any]:
    """Predicted samples of a predictions JSON keyed by file name (pair them with the GT by name)."""
    from harness.coco import load_coco

    samples, _ = load_coco(path)
    return {s.file_name: s for s in samples}


def run_label(run_dir: Path) -> str:
    """Model name of a run: the manifest's/config's ``model``, else the ``<time>_<model>`` folder suffix."""
    import json

    import yaml

    run_dir = Path(run_dir)
    for name, reader in (("manifest.json", json.loads), ("config.yaml", yaml.safe_load)):
        path = run_dir / name
        if path.is_file():
            try:
                data = reader(path.read_text())
            except Exception:  # noqa: BLE001 - a broken file is reported by load_run; here a label suffices
                continue
            if isinstance(data, dict) and isinstance(data.get("model"), str):
                return data["model"]
    return run_dir.name.split("_", 1)[-1]


def prediction_morphology_sets(cfg: Any, runs: Sequence[Path]) -> list[MorphologySet]:
    """Per target × subset in the runs: GT shapes of those images next to each run/mode's predictions."""
    from tqdm import tqdm

    from metrics.morphology import shapes

    found: dict[tuple[str, str], dict[str, list[Shape]]] = {}
    files = [(run, f) for run in runs for f in prediction_files(run) if not f.trial]  # trials: label_efficiency
    for run, pf in tqdm(files, desc="prediction shapes", unit="file"):
        key = (pf.target, subset_ref(cfg, pf.subset))
        if key not in found:
            gt = target_gt(cfg, key[1], key[0])
            found[key] = {"ground truth": shapes(i for s in gt for i in s.instances)}
        preds = load_predictions(pf.path)
        label = f"{run_label(run)} {pf.mode}"
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
    samples = [s for ref in refs for s in load_split(cfg, subset_ref(cfg, ref))]
    by_cat = gt_shapes_by_category(samples)
    subset = "+".join(refs)
    sets = [MorphologySet(title=f"{cat} · {cfg.name} {subset} · ground truth", slug=slugify("gt", cat),
                          keys={"class": cat, "subset": subset}, groups={"ground truth": items})
            for cat, items in by_cat.items()]
    sets += prediction_morphology_sets(cfg, runs)
    rows, figures = write_morphology(sets, out_dir)
    return [*write_size_tables(rows, out_dir), *(p for _, p in figures)]


# ======================================================================================= tables

#: The two ground-truth modes of the paper: overlapping polygons (Table 2) and priority-resolved (Table 4).
GT_MODES = {"overlap": "Table 2 — overlapping ground truth",
            "resolved": "Table 4 — priority-resolved ground truth"}
TABLE_NUMBER = {"overlap": "table2", "resolved": "table4"}
#: Score columns: (column name, threshold, score key in the pooled counts).
SCORES = (("P@0.5", "0.5", "precision"), ("R@0.5", "0.5", "recall"), ("F1@0.5", "0.5", "f1"),
          ("AP@0.5", "0.5", "ap"), ("AP@0.75", "0.75", "ap"), ("AP@0.9", "0.9", "ap"))
ID_COLUMNS = ("model", "mode", "init", "profile", "target", "subset", "n_images", "run")


@dataclass
class ResultRow:
    """One (model, mode, target, subset) row of a run, its status and its scores per GT mode (fractions)."""

    run: str
    model: str
    mode: str
    target: str
    subset: str
    status: str
    reason: str
    init: str
    profile: str
    n_images: int | None
    scores: dict[str, dict[str, float | None]]  # gt mode -> column -> fraction
    ci: dict[str, dict[str, tuple[float, float]]]  # gt mode -> column -> (low, high) fractions

    @property
    def key(self) -> tuple[str, str, str]:
        return self.mode, self.target, self.subset


def pct(value: float | None) -> float | None:
    """A fraction as a percentage with one decimal (the paper's format)."""
    return None if value is None else round(100.0 * float(value), 1)


def table_rows(rows: Sequence[ResultRow], gt_mode: str) -> list[dict[str, Any]]:
    """Rows of one paper table: identity columns, percentages, and ``[low, high]`` intervals where present."""
    out = []
    for r in rows:
        if r.status != "ok" or gt_mode not in r.scores:
            continue
        row: dict[str, Any] = {"model": r.model, "mode": r.mode, "init": r.init, "profile": r.profile,
                               "target": r.target, "subset": r.subset, "n_images": r.n_images, "run": r.run}
        for column, _, _ in SCORES:
            row[column] = pct(r.scores[gt_mode].get(column))
            ci = r.ci.get(gt_mode, {}).get(column)
            row[f"{column} CI"] = None if ci is None else [pct(ci[0]), pct(ci[1])]
        out.append(row)
    return sorted(out, key=lambda x: (x["target"], x["subset"], x["model"], x["mode"]))


def _ci_text(ci: Sequence[float] | None) -> str | None:
    return None if ci is None else f"[{ci[0]:.1f}, {ci[1]:.1f}]"


def _with_ci(value: float | None, ci: list[float] | None) -> str | None:
    if value is None:
        return None
    return f"{value:.1f}" if ci is None else f"{value:.1f} [{ci[0]:.1f}, {ci[1]:.1f}]"


def missing_lines(rows: Sequence[ResultRow]) -> list[str]:
    """One line per row that has no numbers (skipped/failed), with its reason."""
    ordered = sorted(rows, key=lambda x: (x.model, x.mode, x.target, x.subset))
    return [f"{r.model} · {r.mode} · {r.target} · {r.subset}: {r.status}"
            + (f" — {r.reason}" if r.reason else "") for r in ordered if r.status != "ok"]


def table_markdown(rows: Sequence[dict[str, Any]], gt_mode: str, missing: Sequence[str]) -> str:
    """One paper table in Markdown: ``value [95% CI]`` cells, then the missing/skipped rows."""
    display = [{**r, **{c: _with_ci(r[c], r[f"{c} CI"]) for c, _, _ in SCORES}} for r in rows]
    columns = [c for c in ID_COLUMNS if c != "run"] + [c for c, _, _ in SCORES]
    text = (f"## {GT_MODES[gt_mode]}\n\nPercent, pooled over images; [95% bootstrap interval over images] "
            "where the run computed one.\n\n" + markdown_table(display, columns))
    listing = "\n\n" + "\n".join(f"- {m}" for m in missing) if missing else " none"
    text += "\nMissing or skipped rows:" + listing
    return text + "\n"


def write_table(rows: Sequence[ResultRow], gt_mode: str, out_dir: Path, missing: Sequence[str]) -> list[Path]:
    """``table2``/``table4`` as Markdown, CSV (interval bounds in ``<col> lo``/``hi`` columns) and JSON."""
    import json

    trows = table_rows(rows, gt_mode)
    stem = TABLE_NUMBER[gt_mode]
    csv_rows, csv_cols = [], list(ID_COLUMNS)
    for c, _, _ in SCORES:
        csv_cols += [c, f"{c} lo", f"{c} hi"]
    for r in trows:
        flat = {k: v for k, v in r.items() if not k.endswith(" CI")}
        for c, _, _ in SCORES:
            ci = r[f"{c} CI"]
            flat[f"{c} lo"], flat[f"{c} hi"] = (ci[0], ci[1]) if ci else (None, None)
        csv_rows.append(flat)
    payload = {"table": GT_MODES[gt_mode], "units": "percent, one decimal; CI = 95% bootstrap over images",
               "rows": trows, "missing": list(missing)}
    return [
        write_text(out_dir / f"{stem}.md", table_markdown(trows, gt_mode, missing)),
        write_csv(out_dir / f"{stem}.csv", csv_rows, csv_cols),
        write_text(out_dir / f"{stem}.json", json.dumps(payload, indent=2) + "\n"),
    ]


# ======================================================================================= runs


@dataclass
class Run:
    """A finished run directory as the report reads it."""

    path: Path
    model: str
    config: dict[str, Any]
    manifest: dict[str, Any]
    rows: list[ResultRow]
    #: (mode, target, subset, gt mode) -> image -> (TP, FP, FN) at IoU 0.5
    per_image: dict[tuple[str, str, str, str], dict[str, tuple[int, int, int]]]


def find_run_dirs(paths: Sequence[Path]) -> list[Path]:
    """Run directories among `paths`: each is a run (holds ``results.json``), a multi-model run or a folder of runs."""
    from harness.errors import DataError

    found: list[Path] = []
    for path in map(Path, paths):
        if (path / "results.json").is_file():
            found.append(path)
        elif path.is_dir():
            # runs/<run>/results.json, and runs/<time>_all/<model>/results.json of a multi-model bench
            runs = sorted(p.parent for p in [*path.glob("*/results.json"), *path.glob("*/*/results.json")]
                          if (p.parent / "manifest.json").is_file())
            if not runs:
                raise DataError(f"{path}: neither a run directory (no results.json) nor a folder of runs; "
                                "finish a run with `c6bench bench` first")
            found.extend(runs)
        else:
            raise DataError(f"{path}: run directory not found")
    return sorted(dict.fromkeys(p.resolve() for p in found))


def _read_json_file(path: Path) -> Any:
    import json

    from harness.errors import DataError

    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: cannot read ({exc}); was the run interrupted? re-run `c6bench bench`") \
            from exc


def load_run(run_dir: Path) -> Run:
    """Read ``results.json``, ``per_image.csv``, ``config.yaml`` and ``manifest.json`` of a run."""
    import yaml

    run_dir = Path(run_dir)
    results = _read_json_file(run_dir / "results.json")
    config_path = run_dir / "config.yaml"
    config = yaml.safe_load(config_path.read_text()) if config_path.is_file() else {}
    manifest = _read_json_file(run_dir / "manifest.json") if (run_dir / "manifest.json").is_file() else {}
    rows = parse_results(results, run_dir)
    per_image = parse_per_image(run_dir / "per_image.csv") if (run_dir / "per_image.csv").is_file() else {}
    model = rows[0].model if rows else run_label(run_dir)
    return Run(path=run_dir, model=model, config=config or {}, manifest=manifest or {}, rows=rows,
               per_image=per_image)


# ---------------------------------------------------------------- the run-file schema (one place to adapt)


def _gt_mode_name(name: str) -> str:
    """Map a run's name of a GT mode onto ``overlap`` / ``resolved``."""
    low = name.lower().replace("-", "_")
    if low in ("overlap", "overlapping"):
        return "overlap"
    if low in ("resolved", "nonoverlap", "non_overlap", "priority", "priority_resolved"):
        return "resolved"
    from harness.errors import DataError

    raise DataError(f"unknown ground-truth mode {name!r}; expected overlap or resolved/nonoverlap")


def _scores_of(
    pooled: Mapping[str, Any], where: str
) -> tuple[dict[str, float | None], dict[str, tuple[float, float]]]:
    """Columns and intervals of the paper's tables from a metrics ``pooled`` block (fractions)."""
    from harness.errors import DataError

    scores: dict[str, float | None] = {}
    ci: dict[str, tuple[float, float]] = {}
    for column, threshold, key in SCORES:
        block = pooled.get(threshold)
        if not isinstance(block, Mapping) or key not in block:
            raise DataError(f"{where}: no pooled '{key}' at IoU {threshold}; results.json does not have the "
                            "expected schema (re-run with the current harness)")
        scores[column] = None if block[key] is None else float(block[key])
        interval = (block.get("ci") or {}).get(key) if isinstance(block.get("ci"), Mapping) else None
        if interval is not None:
            ci[column] = (float(interval[0]), float(interval[1]))
    return scores, ci


def parse_results(results: Any, run_dir: Path) -> list[ResultRow]:
    """`ResultRow`s of a run's ``results.json``."""
    from harness.errors import DataError

    where = run_dir / "results.json"
    raw_rows = results.get("rows") if isinstance(results, Mapping) else results
    if not isinstance(raw_rows, list):
        raise DataError(f"{where}: expected a list of rows (or an object with 'rows')")
    rows = []
    for k, raw in enumerate(raw_rows):
        item = f"{where}: row {k}"
        missing = [key for key in ("model", "mode", "target", "subset", "status") if key not in raw]
        if missing:
            raise DataError(f"{item}: missing key(s) {', '.join(missing)}")
        scores: dict[str, dict[str, float | None]] = {}
        ci: dict[str, dict[str, tuple[float, float]]] = {}
        n_images = raw.get("n_images")
        if raw["status"] == "ok":
            for name, block in (raw.get("metrics") or {}).items():
                mode = _gt_mode_name(name)
                scores[mode], ci[mode] = _scores_of(block.get("pooled", {}), f"{item} ({name})")
                n_images = n_images if n_images is not None else block.get("n_images")
        rows.append(ResultRow(
            run=run_dir.name, model=str(raw["model"]), mode=str(raw["mode"]), target=str(raw["target"]),
            subset=str(raw["subset"]), status=str(raw["status"]), reason=str(raw.get("reason") or ""),
            init=str(raw.get("init") or "") + (f" · seed {raw['seed']}, {raw['train_images']} train img"
                                               if raw.get("train_images") is not None else ""),
            profile=str(raw.get("profile") or "") + (" (REHEARSAL)" if raw.get("rehearsal") else ""),
            n_images=None if n_images is None else int(n_images), scores=scores, ci=ci,
        ))
    return rows


def parse_per_image(path: Path) -> dict[tuple[str, str, str, str], dict[str, tuple[int, int, int]]]:
    """Per-image TP/FP/FN at IoU 0.5 of ``per_image.csv``, keyed by (mode, target, subset, gt mode)."""
    import csv

    from harness.errors import DataError

    out: dict[tuple[str, str, str, str], dict[str, tuple[int, int, int]]] = {}
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        need = {"mode", "target", "subset", "gt_mode", "image", "threshold", "tp", "fp", "fn"}
        if not need <= set(reader.fieldnames or ()):
            raise DataError(f"{path}: columns {sorted(need - set(reader.fieldnames or ()))} missing; "
                            f"present: {reader.fieldnames}")
        for row in reader:
            if float(row["threshold"]) != 0.5 or row.get("trial"):
                continue  # a --seeds/--train-images trial: compared on matched seeds (harness.efficiency_report)
            key = (row["mode"], row["target"], row["subset"], _gt_mode_name(row["gt_mode"]))
            out.setdefault(key, {})[row["image"]] = (int(row["tp"]), int(row["fp"]), int(row["fn"]))
    return out


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
    import json

    display = [{**r, "95% CI": _ci_text(r["95% CI"])} for r in rows]
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


# ======================================================================================= run figures


def run_dataset(run: Run, override: Any = None) -> Any:
    """The dataset config a run was made on (its ``config.yaml``), or `override` when given."""
    from harness.dataset import load_dataset_config
    from harness.errors import ConfigError, DataError

    if override is not None:
        return override
    data = run.config.get("data")
    if not isinstance(data, Mapping) or not data.get("config") or not data.get("root"):
        raise DataError(f"{run.path}/config.yaml does not say which dataset (data.config, data.root) the run used; "
                        "pass --data")
    try:  # the dataset YAML and the root the run itself read, not a default location of the same name
        return load_dataset_config(data["config"], root=data["root"])
    except (ConfigError, OSError) as exc:
        raise DataError(f"{run.path}: the run's dataset ({data['config']} at {data['root']}) cannot be read ({exc}); "
                        "pass --data to score it against another copy") from exc


@functools.lru_cache(maxsize=16)
def _gray8(path: Path) -> np.ndarray:
    """The 8-bit percentile-normalised gray image (cached: every run and mode draws the same images)."""
    from harness.images import read_image

    return to_uint8(to_gray(read_image(path)))


def write_run_figures(
    run: Run, cfg: Any, out_dir: Path, overlay_images: int = 1, sheet_images: int = 2
) -> Figures:
    """Per prediction file: full+zoom overlays of its first `overlay_images` images (sorted by name) and
    zoom tiles of its first `sheet_images` images for the run's contact sheet (rows: target, subset, mode)."""
    from tqdm import tqdm

    figures = Figures(overlays=[], sheets=[], morphology=[])
    tiles: list[tuple[str, np.ndarray]] = []
    run_dir = out_dir / "overlays" / slugify(run.path.name)
    files = sorted((f for f in prediction_files(run.path) if not f.trial),  # trials are plotted as curves
                   key=lambda f: (f.target, f.subset, f.mode))
    for pf in tqdm(files, desc=f"overlays {run.path.name}", unit="file"):
        gt = {s.file_name: s for s in target_gt(cfg, pf.subset, pf.target)}
        preds = load_predictions(pf.path)
        unknown = sorted(set(preds) - set(gt))
        if unknown:
            from harness.errors import DataError

            raise DataError(f"{pf.path}: images {unknown[:3]} are not in the ground truth of {pf.subset}")
        for k, name in enumerate(sorted(preds)[: max(overlay_images, sheet_images)]):
            sample, pred = gt[name], list(preds[name].instances)
            image = _gray8(sample.image_path)
            if image.shape != (sample.height, sample.width):
                sample.load_image()  # raises the data layer's size-mismatch error
            label = f"{run.model} · {pf.mode} · {pf.target} · {pf.subset} · {sample.name}"
            if k < sheet_images:
                tiles.append((f"{pf.mode} · {pf.target} · {pf.subset}\n{sample.name}",
                              zoom_tile(image, sample.instances, pred)))
            if k < overlay_images:
                fig = overlay_figure(image, sample.instances, pred, label)
                path = run_dir / f"{slugify(pf.mode, pf.target, pf.subset, sample.name)}.png"
                figures.overlays.append((label, save_png(fig, path)))
    if tiles:
        sheet = contact_sheet(tiles, f"{run.model} — {run.path.name}: zoomed overlays (densest GT window)",
                              columns=max(2, 2 * sheet_images))
        sheet_path = save_png(sheet, run_dir / "contact_sheet.png")
        figures.sheets.append((f"{run.model} — {run.path.name}", sheet_path))
    return figures


# ======================================================================================= HTML + driver

_CSS = """body{font-family:system-ui,sans-serif;margin:1.5em;max-width:1500px;color:#222}
table{border-collapse:collapse;margin:.6em 0;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:right}th{background:#f0f0f0}
td:nth-child(-n+6){text-align:left}img{max-width:100%;border:1px solid #ddd;margin:.4em 0}
figure{margin:1em 0}figcaption{font-size:13px;color:#555}h2{border-bottom:2px solid #ddd;padding-bottom:.2em}
.note{color:#555;font-size:13px}"""


def _html_paper_table(rows: Sequence[dict[str, Any]]) -> str:
    display = [{**r, **{c: _with_ci(r[c], r[f"{c} CI"]) for c, _, _ in SCORES}} for r in rows]
    return html_table(display, [*ID_COLUMNS, *(c for c, _, _ in SCORES)])


def _html_figures(items: Sequence[tuple[str, Path]]) -> str:
    return "".join(f'<figure><img alt="{html.escape(t)}" src="{png_data_uri(p)}"><figcaption>{html.escape(t)}'
                   "</figcaption></figure>" for t, p in items)


def write_html(
    path: Path,
    runs: Sequence[Run],
    tables: Mapping[str, list[dict[str, Any]]],
    missing: Sequence[str],
    comparisons: Sequence[dict[str, Any]],
    compare_notes: Sequence[str],
    sizes: Sequence[dict[str, Any]],
    figures: Figures,
    efficiency_html: str = "",
) -> Path:
    """One self-contained page: tables and every figure embedded as base64 PNG (opens without a server)."""
    import time

    run_rows = [{"run": r.path.name, "model": r.model, "rows": len(r.rows),
                 "ok": sum(x.status == "ok" for x in r.rows), "device": r.manifest.get("device"),
                 "git": str(r.manifest.get("git_hash") or r.manifest.get("git") or "")[:10]} for r in runs]
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>Glioma C6 benchmark report</title>"
             f"<style>{_CSS}</style></head><body><h1>Glioma C6 benchmark report</h1>"
             f"<p class='note'>Generated {time.strftime('%Y-%m-%d %H:%M:%S')} from {len(runs)} run(s).</p>",
             "<h2>Runs</h2>", html_table(run_rows, ["run", "model", "rows", "ok", "device", "git"])]
    for gt_mode, rows in tables.items():
        parts += [f"<h2>{html.escape(GT_MODES[gt_mode])}</h2><p class='note'>Percent, pooled over images; "
                  "[95% bootstrap interval over images] where computed.</p>", _html_paper_table(rows)]
    parts.append("<h3>Missing or skipped rows</h3>" + ("<p>none</p>" if not missing else
                 "<ul>" + "".join(f"<li>{html.escape(m)}</li>" for m in missing) + "</ul>"))
    cmp_display = [{**r, "95% CI": _ci_text(r["95% CI"])} for r in comparisons]
    parts += ["<h2>Paired comparison (F1@0.5, same images)</h2><p class='note'>Difference A − B in "
              "percentage points with a 95% bootstrap interval over images.</p>",
              html_table(cmp_display, COMPARE_COLUMNS)]
    if compare_notes:
        parts.append("<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in compare_notes) + "</ul>")
    parts.append(efficiency_html)  # label efficiency (runs with --train-images), else empty
    parts += ["<h2>Morphology (paper Figure 2)</h2><p class='note'>Eccentricity = short/long axis of the "
              "moment ellipse; solidity = area / convex-hull area.</p>",
              html_table(sizes, [c for c in SIZE_COLUMNS if any(c in r for r in sizes)]),
              _html_figures(figures.morphology),
              "<h2>Overlays (paper Figures 4/5)</h2><p class='note'>Light blue: ground-truth borders; red: "
              "predicted borders over semi-transparent predicted masks; the zoom shows the window with the "
              "most GT cells.</p>",
              "<h3>Contact sheets</h3>", _html_figures(figures.sheets),
              "<h3>Full image and zoom</h3>", _html_figures(figures.overlays), "</body></html>"]
    return write_text(path, "\n".join(parts))


def generate_report(
    paths: Sequence[Path],
    out_dir: Path,
    data: Any = None,
    overlay_images: int = 1,
    sheet_images: int = 2,
    n_boot: int = 2000,
    seed: int = 0,
    figures: bool = True,
) -> dict[str, Any]:
    """`c6bench report`: tables, comparisons, figures and ``report.html`` for every run under `paths`.

    ``data`` (a `DatasetConfig`) overrides the dataset recorded in each run's config (figures need the GT).
    Returns a summary: files written, row counts, wall time.
    """
    import json
    import time

    from tqdm import tqdm

    start = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    from harness.rehearsal import select_runs

    named = [Path(p).resolve() for p in paths if (Path(p) / "results.json").is_file()]
    chosen = select_runs(named, [p for p in find_run_dirs(paths) if p not in named])  # never rehearsal + real
    runs = [load_run(p) for p in tqdm(chosen, desc="reading runs", unit="run")]
    all_rows = [row for run in runs for row in run.rows]
    missing = missing_lines(all_rows)
    written: list[Path] = []
    tables = {gt_mode: table_rows(all_rows, gt_mode) for gt_mode in GT_MODES}
    for gt_mode in GT_MODES:
        written += write_table(all_rows, gt_mode, out_dir, missing)
    comparisons, notes = paired_comparisons(runs, n_boot=n_boot, seed=seed)
    written += write_comparisons(comparisons, notes, out_dir)
    from harness.efficiency_report import write_section

    efficiency_files, efficiency_html = write_section([r.path for r in runs], out_dir)
    written += efficiency_files

    figs = Figures(overlays=[], sheets=[], morphology=[])
    sizes: list[dict[str, Any]] = []
    if figures:
        by_dataset: dict[Path, tuple[Any, list[Path]]] = {}
        for run in runs:
            cfg = run_dataset(run, data)
            run_figs = write_run_figures(run, cfg, out_dir, overlay_images, sheet_images)
            figs.overlays += run_figs.overlays
            figs.sheets += run_figs.sheets
            by_dataset.setdefault(Path(cfg.root), (cfg, []))[1].append(run.path)
        for cfg, run_paths in by_dataset.values():
            rows, morph = write_morphology(prediction_morphology_sets(cfg, run_paths), out_dir / "morphology")
            sizes += rows
            figs.morphology += morph
        if sizes:
            written += write_size_tables(sizes, out_dir / "morphology")
    written += [p for _, p in (*figs.overlays, *figs.sheets, *figs.morphology)]
    written.append(
        write_html(out_dir / "report.html", runs, tables, missing, comparisons, notes, sizes, figs,
                   efficiency_html))
    summary = {
        "runs": [str(r.path) for r in runs],
        "rows": {gt_mode: len(rows) for gt_mode, rows in tables.items()},
        "missing": missing,
        "comparisons": len(comparisons),
        "figures": len(figs.overlays) + len(figs.sheets) + len(figs.morphology),
        "largest_file": max(((p.stat().st_size, str(p)) for p in written), default=(0, ""))[::-1],
        "wall_s": round(time.perf_counter() - start, 2),
    }
    report = {"summary": summary, "tables": {TABLE_NUMBER[m]: r for m, r in tables.items()},
              "comparisons": comparisons, "not_compared": notes, "sizes": sizes,
              "figures": [str(p.relative_to(out_dir))
                          for _, p in (*figs.overlays, *figs.sheets, *figs.morphology)]}
    report_text = json.dumps(report, indent=2, ensure_ascii=False) + "\n"
    written.append(write_text(out_dir / "report.json", report_text))
    summary["files"] = [str(p) for p in written]
    logger.info("report: %d run(s), %d files in %s (%.1f s)", len(runs), len(written), out_dir,
                summary["wall_s"])
    return summary
