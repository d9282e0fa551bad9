"""Cellpose's scale comes from the file by one rule, on every device; zero-shot rows run at a recorded diameter.

Files are CPnet networks saved by cellpose itself (``resnet_torch.CPnet(...).save_model``), with and without the
``diam_labels`` entry (older files lack it). cellpose 3.1.1.3 alone gives a file without ``diam_labels`` 30 px on
CPU whatever its ``diam_mean`` (``CPnet.load_model`` re-initialises the net with ``diam_mean`` in the
``max_pool`` slot) and the built diameter on GPU; the adapter settles both to the file's values, else diam_mean.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("cellpose")
torch = pytest.importorskip("torch")


@pytest.fixture(autouse=True)
def own_weights_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("C6BENCH_WEIGHTS", str(tmp_path / "weights"))
    torch.manual_seed(0)
    return tmp_path / "weights"


def cpnet_file(path: Path, diam_mean: float = 30.0, diam_labels: float | None = None, keep: bool = True) -> Path:
    """A cellpose 3 network saved by cellpose (`save_model`); `keep=False` drops diam_labels from the file."""
    from cellpose.resnet_torch import CPnet

    net = CPnet(nbase=[2, 32, 64, 128, 256], nout=3, sz=3, mkldnn=False, max_pool=True, diam_mean=diam_mean)
    if diam_labels is not None:
        net.diam_labels.data.fill_(diam_labels)
    path.parent.mkdir(parents=True, exist_ok=True)
    net.save_model(str(path))
    if not keep:
        state = torch.load(path, weights_only=True)
        del state["diam_labels"]
        torch.save(state, path)
    return path


def diameters(adapter) -> tuple[float, float, float, float]:
    model = adapter.model()
    return (float(model.diam_mean), float(model.diam_labels), float(model.net.diam_mean),
            float(model.net.diam_labels))


@pytest.mark.parametrize(("diam_mean", "labels", "keep", "expected"), [
    (30.0, None, True, (30.0, 30.0)),    # save_model writes diam_labels = diam_mean
    (30.0, 45.5, True, (30.0, 45.5)),    # a fine-tuned file: its mean training diameter
    (30.0, None, False, (30.0, 30.0)),   # no diam_labels: diam_mean
    (17.0, None, False, (17.0, 17.0)),   # cellpose alone: diam_labels 30 on CPU → rescale 17/30
    (17.0, 25.0, True, (17.0, 25.0)),
])
def test_a_file_sets_the_scale_by_one_rule(tmp_path: Path, diam_mean, labels, keep, expected) -> None:
    from adapters.cellpose import CellposeAdapter

    path = cpnet_file(tmp_path / "net" / "model", diam_mean, labels, keep)
    adapter = CellposeAdapter(weights=str(path))
    mean, lab = expected
    assert diameters(adapter) == (mean, lab, mean, lab)
    assert adapter.prediction_diameter() == lab
    assert adapter.run_note == f" (diameter {lab:g} px)"  # appended to a zero-shot row's init
    assert CellposeAdapter(weights=str(path), diameter=30.0).prediction_diameter() == 30.0


def test_nuclei_file_without_diameter_keys_is_17_px_in_model_and_net(own_weights_cache: Path) -> None:
    """cellpose alone on CPU: model.diam_mean 17 (by the file name) but net.diam_mean and diam_labels 30, so
    eval rescaled by 17/30 and train_seg rescaled training cells to 30 px."""
    from adapters.cellpose import CellposeAdapter
    from harness import weights

    path = cpnet_file(weights.path_of("nuclei"), 17.0)
    state = {k: v for k, v in torch.load(path, weights_only=True).items() if not k.startswith("diam_")}
    torch.save(state, path)
    assert diameters(CellposeAdapter(weights="nuclei")) == (17.0, 17.0, 17.0, 17.0)


def test_prediction_passes_the_diameter_to_cellpose(tmp_path: Path, monkeypatch) -> None:
    import numpy as np

    from adapters.cellpose import CellposeAdapter

    adapter = CellposeAdapter(weights=str(cpnet_file(tmp_path / "m", 17.0, keep=False)))
    seen = {}

    def fake_eval(image, **kwargs):
        seen.update(kwargs)
        return np.zeros(image.shape, np.uint16), [None, None, np.zeros(image.shape, np.float32)], None

    monkeypatch.setattr(adapter.model(), "eval", fake_eval)
    assert adapter.predict(np.zeros((32, 32), np.uint16)) == []
    assert seen["diameter"] == 17.0  # rescale diam_mean / diameter = 1: no silent 17/30


@pytest.mark.gpu
def test_the_scale_is_the_same_on_cuda(tmp_path: Path) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    from adapters.cellpose import CellposeAdapter

    for keep in (True, False):
        path = cpnet_file(tmp_path / f"m{keep}", 17.0, None if keep else None, keep)
        assert diameters(CellposeAdapter(weights=str(path), device="cuda")) == \
            diameters(CellposeAdapter(weights=str(path), device="cpu"))


def test_paper_profile_and_zero_shot_config() -> None:
    from harness.config import load_model_config

    paper = load_model_config("cellpose", "paper")
    assert paper.train["min_train_masks"] == 5  # train_seg's default, as upstream
    assert paper.zero_shot_params == {"diameter": 30.0}


def test_zero_shot_rows_record_their_diameter(own_weights_cache: Path, tmp_path: Path) -> None:
    """cyto3 and nuclei files in the cache, the shipped config, the Glioma-layout mini dataset: every zero-shot
    row says what ran — the config's 30 px, not the cyto3 file's diam_labels (41) nor nuclei's 17."""
    from harness import weights
    from harness.run import BenchSpec, Runner

    cpnet_file(weights.path_of("cyto3"), 30.0, 41.0)
    cpnet_file(weights.path_of("nuclei"), 17.0)
    torch.set_num_threads(1)
    mini = Path(__file__).resolve().parents[1] / "fixtures" / "glioma_mini"
    Runner(BenchSpec(model="cellpose", data=str(mini), out=tmp_path / "r", modes=["zero_shot"], device="cpu",
                     targets=["cells", "soma"], bootstrap=0, threads=1)).run()
    rows = json.loads((tmp_path / "r" / "results.json").read_text())["rows"]
    inits = {(r["target"], r["subset"], r["status"], r["init"]) for r in rows}
    assert inits == {("cells", "spec/test", "ok", "pretrained:cyto3 (diameter 30 px)"),
                     ("cells", "gen/test", "ok", "pretrained:cyto3 (diameter 30 px)"),
                     ("soma", "spec/test", "ok", "pretrained:nuclei (diameter 30 px)")}
    assert "pretrained:nuclei (diameter 30 px)" in (tmp_path / "r" / "results.md").read_text()
