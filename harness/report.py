"""Reports people look at: the paper's tables across runs, overlays, morphology plots, paired comparisons.

Everything here reads finished run directories (``runs/<time>_<model>/``: ``config.yaml``, ``manifest.json``,
``results.json``, ``per_image.csv``, ``predictions/<mode>/<target>/<subset>.json``) and writes files; it
never trains or predicts. Figures use matplotlib's Agg backend (no display).

The pieces: `harness.results` (reading run files, Tables 2/4), `harness.figures` (overlays, morphology
plots), `harness.stats` (paired comparisons, sizes); this module draws a run's figures and writes the report.
"""

from __future__ import annotations

import functools
import html
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness.figures import contact_sheet, overlay_figure, png_data_uri, save_png, zoom_tile
from harness.images import to_gray, to_uint8
from harness.io import write_text
from harness.predictions import prediction_files
from harness.results import (
    GT_TITLES,
    ID_COLUMNS,
    SCORE_COLUMNS,
    TABLE_NUMBER,
    ci_text,
    html_table,
    missing_lines,
    shown,
    table_rows,
    write_table,
)
from harness.runs import Run, find_run_dirs, load_run
from harness.stats import (
    COMPARE_COLUMNS,
    SIZE_COLUMNS,
    load_predictions,
    paired_comparisons,
    prediction_morphology_sets,
    slugify,
    target_gt,
    write_comparisons,
    write_morphology,
    write_size_tables,
)

logger = logging.getLogger(__name__)


@dataclass
class Figures:
    """PNG files written for a report, grouped for the HTML page."""

    overlays: list[tuple[str, Path]]
    sheets: list[tuple[str, Path]]
    morphology: list[tuple[str, Path]]


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
    return html_table([shown(r) for r in rows], [*ID_COLUMNS, *SCORE_COLUMNS])


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
                 "git": str(r.manifest.get("git") or "")[:10]} for r in runs]
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>Glioma C6 benchmark report</title>"
             f"<style>{_CSS}</style></head><body><h1>Glioma C6 benchmark report</h1>"
             f"<p class='note'>Generated {time.strftime('%Y-%m-%d %H:%M:%S')} from {len(runs)} run(s).</p>",
             "<h2>Runs</h2>", html_table(run_rows, ["run", "model", "rows", "ok", "device", "git"])]
    for gt_mode, rows in tables.items():
        parts += [f"<h2>{html.escape(GT_TITLES[gt_mode])}</h2><p class='note'>Percent, pooled over images; "
                  "[95% bootstrap interval over images] where computed.</p>", _html_paper_table(rows)]
    parts.append("<h3>Missing or skipped rows</h3>" + ("<p>none</p>" if not missing else
                 "<ul>" + "".join(f"<li>{html.escape(m)}</li>" for m in missing) + "</ul>"))
    cmp_display = [{**r, "95% CI": ci_text(r["95% CI"])} for r in comparisons]
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
    tables = {gt_mode: table_rows(all_rows, gt_mode) for gt_mode in GT_TITLES}
    for gt_mode, trows in tables.items():
        written += write_table(trows, gt_mode, out_dir, missing)
    comparisons, notes = paired_comparisons(runs, n_boot=n_boot, seed=seed)
    written += write_comparisons(comparisons, notes, out_dir)
    from harness.efficiency_report import write_section

    efficiency_files, efficiency_html = write_section(all_rows, out_dir)
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
