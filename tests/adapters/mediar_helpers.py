"""What test_mediar*.py share: MEDIAR's recorded state-dict layout, real sample crops as training samples, the
per-test weights cache, and saving the way MEDIAR's main.py saves."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from harness.coco import load_coco
from harness.flatten import flatten
from harness.records import Instance, Sample

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


@pytest.fixture(scope="module")
def train_sample(sample_dir: Path) -> Sample:
    samples, _ = load_coco(sample_dir / "spec" / "train" / "annotations.coco.json")
    return samples[0]


def crop_sample(sample: Sample, window: tuple[slice, slice], out: Path) -> Sample:
    """A real sub-image with its annotations clipped to the window (instances as mask crops)."""
    import tifffile

    ys, xs = window
    height, width = ys.stop - ys.start, xs.stop - xs.start
    out.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(out, sample.load_image()[window])
    instances = []
    for inst in sample.instances:
        y0, x0, y1, x1 = inst.bbox
        top, left, bottom, right = max(y0, ys.start), max(x0, xs.start), min(y1, ys.stop), min(x1, xs.stop)
        if bottom > top and right > left and (crop := inst.crop[top - y0 : bottom - y0, left - x0 : right - x0]).any():
            instances.append(Instance.from_mask("cells", top - ys.start, left - xs.start, crop, height, width,
                                                order=len(instances)))
    sample = Sample(image_path=out, height=height, width=width, instances=tuple(instances), file_name=out.name)
    return flatten([sample], "last", 10, out.name)[0]  # as the harness hands training samples (needs_label_maps)


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
