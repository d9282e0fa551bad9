"""The result files of a bench: ``results.csv`` (flat rows, fractions) and ``results.md`` (Tables 2 and 4)."""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Sequence
from typing import Any

from harness import rehearsal

logger = logging.getLogger(__name__)

#: The two ground truths every row is scored against: overlapping (paper Table 2) and priority-resolved with
#: the rule ``last`` (Table 4); the value is `harness.evaluate.evaluate`'s ``resolve_gt``.
GT_MODES = {"overlap": None, "resolved": "last"}


COLUMNS = (("P@0.5", "0.5", "precision"), ("R@0.5", "0.5", "recall"), ("F1@0.5", "0.5", "f1"),
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
            for name, threshold, key in COLUMNS:
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


def results_csv(rows: Sequence[dict[str, Any]]) -> str:
    """``results.csv``: flat rows, fractions in [0, 1]."""
    return csv_text(flat_rows(rows))


def results_markdown(rows: Sequence[dict[str, Any]], rehearse: int | None = None) -> str:
    """``results.md``: the paper's Table 2 (overlapping GT) and Table 4 (priority-resolved GT), in percent."""
    lines = [rehearsal.banner(rehearse)] if rehearse else []
    for gt_mode, title in (("overlap", "Table 2 — overlapping ground truth"),
                           ("resolved", "Table 4 — priority-resolved ground truth (rule: last)")):
        lines += [f"### {title}", "",
                  "| model | mode | target | subset | init | " + " | ".join(c[0] for c in COLUMNS) + " |",
                  "|---|---|---|---|---|" + "---:|" * len(COLUMNS)]
        for row in rows:
            trial = f" · seed {row['seed']}, {row['train_images']} train img" if "train_images" in row else ""
            head = f"| {row['model']} | {row['mode']} | {row['target']} | {row['subset']} | {row['init']}{trial} |"
            if row["status"] != "ok":
                lines.append(head + f" skipped: {row['reason']} |" + " |" * (len(COLUMNS) - 1))
                continue
            pooled = row["metrics"][gt_mode]["pooled"]
            lines.append(head + "".join(f" {100 * pooled[t][k]:.1f} |" for _, t, k in COLUMNS))
        lines.append("")
    lines.append("Scores pooled over images (TP/FP/FN summed per target), AP = TP/(TP+FP+FN) (cellpose-style); "
                 "instances touching the 2-px image frame removed from GT and predictions separately.")
    return "\n".join(lines) + "\n"
