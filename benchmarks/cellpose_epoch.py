"""One cellpose training of one target as the bench's train stage runs it, for the scale scenario's figures.

Why: a cellpose training at the dataset's scale spends its time and memory before the first epoch (flow targets of
30 label maps of 2592 x 1944, normalised images) and then per epoch; `benchmarks.bench_scale` runs this module
in a child process per target (its wall time, CPU time and peak RSS are the training's alone) with the config's
quick schedule cut to `--epochs` (2: the fewest the adapter allows, the first at learning rate 0). The train and
validation samples are prepared exactly as ``harness.run``'s train stage prepares them (the target's
categories, crowd regions left out, overlaps flattened by the config's label-map rule). What the training
recorded (``training.json``: flow seconds, cache hits, seconds per epoch) is copied to ``--json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path

logger = logging.getLogger(__name__)


def train_one(data: str, target: str, work: Path, epochs: int, profile: str = "quick") -> dict[str, object]:
    """Train cellpose on `target` of the dataset `data` into `work`; what it took (seconds, cache, epochs)."""
    import adapters
    from harness.classes import Unit, training_split
    from harness.config import load_model_config
    from harness.dataset import load_split, resolve_data

    cfg = resolve_data(data)
    model = load_model_config("cellpose", profile)
    cls = adapters.get("cellpose")
    unit = Unit(name=target, targets=[target], train_as={target: list(cfg.targets_of(cfg.train)[target])})
    train, valid = (training_split(load_split(cfg, ref), unit, model, cls.needs_label_maps, f"{target} {what}")
                    for ref, what in ((cfg.train, "train"), (cfg.valid, "valid")))
    adapter = cls.build(model.params, weights=None, device="cpu", seed=0)
    start = time.perf_counter()
    adapter.train(train, valid, work, **{**model.train, "epochs": epochs})
    figures: dict[str, object] = {"target": target, "train_s": round(time.perf_counter() - start, 2)}
    record = work / "training.json"
    if record.is_file():
        figures.update(json.loads(record.read_text()))
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="dataset (as `c6bench bench --data`)")
    parser.add_argument("--target", required=True)
    parser.add_argument("--work", type=Path, required=True, help="the training's folder")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--json", type=Path, required=True, help="where the figures go")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from harness.io import write_json

    write_json(args.json, train_one(args.data, args.target, args.work, args.epochs), indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
