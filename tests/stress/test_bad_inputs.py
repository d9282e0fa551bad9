"""Every case of the bad-input corpus (make_bad_inputs.py) fails the way a user needs: the right error, naming
the file and the item and saying what to do; the few accepted-on-purpose inputs are read as documented."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from make_bad_inputs import CASES, Case  # noqa: E402

sys.path.pop(0)


def test_the_corpus_is_large_and_ids_are_unique() -> None:
    assert len(CASES) >= 20
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", [
    pytest.param(c, marks=pytest.mark.xfail(strict=True, reason=c.known_gap)) if c.known_gap else c for c in CASES
], ids=[c.id for c in CASES])
def test_bad_input(case: Case, tmp_path: Path) -> None:
    paths = case.make(tmp_path)
    if case.error is None:
        result = case.run(paths)
        case.check(result)
        return
    with pytest.raises(Exception) as info:  # noqa: PT011 - the type is checked by name below
        case.run(paths)
    assert type(info.value).__name__ == case.error, f"{type(info.value).__name__}: {info.value}"
    message = str(info.value)
    for fragment in case.expect:
        expected = fragment.format(**{k: str(v) for k, v in paths.items()})
        assert expected in message, f"{expected!r} not in {message!r}"
