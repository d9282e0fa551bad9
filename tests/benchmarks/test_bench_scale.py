"""The scale scenario of `make perf` (benchmarks/bench_scale.py) on the small replica: every step of the
user's data path runs through the real CLI and every count equals the generator's (never the timings: speed
is not a test)."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import bench_scale


def test_scale_scenario_small_counts_match(tmp_path: Path) -> None:
    result = bench_scale.scenario(tmp_path / "work", seed=2, train=False)  # training: the test below
    assert result["mismatches"] == [] and result["counts_match"] is True
    assert (result["scale"], result["image"], result["images"]) == ("small", "1296x972", 17)
    assert list(result["steps"]) == [
        "replica", "fetch", "validate", "labelmaps_spec_train", "labelmaps_spec_valid", "labelmaps_spec_test",
        "labelmaps_gen_test", "yolo", "evaluate_spec_test", "evaluate_gen_test",
    ]
    for step in result["steps"].values():
        assert step["wall_s"] > 0 and step["cpu_s"] > 0 and step["peak_rss_mb"] > 0
    assert set(result["disk_mb"]) == {"zip", "dataset", "labelmaps", "yolo"}


def test_mismatch_is_listed() -> None:
    found: list[str] = []
    bench_scale._check(found, "yolo spec/test", {"0": 91}, {"0": 92})
    bench_scale._check(found, "same", 3, 3)
    assert found == ["yolo spec/test: got {'0': 91}, the generator says {'0': 92}"]


@pytest.mark.slow
def test_scale_scenario_full_counts_match(tmp_path: Path) -> None:
    """The published scale: 75 images of 2592x1944, 19,861 polygons (about 4 min on 2 cores)."""
    result = bench_scale.scenario(tmp_path / "work", full=True)
    assert result["mismatches"] == []
    assert (result["image"], result["images"], result["instances"]) == ("2592x1944", 75, 19861)


def test_classical_bench_cold_then_warm_cache(tmp_path: Path) -> None:
    """The training step: the real classical bench twice on the mini Glioma C6 tree, an empty cache then the
    filled one; every row ok, the same scores, and the second run adds nothing to the cache."""
    from benchmarks import scale_training

    data = Path(__file__).resolve().parents[1] / "fixtures" / "glioma_mini"
    env = dict(bench_scale.os.environ, PYTHONPATH=str(bench_scale.REPO))
    logs = tmp_path / "logs"
    logs.mkdir()
    steps, problems = scale_training.classical_bench(data, tmp_path, env, bench_scale._step, logs)
    assert problems == []
    assert list(steps) == ["bench_classical_cold", "bench_classical_warm"]
    assert steps["bench_classical_cold"]["rows"] == steps["bench_classical_warm"]["rows"] == 10
    cached = sorted(p.name for p in (tmp_path / "cache" / "derived" / "classical-labels").rglob("*.npz"))
    assert cached, "the cold run filled the cache"
    assert sorted(p.name for p in (tmp_path / "cache" / "derived" / "classical-labels").rglob("*.npz")) == cached


def test_cellpose_training_cold_then_warm_cache(tmp_path: Path) -> None:
    """The cellpose step: one target's quick training (2 epochs) on the mini Glioma C6 tree, an empty cache then
    the filled one; the cold run computes every flow target, the warm one reads every one back."""
    pytest.importorskip("cellpose")
    from benchmarks import scale_training

    data = Path(__file__).resolve().parents[1] / "fixtures" / "glioma_mini"
    env = dict(bench_scale.os.environ, PYTHONPATH=str(bench_scale.REPO), OMP_NUM_THREADS="1")
    logs = tmp_path / "logs"
    logs.mkdir()
    steps, problems = scale_training.cellpose_training(data, tmp_path, env, bench_scale._step, logs,
                                                       targets=("cells",))
    assert problems == []
    assert list(steps) == ["cellpose_cells_cold", "cellpose_cells_warm"]
    cold, warm = steps["cellpose_cells_cold"], steps["cellpose_cells_warm"]
    assert (cold["images"], cold["validation_images"], cold["epochs"]) == (2, 1, 2)
    assert (cold["cached"], warm["cached"]) == (0, 3)
    for step in (cold, warm):  # timings are recorded, not tested: 3 tiny flow targets round to 0.0 s
        assert step["peak_rss_mb"] > 0 and step["epoch_s"] > 0 and step["flows_s"] >= 0
    flows = sorted(p.name for p in (tmp_path / "cache-cellpose" / "derived" / "cellpose-flows").rglob("*.npy"))
    assert len(flows) == 3  # one per label map (2 train + 1 validation), none added by the warm run
