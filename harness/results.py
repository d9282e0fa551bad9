"""The result files of a bench: ``results.json``, ``results.csv`` (flat rows, fractions), ``results.md`` (Tables
2 and 4) and ``per_image.csv``."""

from __future__ import annotations

import csv
import html
import io
import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import rehearsal
from harness.io import write_json, write_text

logger = logging.getLogger(__name__)

#: The two ground truths every row is scored against: overlapping (paper Table 2) and priority-resolved with
#: the rule ``last`` (Table 4); the value is `harness.evaluate.evaluate`'s ``resolve_gt``.
GT_MODES = {"overlap": None, "resolved": "last"}


#: The six scores of every row, written (``results.csv``, ``results.md``) and read back (`parse_results`,
#: the report's tables) by these names: (column name, IoU threshold, score key in the pooled counts).
SCORES = (("P@0.5", "0.5", "precision"), ("R@0.5", "0.5", "recall"), ("F1@0.5", "0.5", "f1"),
          ("AP@0.5", "0.5", "ap"), ("AP@0.75", "0.75", "ap"), ("AP@0.9", "0.9", "ap"))


def flat_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One flat record per result row: identity columns + the six scores for each GT mode (fractions)."""
    out, trials = [], any("train_images" in row for row in rows)
    for row in rows:
        flat = {k: row[k] for k in ("model", "mode", "target", "subset", "status", "reason", "init", "profile")}
        flat["rehearsal"] = bool(row.get("rehearsal"))
        flat["n_images"] = row["n_images"]
        if trials:  # a run with --seeds/--train-images (zero-shot rows: empty)
            flat["seed"], flat["train_images"] = row.get("seed"), row.get("train_images")
        for gt_mode in GT_MODES:
            pooled = row["metrics"].get(gt_mode, {}).get("pooled", {})
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


def results_csv(rows: Sequence[dict[str, Any]]) -> str:
    """``results.csv``: flat rows, fractions in [0, 1]."""
    return csv_text(flat_rows(rows))


def results_markdown(rows: Sequence[dict[str, Any]], rehearse: int | None = None) -> str:
    """``results.md``: the paper's Table 2 (overlapping GT) and Table 4 (priority-resolved GT), in percent."""
    lines = [rehearsal.banner(rehearse)] if rehearse else []
    for gt_mode, title in (("overlap", "Table 2 — overlapping ground truth"),
                           ("resolved", "Table 4 — priority-resolved ground truth (rule: last)")):
        lines += [f"### {title}", "",
                  "| model | mode | target | subset | init | " + " | ".join(c[0] for c in SCORES) + " |",
                  "|---|---|---|---|---|" + "---:|" * len(SCORES)]
        for row in rows:
            trial = f" · seed {row['seed']}, {row['train_images']} train img" if "train_images" in row else ""
            head = f"| {row['model']} | {row['mode']} | {row['target']} | {row['subset']} | {row['init']}{trial} |"
            if row["status"] != "ok":
                lines.append(head + f" skipped: {short_reason(row['reason'])} |" + " |" * (len(SCORES) - 1))
                continue
            pooled = row["metrics"][gt_mode]["pooled"]
            lines.append(head + "".join(f" {100 * pooled[t][k]:.1f} |" for _, t, k in SCORES))
        lines.append("")
    lines.append("Scores pooled over images (TP/FP/FN summed per target), AP = TP/(TP+FP+FN) (cellpose-style); "
                 "instances touching the 2-px image frame removed from GT and predictions separately.")
    return "\n".join(lines) + "\n"


def write_result_files(run_dir: Path, header: dict[str, Any], rows: Sequence[dict[str, Any]],
                       per_image: Sequence[dict[str, Any]], rehearse: int | None, extra_markdown: str = "") -> None:
    """``results.json`` (`header` + rows), ``results.csv``, ``results.md`` (+ `extra_markdown`), ``per_image.csv``."""
    write_json(run_dir / "results.json", {**header, "rows": list(rows)})
    write_text(run_dir / "results.csv", results_csv(rows))
    write_text(run_dir / "results.md", results_markdown(rows, rehearse=rehearse) + extra_markdown)
    write_text(run_dir / "per_image.csv", csv_text(per_image))


# --------------------------------------------------------------------------------------------- reading


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


# ======================================================================================= tables

#: The titles and file names of the paper's tables, per ground-truth mode (`GT_MODES`).
GT_TITLES = {"overlap": "Table 2 — overlapping ground truth",
             "resolved": "Table 4 — priority-resolved ground truth"}
TABLE_NUMBER = {"overlap": "table2", "resolved": "table4"}
ID_COLUMNS = ("model", "mode", "init", "profile", "target", "subset", "n_images", "run")


@dataclass(frozen=True)
class ResultRow:
    """One (model, mode, target, subset) row of a run as the report reads it back from ``results.json``
    (`harness.runs.parse_results`): its status and its scores per GT mode (fractions, `SCORES` columns)."""

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


def ci_text(ci: Sequence[float] | None) -> str | None:
    return None if ci is None else f"[{ci[0]:.1f}, {ci[1]:.1f}]"


def with_ci(value: float | None, ci: list[float] | None) -> str | None:
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
    display = [{**r, **{c: with_ci(r[c], r[f"{c} CI"]) for c, _, _ in SCORES}} for r in rows]
    columns = [c for c in ID_COLUMNS if c != "run"] + [c for c, _, _ in SCORES]
    text = (f"## {GT_TITLES[gt_mode]}\n\nPercent, pooled over images; [95% bootstrap interval over images] "
            "where the run computed one.\n\n" + markdown_table(display, columns))
    listing = "\n\n" + "\n".join(f"- {m}" for m in missing) if missing else " none"
    text += "\nMissing or skipped rows:" + listing
    return text + "\n"


def write_table(rows: Sequence[ResultRow], gt_mode: str, out_dir: Path, missing: Sequence[str]) -> list[Path]:
    """``table2``/``table4`` as Markdown, CSV (interval bounds in ``<col> lo``/``hi`` columns) and JSON."""

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
    payload = {"table": GT_TITLES[gt_mode], "units": "percent, one decimal; CI = 95% bootstrap over images",
               "rows": trows, "missing": list(missing)}
    return [
        write_text(out_dir / f"{stem}.md", table_markdown(trows, gt_mode, missing)),
        write_csv(out_dir / f"{stem}.csv", csv_rows, csv_cols),
        write_text(out_dir / f"{stem}.json", json.dumps(payload, indent=2) + "\n"),
    ]
