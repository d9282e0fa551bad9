"""Real sample windows as adapter training samples: one helper for every adapter test instead of a copy each.

A window of a real phase-contrast image is written to its own TIFF, and its annotations are cut to the window by
the project's own `Instance.cut`. Every instance becomes a ``cells`` instance, numbered in annotation order, the
way a single-target training split reaches an adapter.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.coco import load_coco
from harness.records import Instance, Sample


@pytest.fixture(scope="module")
def train_sample(sample_dir: Path) -> Sample:
    """The sample's first training image, every annotation on it."""
    samples, _ = load_coco(sample_dir / "spec" / "train" / "annotations.coco.json")
    return samples[0]


def crop_sample(sample: Sample, window: tuple[slice, slice], out: Path) -> Sample:
    """A real sub-image, written to `out`, with its annotations clipped to the window (instances as mask crops)."""
    import tifffile

    ys, xs = window
    height, width = ys.stop - ys.start, xs.stop - xs.start
    out.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(out, sample.load_image()[window])
    cuts = [cut for inst in sample.instances if (cut := inst.cut(ys.start, xs.start, height, width)) is not None]
    instances = tuple(Instance.from_mask("cells", cut.bbox[0], cut.bbox[1], cut.crop, height, width, order=k)
                      for k, cut in enumerate(cuts))
    return Sample(image_path=out, height=height, width=width, instances=instances, file_name=out.name)
