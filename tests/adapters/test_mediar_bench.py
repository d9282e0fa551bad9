"""MEDIAR's paper recipe through the real bench path: fine-tune from both released models, report their ensemble.

The shipped paper profile (zero-shot = ensemble of from_phase1 + from_phase2 with TTA; fine-tuning = one model
per released model, predicted as their ensemble with TTA) shrunk to seconds: mit_b0, the sample's images at
1/8 scale, one 128-px window, 2 one-step epochs. Weights absent (scratch members, zero-shot skipped with the
fetch commands) and present (state dicts in MEDIAR's layout, built from the network and checked against the
layout of MEDIAR's own MEDIARFormer; random values, so their md5 is not the released files' and the rows say so),
and the single-model switch. Before the harness planned ensembles, the fine-tuned rows crashed here
(``ensemble_with needs weights`` in both the train and the predict stage).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_mediar import LAYOUT_SMP033, layout  # MEDIAR's recorded state-dict layout (same folder)

from harness.run import BenchSpec, Runner

pytest.importorskip("segmentation_models_pytorch")
pytest.importorskip("cellpose")

REPO = Path(__file__).resolve().parents[2]
TINY_PARAMS = {"encoder": "mit_b0", "window": 128, "overlap": 0.0, "window_batch": 4, "scale": 0.125, "niter": 20}
TINY_TRAIN = {"epochs": 2, "learning_rate": 1e-3, "batch_size": 1, "crop_size": 64, "crops_per_epoch": 1,
              "augment": False, "amp": False}
MISMATCH = " (md5 mismatch: not the released file)"


def paper_config(tmp_path: Path, **blocks: dict) -> Path:
    """configs/models/mediar.yaml with its paper profile made tiny; `blocks` override top-level blocks."""
    raw = yaml.safe_load((REPO / "configs" / "models" / "mediar.yaml").read_text())
    paper = raw["profiles"]["paper"]
    paper["params"] = {**paper["params"], **TINY_PARAMS}
    paper["train"] = {**paper["train"], **TINY_TRAIN}
    for name, block in blocks.items():
        raw[name] = {**raw[name], **block}
    raw["profiles"] = {"paper": paper}
    path = tmp_path / "mediar_paper_tiny.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def weights_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """from_phase1/from_phase2 saved as MEDIAR saves them (plain state dict of its MEDIARFormer layout, mit_b0)."""
    import torch

    from adapters._upstream.mediar.network import build_network

    cache = tmp_path_factory.mktemp("mediar_weights")
    for seed, name in enumerate(("from_phase1", "from_phase2")):
        torch.manual_seed(seed)
        state = build_network("mit_b0").state_dict()
        assert layout(state) == (LAYOUT_SMP033["mit_b0"][0], LAYOUT_SMP033["mit_b0"][2])
        (cache / "mediar").mkdir(exist_ok=True)
        torch.save(state, cache / "mediar" / f"{name}.pth")  # the cache layout of `c6bench weights fetch`
    return cache


@pytest.fixture
def released_layout_weights(weights_files: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("C6BENCH_WEIGHTS", str(weights_files))
    return weights_files


def rows_of(run: Path) -> list[tuple[str, str, str]]:
    return [(r["mode"], r["status"], r["init"]) for r in json.loads((run / "results.json").read_text())["rows"]]


def models_of(run: Path, mode: str) -> dict:
    return json.loads((run / "predictions" / mode / "cells" / "spec_test.models.json").read_text())


def test_weights_absent_members_train_from_scratch_and_predict_as_an_ensemble(
        tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    run = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "harness", "bench", "--model", "mediar", "--profile", "paper", "--config",
         str(paper_config(tmp_path)), "--data", "sample", "--device", "cpu", "--threads", "1", "--bootstrap", "0",
         "--out", str(run)], capture_output=True, text=True, env={**subprocess_env, "TQDM_DISABLE": "1"}, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (zero, zero_status, _), finetuned = rows_of(run)
    assert (zero, zero_status) == ("zero_shot", "skipped")
    reason = json.loads((run / "results.json").read_text())["rows"][0]["reason"]
    assert "c6bench weights fetch from_phase1" in reason and "c6bench weights fetch from_phase2" in reason
    assert finetuned == ("finetuned", "ok", "scratch (from_phase1 not found) + scratch (from_phase2 not found)")
    plan = json.loads((run / "plan.json").read_text())["stages"]
    assert [s["id"] for s in plan if s["kind"] == "train"] == ["mediar/train/cells/from_phase1",
                                                                "mediar/train/cells/from_phase2"]
    predict = next(s for s in plan if s["id"] == "mediar/predict/finetuned/cells/spec_test")
    assert predict["deps"] == ["mediar/train/cells/from_phase1", "mediar/train/cells/from_phase2"]
    used = models_of(run, "finetuned")
    assert used["ensemble"] is True and [Path(m).parts[:3] for m in used["models"]] == [
        ("checkpoints", "cells", "from_phase1"), ("checkpoints", "cells", "from_phase2")]
    first, second = (json.loads((run / m).with_name("init.json").read_text()) for m in used["models"])
    assert (first["init"], first["weights"]) == ("scratch (from_phase1 not found)", [])
    # member 1 trains with seed + 1: two scratch members are two different networks, not one trained twice
    assert (run / used["models"][0]).read_bytes() != (run / used["models"][1]).read_bytes()
    assert "fine-tuning cells from random init: weights from_phase2 not found" in proc.stderr
    assert "ensemble of 2 networks" in (run / "logs" / "predict__finetuned__cells__spec_test.log").read_text()
    assert json.loads((run / "manifest.json").read_text())["weights"] == []


def test_weights_present_zero_shot_and_finetuned_rows_are_ensembles_of_both(
        tmp_path: Path, released_layout_weights: Path) -> None:
    run = Runner(BenchSpec(model="mediar", profile="paper", config=paper_config(tmp_path), data="sample",
                           device="cpu", threads=1, bootstrap=0, out=tmp_path / "run")).run()
    both = f"pretrained:from_phase1{MISMATCH} + pretrained:from_phase2{MISMATCH}"
    assert rows_of(run) == [("zero_shot", "ok", both), ("finetuned", "ok", both)]
    cache = released_layout_weights / "mediar"
    zero = models_of(run, "zero_shot")
    assert zero["ensemble"] is True
    assert zero["models"] == [str(cache / "from_phase1.pth"), str(cache / "from_phase2.pth")]
    assert [w["verified"] for w in zero["weights"]] == ["mismatch", "mismatch"]
    assert models_of(run, "finetuned")["ensemble"] is True
    manifest = json.loads((run / "manifest.json").read_text())["weights"]
    assert [(w["name"], w["verified"], w["stages"]) for w in manifest] == [
        ("from_phase1", "mismatch", ["mediar/predict/zero_shot/cells/spec_test", "mediar/train/cells/from_phase1"]),
        ("from_phase2", "mismatch", ["mediar/predict/zero_shot/cells/spec_test", "mediar/train/cells/from_phase2"])]
    from harness.digest import sha256_file

    assert manifest[0]["sha256"] == sha256_file(cache / "from_phase1.pth")
    assert "md5 e0ccb052828a9f05e21b2143939583c5 is recorded" in manifest[0]["against"]
    for log in ("predict__zero_shot__cells__spec_test.log", "predict__finetuned__cells__spec_test.log"):
        assert "ensemble of 2 networks" in (run / "logs" / log).read_text()


def test_single_model_switch(tmp_path: Path, released_layout_weights: Path) -> None:
    config = paper_config(tmp_path, finetune={"ensemble": False}, zero_shot={"ensemble": False})
    runner = Runner(BenchSpec(model="mediar", profile="paper", config=config, data="sample", device="cpu",
                              threads=1, bootstrap=0, out=tmp_path / "run", modes=["finetuned"]))
    assert [s.id for s in runner.stages() if s.kind == "train"] == ["mediar/train/cells"]
    assert runner.zero_shot(runner.units[0])[0] == ("from_phase1",)
    run = runner.run()
    assert rows_of(run) == [("finetuned", "ok", f"pretrained:from_phase1{MISMATCH}")]
    used = models_of(run, "finetuned")
    assert used["ensemble"] is False and len(used["models"]) == 1
