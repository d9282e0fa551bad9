"""The rehearsal of the paper profile for every registered model, through the real CLI (the test that would have
caught MEDIAR's fine-tuned crash): ``python -m harness bench --model M --profile paper --rehearse --data sample
--device cpu``, zero-shot and fine-tuned, with released-layout weights present (`tests/fixtures/make_weights.py`)
and absent. Every row must be ``ok``, or ``skipped`` with a reason that is true.

Default tier: the paper recipe as shipped for classical; small variants, through a ``--config MODEL=YAML`` overlay
of the paper profile, where the real size cannot run on 2 CPU cores in CI time (`SMALL`: cellpose cyto3 at its real
size with 2 instead of 8 crops per batch; MEDIAR mit_b0 at scale 0.25 with 256-px windows and 2 x 128-px crops;
Cellpose-SAM with the tiny encoder (files and random init; ViT-L takes minutes per image on CPU); CellSeg1 ViT-B at
256 px with a 16 x 16 point grid, one tile per batch, crop layers 0/1 to choose from,
the small SAM when training from scratch, zero-shot through CellSeg1's generator (plain SAM's 1024-px
generator takes ~9 min on CPU: slow tier);
YOLO11n-seg at 512 px). ``slow``: every model at its real size with the
shipped paper config (MEDIAR mit_b5, SAM ViT-B and ViT-H, YOLO11l-seg, cyto3), with weights present (the absent
cases differ from the default tier's only in the init); see `REAL` for the one batch cut to fit CPU memory.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

import adapters
from harness.config import ModelConfig, config_path, load_model_config, profiles_of

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "fixtures"))
import make_weights  # noqa: E402

sys.path.pop(0)

#: Default-tier overlays of the paper profile (params / train / finetune keys replaced), and why.
SMALL: dict[str, dict[str, Any]] = {
    "mediar": {"params": {"encoder": "mit_b0", "scale": 0.25, "window": 256},
               "train": {"batch_size": 2, "crop_size": 128}},
    "cellseg1": {"params": {"variant": "vit_b", "image_size": 256, "points_per_side": 16, "scratch_variant": "small"},
                 "zero_shot": {"weights": "sam_vit_b", "params": {"generator": "cellseg1"}},
                 "finetune": {"init": "sam_vit_b"},
                 "train": {"batch_size": 1, "grad_accumulation": 2, "crop_layers_grid": [0, 1]}},
    "cellpose": {"train": {"batch_size": 2}},
    "cellpose_sam": {"params": {"scratch_encoder": "tiny"}},  # cpsam files: the tiny encoder (make_weights small)
    "yolo11": {"params": {"model_size": "n", "imgsz": 512}, "finetune": {"init": "yolo11n-seg"}},
}
#: ``slow``, real size: the shipped paper config, except batches that do not fit a CPU test machine's memory
#: (MEDIAR mit_b5 at 8 x 512 px needs > 20 GB of fp32 activations; one crop keeps the network and crop size).
REAL: dict[str, dict[str, Any]] = {"mediar": {"train": {"batch_size": 1}}}
#: Real-size variants beyond the shipped paper config: CellSeg1 with the authors' ViT-H (one tile per batch).
REAL_EXTRA: dict[str, dict[str, Any]] = {
    "cellseg1-vit_h": {"model": "cellseg1", "params": {"variant": "vit_h"}, "zero_shot": {"weights": "sam_vit_h"},
                       "finetune": {"init": "sam_vit_h"}, "train": {"batch_size": 1}},
}
#: Known failures fixed elsewhere: (model, mode) -> reason, marked xfail(strict) so they flip the moment the fix lands.
PENDING: dict[tuple[str, str], str] = {}
MODES = ("zero_shot", "finetuned")


def _cases(slow: bool) -> list[Any]:
    out = []
    for model in (m for m in adapters.names() if "paper" in profiles_of(m)):  # paper only where the paper has a row
        cases = ("present", "absent") if adapters.get(model).weights else ("none",)
        for mode in MODES:
            for case in cases:
                marks = [pytest.mark.xfail(strict=True, reason=PENDING[model, mode])] if (model, mode) in PENDING \
                    else []
                out.append(pytest.param(model, mode, case, marks=[*marks, *([pytest.mark.slow] if slow else [])],
                                        id=f"{model}-{mode}-{case}"))
    return out


def overlay(model: str, changes: dict[str, Any], path: Path) -> Path:
    """The shipped model YAML with the paper profile's params/train/finetune/zero_shot keys replaced."""
    raw = yaml.safe_load(config_path(model).read_text())
    paper = raw["profiles"]["paper"]
    for block in ("params", "train", "finetune", "zero_shot"):
        if block in changes:
            paper[block] = {**(paper.get(block) or {}), **changes[block]}
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def weights_needed(model: str, changes: dict[str, Any] | None) -> list[str]:
    """The weights names the paper rehearsal of `model` (with `changes`) reads: zero-shot, ensemble partners, init."""
    with tempfile.TemporaryDirectory() as tmp:
        path = overlay(model, changes, Path(tmp) / f"{model}.yaml") if changes else None
        return make_weights.referenced(load_model_config(model, "paper", path).to_dict())


@pytest.fixture(scope="module")
def small_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Released-layout weights for the default tier (MEDIAR at mit_b0; everything else at its real size)."""
    cache = tmp_path_factory.mktemp("released-weights")
    needed = sorted({n for m in adapters.names() for n in weights_needed(m, SMALL.get(m))})
    if make_weights.side_env_reason():
        needed = [n for n in needed if not n.startswith("from_phase")]
    for name in needed:
        make_weights.build(name, cache, small=True)
    return cache


def rehearse(model: str, mode: str, cache: Path, env: dict[str, str], out: Path,
             config: Path | None = None) -> tuple[subprocess.CompletedProcess, list[dict[str, Any]]]:
    """The real CLI in a subprocess (sockets blocked); returns the process and the rows of results.json."""
    cmd = [sys.executable, "-m", "harness", "bench", "--model", model, "--profile", "paper", "--rehearse",
           "--data", "sample", "--device", "cpu", "--threads", "1", "--bootstrap", "0", "--modes", mode,
           "--out", str(out)] + (["--config", f"{model}={config}"] if config else [])
    done = subprocess.run(cmd, cwd=REPO, env={**env, "C6BENCH_WEIGHTS": str(cache)}, capture_output=True,
                          text=True, timeout=3600)
    results = out / "results.json"
    rows = json.loads(results.read_text())["rows"] if done.returncode == 0 and results.is_file() else []
    return done, rows


def check_rows(cfg: ModelConfig, mode: str, case: str, rows: list[dict[str, Any]], cache: Path) -> None:
    """Every row ok, or skipped with a true reason; inits say what the run started from (each ensemble member)."""
    from harness import weights

    assert rows, "no result rows"
    for row in rows:
        assert row["mode"] == mode and row["rehearsal"] is True and row["profile"] == "paper"
        status, reason, inits = row["status"], row["reason"], row["init"].split(" + ")
        if status == "ok":
            assert row["n_images"] == 1 and row["metrics"]["overlap"]["pooled"]["0.5"]["f1"] is not None
        names, zs_reason = cfg.zero_shot_for(row["target"])
        members = cfg.finetune_members()
        if mode == "zero_shot" and zs_reason:  # no zero-shot weights configured (YOLO): the config's reason
            assert (status, reason) == ("skipped", zs_reason)
        elif mode == "zero_shot" and not names:  # a model without weights (classical)
            assert (status, inits) == ("ok", ["none (no weights)"])
        elif mode == "zero_shot" and case == "present":  # (a digest mismatch note may follow the name)
            assert status == "ok" and len(inits) == len(names)
            assert all(i.startswith(f"pretrained:{n}") for i, n in zip(inits, names, strict=True))
        elif mode == "zero_shot":  # absent: skipped, naming each missing file (truly absent) and the fetch command
            assert status == "skipped"
            for name in names:
                path = cache / weights.spec(name).file
                assert not path.exists() and f"c6bench weights fetch {name}" in reason and str(path) in reason
        elif case == "present":
            assert status == "ok" and len(inits) == len(members)
            assert all(i.startswith(f"pretrained:{m}") for i, m in zip(inits, members, strict=True))
        else:  # fine-tuned, inits absent: every member trained from random init, and says so
            assert (status, inits) == ("ok", [f"scratch ({m} not found)" if m else "scratch" for m in members])


def _run_case(model: str, mode: str, case: str, changes: dict[str, Any] | None, present_cache: Path,
              tmp_path: Path, env: dict[str, str]) -> None:
    if case == "present":
        missing = [n for n in weights_needed(model, changes) if not make_weights.target_path(n, present_cache).exists()]
        if missing:
            pytest.skip(f"released-layout {', '.join(missing)} not built: {make_weights.side_env_reason()}")
    cache = present_cache if case == "present" else tmp_path / "no-weights"
    cache.mkdir(exist_ok=True)
    config = overlay(model, changes, tmp_path / f"{model}.yaml") if changes else None
    done, rows = rehearse(model, mode, cache, env, tmp_path / "run", config)
    assert done.returncode == 0, done.stderr[-4000:]
    check_rows(load_model_config(model, "paper", config), mode, case, rows, cache)


@pytest.mark.parametrize(("model", "mode", "case"), _cases(slow=False))
def test_paper_rehearsal(model: str, mode: str, case: str, small_weights: Path, tmp_path: Path,
                         subprocess_env: dict[str, str]) -> None:
    _run_case(model, mode, case, SMALL.get(model), small_weights, tmp_path, subprocess_env)


# --------------------------------------------------------------------------------------------- slow: real size


@pytest.fixture(scope="module")
def real_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Released-layout weights at their real sizes (mit_b5, ViT-B/H, YOLO11l-seg, cyto3), built once."""
    cache = tmp_path_factory.mktemp("released-weights-real")
    needed = sorted({n for m in adapters.names() for n in weights_needed(m, REAL.get(m))}
                    | {n for c in REAL_EXTRA.values() for n in weights_needed(c["model"], c)})
    if make_weights.side_env_reason():
        needed = [n for n in needed if not n.startswith("from_phase")]
    for name in needed:
        make_weights.build(name, cache, small=False)
    return cache


@pytest.mark.parametrize(("model", "mode", "case"),  # classical runs as shipped in the default tier
                         [p for p in _cases(slow=True) if p.values[0] in SMALL and p.values[2] == "present"])
def test_paper_rehearsal_real_size(model: str, mode: str, case: str, real_weights: Path, tmp_path: Path,
                                   subprocess_env: dict[str, str]) -> None:
    _run_case(model, mode, case, REAL.get(model), real_weights, tmp_path, subprocess_env)


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("variant", sorted(REAL_EXTRA))
def test_paper_rehearsal_real_size_variants(variant: str, mode: str, real_weights: Path, tmp_path: Path,
                                            subprocess_env: dict[str, str]) -> None:
    changes = dict(REAL_EXTRA[variant])
    _run_case(changes["model"], mode, "present", changes, real_weights, tmp_path, subprocess_env)
