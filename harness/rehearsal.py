"""Rehearsals: a profile's real recipe with every schedule cut to N optimiser steps and every split to one image.

``c6bench bench --profile paper --rehearse [N]`` runs the stages, models, tiling, TTA, ensembles and evaluation
of the paper profile exactly as configured, but each training schedule is cut by its adapter
(`Adapter.rehearsal_schedule`: only the adapter knows what one optimiser step is) and every split the bench reads
(train, valid, each evaluated subset) is cut to its first image in annotation-file order. It finishes on a CPU
in minutes per model, so a broken stage shows before a GPU-day is spent.

A rehearsal's numbers mean nothing: its rows carry ``rehearsal: true``, its ``results.md`` opens with a loud
title, its default run dir says ``rehearsal``, its stage keys include the step count (a rehearsal stage is never
reused by a real run or the reverse), and `c6bench report` never puts its rows next to real ones
(`select_runs`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.errors import ConfigError, DataError

if TYPE_CHECKING:
    from harness.config import ModelConfig
    from harness.records import Sample

logger = logging.getLogger(__name__)

#: ``--rehearse`` without a value.
DEFAULT_STEPS = 2
#: Images kept per split.
IMAGES_PER_SPLIT = 1


def check_steps(value: Any, where: str = "--rehearse") -> int:
    """The step count of a rehearsal: an integer >= 1 (checked before any stage runs)."""
    if isinstance(value, bool) or not isinstance(value, int):
        try:
            value = int(str(value), 10)
        except ValueError:
            raise ConfigError(f"{where} {value!r}: the number of optimiser steps must be an integer >= 1") from None
    if value < 1:
        raise ConfigError(f"{where} {value}: the number of optimiser steps must be an integer >= 1")
    return value


def rehearsal_config(model_cfg: ModelConfig, cls: type, steps: int) -> ModelConfig:
    """`model_cfg` with its training schedule cut to `steps` optimiser steps by the adapter, then re-checked."""
    schedule = cls.rehearsal_schedule(dict(model_cfg.train), steps)
    try:
        cls.check_schedule(schedule)
    except ConfigError as exc:
        raise ConfigError(f"{cls.__name__}.rehearsal_schedule returned an invalid schedule: {exc}") from exc
    logger.info("rehearsal of %s (profile %s): schedule %s → %s", model_cfg.model, model_cfg.profile,
                model_cfg.train, schedule)
    return dataclasses.replace(model_cfg, train=schedule)


def first_images(samples: Sequence[Sample], ref: str) -> list[Sample]:
    """The first image of a split (annotation-file order), logged with what was left out."""
    if not samples:
        raise DataError(f"split {ref} has no image; a rehearsal needs at least one per split")
    kept = list(samples[:IMAGES_PER_SPLIT])
    logger.info("rehearsal: split %s cut to its first image %s (%d of %d left out)", ref,
                ", ".join(s.file_name for s in kept), len(samples) - len(kept), len(samples))
    return kept


def summary(steps: int | None) -> dict[str, int] | None:
    """What results.json and the manifest record about the rehearsal (None for a real run)."""
    return {"steps": steps, "images_per_split": IMAGES_PER_SPLIT} if steps else None


def banner(steps: int) -> str:
    """The title of a rehearsal's results.md: nobody should mistake it for results."""
    return (f"# REHEARSAL — NOT RESULTS\n\nEvery training schedule was cut to {steps} optimiser step(s) and every "
            "split (train, valid, each evaluated subset) to its first image: this run proves that the recipe runs "
            "end to end; its scores mean nothing. Run without `--rehearse` for results.\n")


# --------------------------------------------------------------------------------------------- reports


def is_rehearsal(run_dir: Path) -> bool:
    """Whether a finished run dir holds a rehearsal (``rehearsal`` in results.json, or on any row)."""
    try:
        results = json.loads((Path(run_dir) / "results.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False  # the report's own reader names the unreadable file
    if isinstance(results, dict):
        if results.get("rehearsal"):
            return True
        results = results.get("rows")
    return isinstance(results, list) and any(isinstance(r, dict) and r.get("rehearsal") for r in results)


def select_runs(named: Sequence[Path], found: Sequence[Path]) -> list[Path]:
    """The run dirs one report may cover: rehearsals and real runs are never mixed.

    `named` are the run dirs given by path, `found` those discovered inside given folders (``make report``
    passes ``runs``). A rehearsal named next to a real run is an error; rehearsals merely found in a folder
    are left out (logged with their names) when real runs are there too; rehearsals alone are reported.
    """
    named_rehearsals = [p for p in named if is_rehearsal(p)]
    named_real = [p for p in named if p not in named_rehearsals]
    if named_rehearsals and named_real:
        raise ConfigError(
            f"{', '.join(map(str, named_rehearsals))}: rehearsal run(s) (schedules cut to a few steps, one image per "
            f"split) named together with real run(s) {', '.join(map(str, named_real))}; a report never mixes them "
            "— report the rehearsals on their own")
    everything = list(dict.fromkeys([*named, *found]))
    rehearsals = [p for p in everything if is_rehearsal(p)]
    if not rehearsals or len(rehearsals) == len(everything):
        return everything
    if named_rehearsals:
        raise ConfigError(
            f"{', '.join(map(str, named_rehearsals))}: rehearsal run(s) named together with folders holding real "
            "runs; a report never mixes them — report the rehearsals on their own")
    logger.warning("report: %d rehearsal run(s) left out (a report never mixes rehearsals with real runs; "
                   "report them on their own): %s", len(rehearsals), ", ".join(str(p) for p in rehearsals))
    return [p for p in everything if p not in rehearsals]
