"""`c6bench perf`: the JSON structure and the printed table (never the timings: speed is not a test)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.commands.perf import format_table, table_rows

REPO = Path(__file__).resolve().parents[2]


def test_perf_quick_convert_writes_json_and_prints_table(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    out = tmp_path / "perf.json"
    proc = subprocess.run(
        [sys.executable, "-m", "harness", "perf", "--quick", "--only", "convert", "--out", str(out)],
        cwd=REPO, env=subprocess_env, capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    assert set(data) == {"machine", "time", "wall_s", "convert"}
    convert = data["convert"]
    assert convert["image"] == "2592x1944"
    assert convert["polygons"] == 270
    assert convert["repeats"] == 1
    for key in ("label_map_s", "polygons_per_s", "rle_decode_ours_ms_per_instance", "_wall_s"):
        assert isinstance(convert[key], float) and convert[key] > 0
    assert not out.with_name("perf.json.tmp").exists()

    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["area", "figure", "value"]
    assert set(lines[1].replace(" ", "")) == {"-"}
    rows = {tuple(line.split(None, 2)) for line in lines[2:-1]}
    assert ("convert", "image", "2592x1944") in rows
    assert ("convert", "polygons", "270") in rows
    assert ("convert", "meets_goal_single_core", json.dumps(convert["meets_goal_single_core"])) in rows
    assert len(rows) == len(convert)  # every convert figure is a scalar: one row each
    assert lines[-1] == f"wrote {out} ({data['wall_s']} s)"


def test_table_flattens_nested_figures_and_leaves_long_notes_to_the_json() -> None:
    results = {
        "machine": {"python": "3.11"},
        "time": "2026-01-01T00:00:00",
        "wall_s": 3.5,
        "adapters": {"cellpose": {"ratio": 1.005, "instances_adapter": 0, "note": "x" * 200},
                     "yolo11": {"error": "ImportError: no"}},
        "bench": {"f1@0.5": {"zero_shot/cells": 0.14}, "rows": [1, 2], "ok": True, "missing": None},
    }
    assert table_rows(results) == [
        ("adapters", "cellpose.ratio", "1.005"),
        ("adapters", "cellpose.instances_adapter", "0"),
        ("adapters", "yolo11.error", "ImportError: no"),
        ("bench", "f1@0.5.zero_shot/cells", "0.14"),
        ("bench", "rows", "[1, 2]"),
        ("bench", "ok", "true"),
        ("bench", "missing", "null"),
    ]
    table = format_table(results).splitlines()
    assert table[0] == "area      figure                      value"
    assert table[2] == "adapters  cellpose.ratio              1.005"
    assert len(table) == 2 + 7


def test_unknown_area_is_a_config_error(tmp_path: Path) -> None:
    from harness.commands import perf
    from harness.errors import ConfigError

    args = type("Args", (), {"only": ["nosuch"], "quick": True, "out": tmp_path / "p.json"})()
    with pytest.raises(ConfigError, match=r"no benchmark named \['nosuch'\].*'convert'"):
        perf.run(args)
    assert not (tmp_path / "p.json").exists()


def test_every_registered_model_has_a_perf_entry() -> None:
    """`make perf` iterates the registry: a model without a comparison gets a row with the reason, not no row."""
    import adapters
    from harness.commands.perf import _load

    planned = _load(REPO / "benchmarks" / "bench_adapters.py").planned()
    assert list(planned) == adapters.names()
    assert {n for n, v in planned.items() if callable(v)} == {"classical", "cellpose", "yolo11", "mediar", "cellseg1"}
    assert planned["cellpose_sam"].startswith("runs in its own environment (cellpose==4.2.1.1)")
