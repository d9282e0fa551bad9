"""The result files of a bench: ``results.json``, ``results.csv`` (flat rows, fractions), ``results.md`` (Tables
2 and 4) and ``per_image.csv``; and `ResultRow`, the one record a row is written as and read back as."""

from __future__ import annotations

import csv
import functools
import html
import io
import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import rehearsal
from harness.errors import DataError
from harness.io import write_json, write_text

logger = logging.getLogger(__name__)

#: The two ground truths every row is scored against: overlapping (paper Table 2) and priority-resolved with
#: the rule ``last`` (Table 4); the value is `harness.evaluate.evaluate`'s ``resolve_gt``.
GT_MODES = {"overlap": None, "resolved": "last"}


#: The six scores of every row, written (``results.csv``, ``results.md``) and read back (`ResultRow.scores`,
#: the report's tables) by these names: (column name, IoU threshold, score key in the pooled counts).
SCORES = (("P@0.5", "0.5", "precision"), ("R@0.5", "0.5", "recall"), ("F1@0.5", "0.5", "f1"),
          ("AP@0.5", "0.5", "ap"), ("AP@0.75", "0.75", "ap"), ("AP@0.9", "0.9", "ap"))


# ======================================================================================= the row schema


@dataclass(frozen=True)
class ResultRow:
    """One (model, mode, target, subset[, trial]) row of a bench: what the runner writes into ``results.json``
    (`to_dict`, the keys in this order) and what the report reads back from it (`from_dict`)."""

    model: str
    mode: str
    target: str
    subset: str  # the dataset's ``part/split`` (``spec/test``)
    status: str  # ``ok``, or ``skipped`` with a reason
    reason: str = ""
    init: str = ""  # what the row's model started from (weights, fine-tuning init), in the runner's words
    profile: str = ""
    rehearsal: bool = False
    n_images: int | None = None
    #: A trial's training seed and training-set size (images): only in runs with --seeds/--train-images.
    seed: int | None = None
    train_images: int | None = None
    metrics: Mapping[str, Any] = field(default_factory=dict)  # gt mode -> `harness.evaluate` target block
    run: str = ""  # the run directory a row was read from (not written)

    def to_dict(self) -> dict[str, Any]:
        """The row as ``results.json`` holds it (``seed``/``train_images`` only for a trial's row)."""
        trial = {"seed": self.seed, "train_images": self.train_images} if self.train_images is not None else {}
        return {"model": self.model, "mode": self.mode, "target": self.target, "subset": self.subset,
                "status": self.status, "reason": self.reason, "init": self.init, "profile": self.profile,
                "rehearsal": self.rehearsal, "n_images": self.n_images, **trial, "metrics": dict(self.metrics)}

    @classmethod
    def from_dict(cls, raw: Any, where: str, run: str = "") -> ResultRow:
        """A row of ``results.json`` (or of an evaluation file); `where` (file and row) names it in errors."""
        if not isinstance(raw, Mapping):
            raise DataError(f"{where}: expected an object with the keys of a result row")
        missing = [key for key in ("model", "mode", "target", "subset", "status") if key not in raw]
        if missing:
            raise DataError(f"{where}: missing key(s) {', '.join(missing)}")

        def number(key: str) -> int | None:
            return None if raw.get(key) is None else int(raw[key])

        row = cls(model=str(raw["model"]), mode=str(raw["mode"]), target=str(raw["target"]),
                  subset=str(raw["subset"]), status=str(raw["status"]), reason=str(raw.get("reason") or ""),
                  init=str(raw.get("init") or ""), profile=str(raw.get("profile") or ""),
                  rehearsal=bool(raw.get("rehearsal")), n_images=number("n_images"), seed=number("seed"),
                  train_images=number("train_images"), metrics=raw.get("metrics") or {}, run=run)
        if row.status == "ok":
            try:
                row._pooled  # noqa: B018 - checks every GT mode's scores now, naming the file
            except DataError as exc:
                raise DataError(f"{where}: {exc}") from None
        return row

    @functools.cached_property
    def _pooled(self) -> tuple[dict[str, dict[str, float | None]], dict[str, dict[str, tuple[float, float]]]]:
        """`scores` and `ci`, read once from `metrics` (the row stays what was written)."""
        scores: dict[str, dict[str, float | None]] = {}
        ci: dict[str, dict[str, tuple[float, float]]] = {}
        for name, block in self.metrics.items():
            mode = gt_mode(name)
            scores[mode], ci[mode] = _pooled_scores(block.get("pooled", {}) if isinstance(block, Mapping) else {},
                                                    mode)
        return scores, ci

    @property
    def scores(self) -> dict[str, dict[str, float | None]]:
        """GT mode → `SCORES` column → pooled fraction (an ``ok`` row's; empty for a skipped one)."""
        return self._pooled[0]

    @property
    def ci(self) -> dict[str, dict[str, tuple[float, float]]]:
        """GT mode → `SCORES` column → (low, high) bootstrap interval, where the run computed one."""
        return self._pooled[1]

    @property
    def shown_init(self) -> str:
        """The init as tables show it: a trial's seed and training-set size appended."""
        trial = f" · seed {self.seed}, {self.train_images} train img" if self.train_images is not None else ""
        return self.init + trial

    @property
    def shown_profile(self) -> str:
        """The profile as the report shows it: a rehearsal's rows say so."""
        return self.profile + (" (REHEARSAL)" if self.rehearsal else "")


def gt_mode(name: str) -> str:
    """A ground-truth mode as the bench writes it (`GT_MODES`); anything else is a `DataError`."""
    if name not in GT_MODES:
        raise DataError(f"unknown ground-truth mode {name!r}; a bench writes {' or '.join(GT_MODES)}")
    return name


def _pooled_scores(pooled: Mapping[str, Any], gt_mode: str
                   ) -> tuple[dict[str, float | None], dict[str, tuple[float, float]]]:
    """The `SCORES` columns and their intervals of a metrics ``pooled`` block (fractions)."""
    scores: dict[str, float | None] = {}
    ci: dict[str, tuple[float, float]] = {}
    for column, threshold, key in SCORES:
        block = pooled.get(threshold)
        if not isinstance(block, Mapping) or key not in block:
            raise DataError(f"{gt_mode}: no pooled '{key}' at IoU {threshold}; the row does not have the expected "
                            "schema (re-run with the current harness)")
        scores[column] = None if block[key] is None else float(block[key])
        interval = block["ci"].get(key) if isinstance(block.get("ci"), Mapping) else None
        if interval is not None:
            ci[column] = (float(interval[0]), float(interval[1]))
    return scores, ci


# ======================================================================================= a run's files


def flat_rows(rows: Sequence[ResultRow]) -> list[dict[str, Any]]:
    """One flat record per result row: identity columns + the six scores for each GT mode (fractions)."""
    out, trials = [], any(row.train_images is not None for row in rows)
    for row in rows:
        flat: dict[str, Any] = {"model": row.model, "mode": row.mode, "target": row.target, "subset": row.subset,
                                "status": row.status, "reason": row.reason, "init": row.init,
                                "profile": row.profile, "rehearsal": row.rehearsal, "n_images": row.n_images}
        if trials:  # a run with --seeds/--train-images (zero-shot rows: empty)
            flat["seed"], flat["train_images"] = row.seed, row.train_images
        for gt_mode in GT_MODES:
            pooled = row.metrics.get(gt_mode, {}).get("pooled", {})
            for name, threshold, key in SCORES:
                flat[f"{gt_mode} {name}"] = pooled.get(threshold, {}).get(key)
        out.append(flat)
    return out


def csv_text(records: Sequence[dict[str, Any]]) -> str:
    if not records:
        return ""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(records[0]))
    writer.writeheader()
    writer.writerows(records)
    return buffer.getvalue()


_URL = re.compile(r"https?://([^/\s)]+)[^\s)]*")
_PATH = re.compile(r"(?<![\w.:])/(?:[^\s/;,()'\"`]+/)+([^\s/;,()'\"`]+)")


def short_reason(reason: str) -> str:
    """A skip reason for a table cell: a URL reduced to its host, an absolute path to ``…/<file>``.

    ``results.json`` keeps the full reason (the exact path to place a file at, the URL to fetch it from).
    """
    return _PATH.sub(r"…/\1", _URL.sub(r"\1", reason))


def results_csv(rows: Sequence[ResultRow]) -> str:
    """``results.csv``: flat rows, fractions in [0, 1]."""
    return csv_text(flat_rows(rows))


def write_result_files(run_dir: Path, header: dict[str, Any], rows: Sequence[ResultRow],
                       per_image: Sequence[dict[str, Any]], rehearse: int | None, extra_markdown: str = "") -> None:
    """``results.json`` (`header` + rows), ``results.csv``, ``results.md`` (+ `extra_markdown`), ``per_image.csv``."""
    write_json(run_dir / "results.json", {**header, "rows": [row.to_dict() for row in rows]})
    write_text(run_dir / "results.csv", results_csv(rows))
    write_text(run_dir / "results.md", results_markdown(rows, rehearse=rehearse) + extra_markdown)
    write_text(run_dir / "per_image.csv", csv_text(per_image))


def parse_rows(results: Any, where: Path, run: str = "") -> list[ResultRow]:
    """The `ResultRow`s of a ``results.json`` (or evaluation file) object; errors name `where` and the row."""
    raw_rows = results.get("rows") if isinstance(results, Mapping) else None
    if not isinstance(raw_rows, list):
        raise DataError(f"{where}: expected an object with a list of 'rows' (as `c6bench bench` writes it)")
    return [ResultRow.from_dict(raw, f"{where}: row {k}", run) for k, raw in enumerate(raw_rows)]


# ======================================================================================= table writers


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], right: Sequence[str] = (),
                   blank: str = "-") -> str:
    """A GitHub-style Markdown table: `blank` for missing cells, the `right` columns right-aligned."""
    def cell(v: Any) -> str:
        text = blank if v is None or v == "" else str(v).replace("|", "\\|")
        return f" {text} |" if text else " |"

    lines = ["|" + "".join(cell(c) for c in columns),
             "|" + "".join("---:|" if c in right else "---|" for c in columns)]
    lines += ["|" + "".join(cell(r.get(c)) for c in columns) for r in rows]
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
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({c: "" if r.get(c) is None else r.get(c) for c in columns})
    return write_text(path, buf.getvalue())


# ======================================================================================= Tables 2 and 4
# One renderer for both places the paper's tables appear: a run's ``results.md`` (its rows in plan order,
# skipped rows in place with their reason) and the report's ``table2``/``table4`` (every run's rows sorted,
# with bootstrap intervals, skipped rows listed below). `table_cells` makes a row's cells, `shown` their text.

#: The titles and file names of the paper's tables, per ground-truth mode (`GT_MODES`).
GT_TITLES = {"overlap": "Table 2 — overlapping ground truth",
             "resolved": "Table 4 — priority-resolved ground truth"}
TABLE_NUMBER = {"overlap": "table2", "resolved": "table4"}
ID_COLUMNS = ("model", "mode", "init", "profile", "target", "subset", "n_images", "run")
#: The identity columns of a run's own ``results.md`` (one run, one profile).
RUN_COLUMNS = ("model", "mode", "target", "subset", "init")
SCORE_COLUMNS = tuple(column for column, _, _ in SCORES)


def pct(value: float | None) -> float | None:
    """A fraction as a percentage with one decimal (the paper's format)."""
    return None if value is None else round(100.0 * float(value), 1)


def table_cells(r: ResultRow, gt_mode: str) -> dict[str, Any]:
    """One row of a paper table: identity columns, percentages and ``[low, high]`` intervals (None: none)."""
    row: dict[str, Any] = {"model": r.model, "mode": r.mode, "init": r.shown_init, "profile": r.shown_profile,
                           "target": r.target, "subset": r.subset, "n_images": r.n_images, "run": r.run}
    scores, intervals = r.scores.get(gt_mode, {}), r.ci.get(gt_mode, {})
    for column in SCORE_COLUMNS:
        row[column] = pct(scores.get(column))
        ci = intervals.get(column)
        row[f"{column} CI"] = None if ci is None else [pct(ci[0]), pct(ci[1])]
    return row


def table_rows(rows: Sequence[ResultRow], gt_mode: str) -> list[dict[str, Any]]:
    """The report's rows of one paper table (rows with numbers), sorted by target, subset, model, mode."""
    out = [table_cells(r, gt_mode) for r in rows if r.status == "ok" and gt_mode in r.scores]
    return sorted(out, key=lambda x: (x["target"], x["subset"], x["model"], x["mode"]))


def ci_text(ci: Sequence[float] | None) -> str | None:
    return None if ci is None else f"[{ci[0]:.1f}, {ci[1]:.1f}]"


def with_ci(value: float | None, ci: list[float] | None) -> str | None:
    if value is None:
        return None
    return f"{value:.1f}" if ci is None else f"{value:.1f} {ci_text(ci)}"


def shown(cells: Mapping[str, Any], ci: bool = True) -> dict[str, Any]:
    """Table cells as text: ``value`` or ``value [low, high]`` (one decimal) in the score columns."""
    return {**cells, **{c: with_ci(cells[c], cells[f"{c} CI"] if ci else None) for c in SCORE_COLUMNS}}


def missing_lines(rows: Sequence[ResultRow]) -> list[str]:
    """One line per row that has no numbers (skipped/failed), with its reason."""
    ordered = sorted(rows, key=lambda x: (x.model, x.mode, x.target, x.subset))
    return [f"{r.model} · {r.mode} · {r.target} · {r.subset}: {r.status}"
            + (f" — {r.reason}" if r.reason else "") for r in ordered if r.status != "ok"]


def results_markdown(rows: Sequence[ResultRow], rehearse: int | None = None) -> str:
    """``results.md``: the paper's Table 2 (overlapping GT) and Table 4 (priority-resolved GT), in percent.

    Rows in plan order; a row without numbers says why in its first score cell (the reason shortened).
    """
    lines = [rehearsal.banner(rehearse)] if rehearse else []
    for gt_mode, rule in GT_MODES.items():
        cells = [shown(table_cells(r, gt_mode), ci=False) if r.status == "ok"
                 else {**table_cells(r, gt_mode), SCORE_COLUMNS[0]: f"skipped: {short_reason(r.reason)}"}
                 for r in rows]
        table = markdown_table(cells, RUN_COLUMNS + SCORE_COLUMNS, right=SCORE_COLUMNS, blank="")
        lines += [f"### {GT_TITLES[gt_mode]}" + (f" (rule: {rule})" if rule else ""), "", table]
    lines.append("Scores pooled over images (TP/FP/FN summed per target), AP = TP/(TP+FP+FN) (cellpose-style); "
                 "instances touching the 2-px image frame removed from GT and predictions separately.")
    return "\n".join(lines) + "\n"


def table_markdown(rows: Sequence[dict[str, Any]], gt_mode: str, missing: Sequence[str]) -> str:
    """One paper table of the report in Markdown: ``value [95% CI]`` cells, then the missing/skipped rows."""
    columns = [c for c in ID_COLUMNS if c != "run"] + list(SCORE_COLUMNS)
    text = (f"## {GT_TITLES[gt_mode]}\n\nPercent, pooled over images; [95% bootstrap interval over images] "
            "where the run computed one.\n\n" + markdown_table([shown(r) for r in rows], columns))
    listing = "\n\n" + "\n".join(f"- {m}" for m in missing) if missing else " none"
    text += "\nMissing or skipped rows:" + listing
    return text + "\n"


def write_table(trows: Sequence[dict[str, Any]], gt_mode: str, out_dir: Path, missing: Sequence[str]) -> list[Path]:
    """``table2``/``table4`` (`trows`: its `table_rows`) as Markdown, CSV (interval bounds in ``<col> lo``/``hi``
    columns) and JSON."""
    stem = TABLE_NUMBER[gt_mode]
    csv_rows, csv_cols = [], list(ID_COLUMNS)
    for c in SCORE_COLUMNS:
        csv_cols += [c, f"{c} lo", f"{c} hi"]
    for r in trows:
        flat = {k: v for k, v in r.items() if not k.endswith(" CI")}
        for c in SCORE_COLUMNS:
            ci = r[f"{c} CI"]
            flat[f"{c} lo"], flat[f"{c} hi"] = (ci[0], ci[1]) if ci else (None, None)
        csv_rows.append(flat)
    payload = {"table": GT_TITLES[gt_mode], "units": "percent, one decimal; CI = 95% bootstrap over images",
               "rows": list(trows), "missing": list(missing)}
    return [
        write_text(out_dir / f"{stem}.md", table_markdown(trows, gt_mode, missing)),
        write_csv(out_dir / f"{stem}.csv", csv_rows, csv_cols),
        write_text(out_dir / f"{stem}.json", json.dumps(payload, indent=2) + "\n"),
    ]
