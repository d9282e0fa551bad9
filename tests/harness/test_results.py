"""The results schema: skip reasons in results.md cells are short; results.json keeps the full reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.errors import DataError
from harness.results import (
    SCORES,
    ResultRow,
    parse_rows,
    results_markdown,
    short_reason,
    table_markdown,
    table_rows,
)

REASON = ("weights cyto3 not found at /root/.cache/glioma-c6-bench/cyto3 — run `c6bench weights fetch cyto3` "
          "(or place cyto3 from https://www.cellpose.org/models/cyto3 there)")


def test_short_reason_drops_paths_and_urls_but_keeps_the_command() -> None:
    assert short_reason(REASON) == ("weights cyto3 not found at …/cyto3 — run `c6bench weights fetch cyto3` "
                                    "(or place cyto3 from www.cellpose.org there)")
    plain = "the quick profile builds mit_b0; run --profile paper for the zero-shot row (spec/test)"
    assert short_reason(plain) == plain  # relative names are not paths


def test_results_md_cell_is_short() -> None:
    row = ResultRow(model="cellpose", mode="zero_shot", target="cells", subset="spec/test", status="skipped",
                    reason=REASON, init="pretrained:cyto3")
    lines = [line for line in results_markdown([row]).splitlines() if line.startswith("| cellpose")]
    assert lines == [f"| cellpose | zero_shot | cells | spec/test | pretrained:cyto3 | skipped: {short_reason(REASON)} |"
                     + " |" * (len(SCORES) - 1)] * 2  # Table 2 and Table 4
    assert "/root/" not in "\n".join(lines) and "https://" not in "\n".join(lines)


def _ok_row() -> ResultRow:
    pooled = {t: {"precision": 0.5, "recall": 0.25, "f1": 1 / 3, "ap": 0.2,
                  "ci": {"precision": [0.4, 0.6], "f1": [0.3, 0.35]}} for t in ("0.5", "0.75", "0.9")}
    return ResultRow(model="m", mode="finetuned", target="cells", subset="spec/test", status="ok", init="scratch",
                     profile="quick", n_images=2, seed=1, train_images=2,
                     metrics={"overlap": {"pooled": pooled}, "resolved": {"pooled": pooled}})


def test_a_row_is_read_back_as_it_was_written() -> None:
    row = _ok_row()
    written = row.to_dict()
    assert list(written) == ["model", "mode", "target", "subset", "status", "reason", "init", "profile",
                             "rehearsal", "n_images", "seed", "train_images", "metrics"]
    assert ResultRow.from_dict(written, "x") == row
    assert "seed" not in ResultRow(model="m", mode="zero_shot", target="cells", subset="spec/test",
                                   status="skipped").to_dict()  # trial keys only in a trial's row
    assert row.scores["overlap"]["F1@0.5"] == 1 / 3 and row.ci["overlap"]["P@0.5"] == (0.4, 0.6)
    broken = {**written, "metrics": {"overlap": {"pooled": {"0.5": {"f1": 0.1}}}}}
    with pytest.raises(DataError, match=r"^results.json: row 3: overlap: no pooled 'precision' at IoU 0.5"):
        parse_rows({"rows": [written] * 3 + [broken]}, Path("results.json"))
    with pytest.raises(DataError, match=r"^results.json: row 0: missing key\(s\) status"):
        parse_rows({"rows": [{k: v for k, v in written.items() if k != "status"}]}, Path("results.json"))


def test_results_md_and_the_report_render_a_row_alike() -> None:
    """One renderer: results.md (no intervals, right-aligned) and the report's table show the same cells."""
    row = _ok_row()
    init = "scratch · seed 1, 2 train img"
    run_md = results_markdown([row]).splitlines()
    assert run_md[2:5] == ["| model | mode | target | subset | init | " + " | ".join(c for c, _, _ in SCORES) + " |",
                           "|---|---|---|---|---|" + "---:|" * 6,
                           f"| m | finetuned | cells | spec/test | {init} | 50.0 | 25.0 | 33.3 | 20.0 | 20.0 | 20.0 |"]
    report = table_markdown(table_rows([row], "overlap"), "overlap", []).splitlines()
    assert f"| m | finetuned | {init} | quick | cells | spec/test | 2 | 50.0 [40.0, 60.0] | 25.0 | " \
           "33.3 [30.0, 35.0] | 20.0 | 20.0 | 20.0 |" in report
