"""Reading finished run directories: ``results.json`` → `ResultRow`s, ``per_image.csv`` counts, run labels.

The schema is `harness.results` (what the bench writes, read back by the same names); errors name the file
and the row.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.results import ResultRow, gt_mode, parse_rows

logger = logging.getLogger(__name__)


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
    rows = parse_rows(results, run_dir / "results.json", run=run_dir.name)
    per_image = parse_per_image(run_dir / "per_image.csv") if (run_dir / "per_image.csv").is_file() else {}
    model = rows[0].model if rows else run_label(run_dir)
    return Run(path=run_dir, model=model, config=config or {}, manifest=manifest or {}, rows=rows,
               per_image=per_image)


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
        for line, row in enumerate(reader, start=2):
            if float(row["threshold"]) != 0.5 or row.get("trial"):
                continue  # a --seeds/--train-images trial: compared on matched seeds (harness.efficiency_report)
            try:
                mode = gt_mode(row["gt_mode"])
            except DataError as exc:
                raise DataError(f"{path}: line {line}: {exc}") from None
            key = (row["mode"], row["target"], row["subset"], mode)
            out.setdefault(key, {})[row["image"]] = (int(row["tp"]), int(row["fp"]), int(row["fn"]))
    return out


def run_label(run_dir: Path) -> str:
    """Model name of a run: the manifest's/config's ``model``, else the ``<time>_<model>`` folder suffix."""

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
