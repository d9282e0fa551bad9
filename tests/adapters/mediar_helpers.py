"""What test_mediar*.py share: MEDIAR's recorded state-dict layout, real sample crops as training samples, the
per-test weights cache, and saving the way MEDIAR's main.py saves."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from harness.flatten import flatten
from harness.records import Instance, Sample
from sample_windows import crop_sample as window_sample
from sample_windows import train_sample  # noqa: F401 (a fixture, imported again by the test files)

pytest.importorskip("segmentation_models_pytorch")
pytest.importorskip("cellpose")

ENCODER = "mit_b0"
# sha256 of "key:shape" lines (state-dict order) of MEDIAR's MEDIARFormer built with segmentation-models-pytorch 0.3.3
# (the version MEDIAR pins; installed aside for the purpose) — the layout of MEDIAR's released checkpoints (mit_b5).
LAYOUT_SMP033 = {
    "mit_b0": (322, 33_824_163, "ab515a2001814d3a568be021e8604bcde797a9f6722515577ea56d9edd10988b"),
    "mit_b5": (1198, 121_303_587, "b7cfcad77b9757aaad1e99e9073a67572c143218cae88510b34ba3a8fc7f140d"),
}
TRAIN_CROP = (slice(200, 328), slice(300, 428))  # 128 x 128 of set18: several whole and cut cells
SMALL = dict(encoder=ENCODER, window=64, overlap=0.5, window_batch=4)


@pytest.fixture(autouse=True)
def own_weights_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A weights cache per test, a fixed seed and one thread (2 shared cores; also keeps results reproducible)."""
    import torch

    monkeypatch.setenv("C6BENCH_WEIGHTS", str(tmp_path / "weights"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield tmp_path / "weights"
    torch.set_num_threads(threads)


def crop_sample(sample: Sample, window: tuple[slice, slice], out: Path) -> Sample:
    """`sample_windows.crop_sample`, flattened as the harness hands training samples (needs_label_maps)."""
    return flatten([window_sample(sample, window, out)], "last", 10, out.name)[0]


def layout(state: dict) -> tuple[int, str]:
    lines = "\n".join(f"{key}:{tuple(value.shape)}" for key, value in state.items())
    return len(state), hashlib.sha256(lines.encode()).hexdigest()


def signature(instances: list[Instance]) -> list[tuple]:
    return sorted((inst.bbox, np.packbits(inst.crop).tobytes(), inst.score) for inst in instances)


def save_like_mediar(net, path: Path) -> Path:
    """MEDIAR's main.py: ``torch.save(trainer.model.state_dict(), model_path)``."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)
    return path


def save_like_mediar_state(state: dict, path: Path) -> Path:
    import torch

    torch.save(state, path)
    return path
