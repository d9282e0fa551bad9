"""The results schema: skip reasons in results.md cells are short; results.json keeps the full reason."""

from __future__ import annotations

from harness.results import SCORES, ResultRow, results_markdown, short_reason

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
