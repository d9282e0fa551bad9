"""What scoring drops is counted out loud: most of a target's GT dropped is a warning with the counts, all of
it an error; predictions mostly dropped, a warning."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from harness.errors import DataError
from harness.evaluate import evaluate
from harness.records import Instance, Sample

H = W = 64


def _box(y0: int, x0: int, y1: int, x1: int) -> Instance:
    crop = np.ones((y1 - y0, x1 - x0), dtype=bool)
    return Instance.from_mask("c", y0, x0, crop, H, W)


def _sample(*instances: Instance) -> Sample:
    return Sample(Path("a.tif"), H, W, tuple(instances), image_id=1, file_name="a.tif")


def test_most_ground_truth_on_the_frame_is_a_warning_with_counts(caplog: pytest.LogCaptureFixture) -> None:
    gt = _sample(_box(0, 0, 10, 10), _box(0, 30, 10, 40), _box(20, 20, 30, 30))  # two touch the frame
    with caplog.at_level(logging.WARNING, logger="harness.drops"):
        ev = evaluate([gt], [_sample(_box(20, 20, 30, 30))], {"c": ["c"]})
    assert ev.targets["c"].pooled[0].tp == 1
    assert ("target c: 2 of 3 ground-truth instances dropped before matching (2 touch the 2-px frame); scores "
            "rest on the 1 left") in caplog.text


def test_all_ground_truth_dropped_is_an_error() -> None:
    gt = _sample(_box(0, 0, 10, 10), _box(54, 54, 64, 64))
    with pytest.raises(DataError, match=r"target c: all 2 ground-truth instances of 1 image\(s\) were dropped before "
                                        r"matching \(2 touch the 2-px frame\)"):
        evaluate([gt], [_sample()], {"c": ["c"]})


def test_predictions_mostly_dropped_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    gt = _sample(_box(20, 20, 30, 30))
    pred = _sample(_box(0, 0, 5, 5), _box(59, 59, 64, 64), _box(20, 20, 30, 30))
    with caplog.at_level(logging.WARNING, logger="harness.drops"):
        evaluate([gt], [pred], {"c": ["c"]})
    assert "target c: 2 of 3 predicted instances dropped before matching (2 touch the 2-px frame)" in caplog.text


def test_crowd_ground_truth_is_not_a_false_negative() -> None:
    from dataclasses import replace

    crowd = replace(_box(30, 30, 60, 60), iscrowd=True)
    ev = evaluate([_sample(_box(5, 5, 15, 15), crowd)], [_sample(_box(5, 5, 15, 15))], {"c": ["c"]})
    counts = ev.targets["c"].pooled[0]
    assert (counts.tp, counts.fp, counts.fn) == (1, 0, 0)
    assert ev.to_dict()["targets"]["c"]["n_gt_crowd"] == 1
