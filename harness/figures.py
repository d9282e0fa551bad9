"""Figures of a report: overlays (paper Figures 4/5), contact sheets, morphology plots, PNG files.

Overlays follow the paper's Figures 4/5: the percentile-normalised image, ground-truth borders in light
blue, predicted borders in red over semi-transparent red predicted masks, full image and a zoomed window
(the window holding the most ground-truth cells). Borders are found per instance on its bounding-box crop
(`skimage.segmentation.find_boundaries`) and pasted into one canvas per view: ground truth as the *outer*
boundary, predictions as the *inner* one, so a perfect prediction shows both lines side by side. Figures use
matplotlib's Agg backend (no display).
"""

from __future__ import annotations

import base64
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from harness.images import to_gray, to_uint8
from harness.io import atomic_path
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


def save_png(fig: Figure, path: Path) -> Path:
    """Write a figure as PNG with nothing clipped (``bbox_inches="tight"``), via a temp name."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight", pad_inches=0.1)
    return path


def png_data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")
