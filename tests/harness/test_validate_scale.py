"""`c6bench data validate` counts overlaps per target (issue 19 item 9): cell–cell pairs within `cells`, type
A–type B pairs among them, apart from the soma-in-cell pairs that dominate the count over all categories.
Exact numbers from the seeded small replica, whose generator knows every pair by construction."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from benchmarks import replica

REPO = Path(__file__).resolve().parents[2]


def test_validate_overlaps_per_target(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    expected = replica.generate(tmp_path / "r", replica.SMALL, seed=7)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness",
            "data",
            "validate",
            "--data",
            str(tmp_path / "r"),
            "--no-images",
            "--json",
            str(tmp_path / "report.json"),
        ],
        capture_output=True,
        text=True,
        env=subprocess_env,
        cwd=REPO,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    for ref, want in expected["splits"].items():
        got = report["splits"][ref]
        assert {t: v["overlapping_pairs"] for t, v in got["targets"].items()} == want["target_pairs"], ref
        assert {t: v["instances"] for t, v in got["targets"].items()} == want["target_instances"], ref
    spec = expected["splits"]["spec/test"]
    pairs = spec["overlapping_pairs"]
    a_b = spec["target_pairs"]["cells"] - pairs["cell type A"] - pairs["cell type B"]
    got = report["splits"]["spec/test"]
    assert got["targets"]["cells"]["across_categories"] == a_b > 0
    assert got["targets"]["type_a"] == {
        "categories": ["cell type A"],
        "instances": spec["instances"]["cell type A"],
        "overlapping_pairs": pairs["cell type A"],
        "across_categories": 0,
    }
    # each soma overlaps exactly its own cell: the soma pairs are as many as the somata
    assert got["category_pairs"] == {
        "cell type A / cell type B": a_b,
        "cell type A / soma": got["category_pairs"]["cell type A / soma"],
        "cell type B / soma": spec["instances"]["soma"] - got["category_pairs"]["cell type A / soma"],
    }
    assert got["overlapping_pairs"] == spec["overlapping_pairs_all"]
    row = next(ln.split() for ln in proc.stdout.splitlines() if ln.startswith("spec/test   cells"))
    assert row == [
        "spec/test",
        "cells",
        str(spec["target_instances"]["cells"]),
        str(spec["target_pairs"]["cells"]),
        str(a_b),
        "(cell",
        "type",
        "A",
        "/",
        "cell",
        "type",
        "B:",
        f"{a_b})",
    ]
    gen = next(ln.split() for ln in proc.stdout.splitlines() if ln.startswith("gen/test    cells"))
    assert gen == [
        "gen/test",
        "cells",
        str(expected["splits"]["gen/test"]["target_instances"]["cells"]),
        str(expected["splits"]["gen/test"]["target_pairs"]["cells"]),
        "0",
    ]
