"""Training samples of a label-map model: overlaps flattened once, by the harness, then painted as label maps.

Models with ``needs_label_maps`` (CellPose, MEDIAR, CellSeg1, ...) train on non-overlapping label maps. The rule
that settles overlaps (`harness.convert.resolve_priority`: ``last`` / ``first`` / ``smallest``, largest piece,
``min_pixels``) is applied in one place: the runner calls `flatten` on the training and validation samples
(the model config's ``label_maps``) before `train` sees them, and the adapter paints them with `label_image`.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence

import numpy as np

from harness.convert import resolve_priority
from harness.errors import DataError
from harness.records import Sample

logger = logging.getLogger(__name__)


def label_image(sample: Sample) -> np.ndarray:
    """int32 label map of a sample whose instances are disjoint (0 = background, k = the k-th instance).

    What an adapter with ``needs_label_maps`` calls on its training samples, which the harness has flattened
    (`flatten`); overlapping instances here are an error, never settled by a second, silent rule.
    """
    labels = np.zeros((sample.height, sample.width), dtype=np.int32)
    for k, inst in enumerate(sample.instances, start=1):
        y0, x0, y1, x1 = inst.bbox
        window = labels[y0:y1, x0:x1]
        if window[inst.crop].any():
            raise DataError(f"{sample.image_path}: instances {int(window[inst.crop].max())} and {k} overlap; "
                            "flatten the samples first (`flatten`: the harness runs it for needs_label_maps)")
        window[inst.crop] = k
    return labels


def flatten(samples: Sequence[Sample], rule: str, min_pixels: int, what: str) -> list[Sample]:
    """`samples` with their overlaps resolved by `rule` (`resolve_priority`); logs what was dropped, with counts.

    The harness runs it on the training and validation samples of every model with ``needs_label_maps``: the one
    place where such a model's training data is flattened.
    """
    out, n_in, reasons = [], 0, Counter()
    for sample in samples:
        resolution = resolve_priority(sample.instances, sample.height, sample.width, rule, min_pixels)
        out.append(sample.with_instances(resolution.instances))
        n_in += resolution.n_in
        reasons.update(d["reason"].split(":")[0].split(" (")[0] for d in resolution.dropped)
    n_out = sum(len(s.instances) for s in out)
    detail = ", ".join(f"{n} {reason}" for reason, n in sorted(reasons.items()))
    (logger.warning if n_in and n_out < n_in / 2 else logger.info)(
        "%s: %d image(s), %d instance(s) flattened by rule %s (min_pixels %d): %d kept%s", what, len(out), n_in,
        rule, min_pixels, n_out, f", {n_in - n_out} dropped ({detail})" if n_in > n_out else "")
    return out
