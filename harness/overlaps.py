"""Overlapping annotations counted the ways a user reads them: per category, per target, between categories.

Glioma C6's overlaps are of two kinds: neighbouring cells that overlap (what a model must separate; per
target: cell–cell pairs within ``cells``, type A–type B among them) and each soma inside its cell (by design;
these dominate the count over all categories). Every overlapping pair of an image is found once
(`harness.convert.overlapping_pairs`, bounding-box prefilter + crop AND) and then counted under each heading.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.records import Instance

logger = logging.getLogger(__name__)

PAIR_SEPARATOR = " / "  # key of a pair of categories in the report: "cell type A / cell type B"


def pair_key(a: str, b: str) -> str:
    """``"a / b"`` with the two names sorted (one key per unordered pair of categories)."""
    return PAIR_SEPARATOR.join(sorted((a, b)))


@dataclass
class OverlapCounts:
    """Overlapping pairs summed over images: in all, within a category, between two categories, per target."""

    targets: Mapping[str, Sequence[str]] = field(default_factory=dict)
    all: int = 0
    within: Counter[str] = field(default_factory=Counter)
    between: Counter[str] = field(default_factory=Counter)
    target_pairs: Counter[str] = field(default_factory=Counter)
    target_across: Counter[str] = field(default_factory=Counter)  # pairs of a target whose categories differ
    target_instances: Counter[str] = field(default_factory=Counter)

    def add(self, instances: Sequence[Instance]) -> list[tuple[int, int]]:
        """Count one image's overlaps; returns its pairs ``(i, j)`` (indices into `instances`)."""
        from harness.convert import overlapping_pairs

        pairs = overlapping_pairs(instances)
        self.all += len(pairs)
        for target, cats in self.targets.items():
            self.target_instances[target] += sum(i.category in cats for i in instances)
        for i, j in pairs:
            a, b = instances[i].category, instances[j].category
            if a == b:
                self.within[a] += 1
            else:
                self.between[pair_key(a, b)] += 1
            for target, cats in self.targets.items():
                if a in cats and b in cats:
                    self.target_pairs[target] += 1
                    self.target_across[target] += a != b
        return pairs

    def targets_dict(self) -> dict[str, Any]:
        """Per target: instances, overlapping pairs, and how many of those pair two different categories."""
        return {
            t: {"categories": list(cats), "instances": int(self.target_instances[t]),
                "overlapping_pairs": int(self.target_pairs[t]),
                "across_categories": int(self.target_across[t])}
            for t, cats in self.targets.items()
        }
