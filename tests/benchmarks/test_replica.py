"""The synthetic Glioma C6 replica (benchmarks/replica.py): the harness's counts equal the generator's, exactly.

The small replica (972 x 1296 px, 17 images) runs in the default tier; the full one (75 images of 2592 x 1944,
~20,000 polygons) is `slow`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import replica
from harness import dataset as ds
from harness.evaluate import evaluate


def _check_against_harness(out: Path, expected: dict) -> None:
    cfg = ds.resolve_data(out)
    report = ds.validate(cfg)
    assert report["problems"] == 0 and report["warnings"] == 0
    for ref, want in expected["splits"].items():
        got = report["splits"][ref]
        assert got["images"] == want["images"]
        assert {c: v["instances"] for c, v in got["categories"].items()} == want["instances"]
        assert {c: v["overlapping_pairs"] for c, v in got["categories"].items()} == want["overlapping_pairs"]
        assert got["overlapping_pairs"] == want["overlapping_pairs_all"]
        samples = ds.load_split(cfg, ref)
        targets = {t: list(cats) for t, cats in cfg.targets_of(ref).items()}
        scores = evaluate(samples, samples, targets, thresholds=(0.5, 0.9))
        for target, result in scores.targets.items():
            cats = cfg.targets_of(ref)[target]
            kept = want["target_instances"][target] - sum(want["touching_frame"][c] for c in cats)
            # GT against itself: every instance off the 2-px frame is a TP at both thresholds, nothing else counts
            assert [(c.tp, c.fp, c.fn) for c in result.pooled] == [(kept, 0, 0), (kept, 0, 0)], (ref, target)


def test_small_replica_counts_are_the_harness_counts(tmp_path: Path) -> None:
    expected = replica.generate(tmp_path, replica.SMALL, seed=3)
    assert json.loads((tmp_path / "expected.json").read_text()) == expected
    train = expected["splits"]["spec/train"]
    # the statistics scale with the published ones: 7 train images of a quarter of the area
    assert train["images"] == 7 and sum(train["instances"][c] for c in ("cell type A", "cell type B")) == 314
    assert train["target_pairs"]["cells"] > train["overlapping_pairs"]["cell type A"] > 0  # A-B pairs exist too
    assert expected["splits"]["gen/test"]["touching_frame"] == {"cell": 14}  # 2 border cells per image
    _check_against_harness(tmp_path, expected)


def test_replica_is_seeded(tmp_path: Path) -> None:
    a = replica.generate(tmp_path / "a", replica.SMALL.scaled(1, 7), seed=1)
    b = replica.generate(tmp_path / "b", replica.SMALL.scaled(1, 7), seed=1)
    assert a == b
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert [(tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files] == [True] * len(files)


def test_rgb_replica_reads_as_rgb(tmp_path: Path) -> None:
    replica.generate(tmp_path, replica.SMALL.scaled(1, 7), seed=0, rgb=True)
    sample = ds.load_split(ds.resolve_data(tmp_path), "spec/train")[0]
    assert sample.load_image().shape == (972, 1296, 3)


@pytest.mark.slow
def test_full_replica_counts_are_the_harness_counts(tmp_path: Path) -> None:
    expected = replica.generate(tmp_path, replica.FULL, seed=0)
    cells = {ref: sum(v for c, v in s["instances"].items() if c != "soma") for ref, s in expected["splits"].items()}
    assert cells == {"spec/train": 5387, "spec/valid": 738, "spec/test": 2035, "gen/test": 3868}
    assert sum(s["instances"].get("soma", 0) for s in expected["splits"].values()) == 7833
    _check_against_harness(tmp_path, expected)
