"""`c6bench predict`: run a model on images and write COCO JSON (+ label TIFFs) that `c6bench evaluate` reads."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

logger = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("predict", help="segment images with a model; writes predictions.json")
    parser.add_argument("--model", required=True)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--weights", default=None, help="known weights name or file (zero-shot)")
    group.add_argument("--checkpoint", type=Path, default=None, help="checkpoint written by `c6bench bench`")
    parser.add_argument("--profile", default="quick", help="config profile for the model parameters")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--images", nargs="+", type=Path, required=True, help="image files or folders")
    parser.add_argument("--category", default="cells", help="category name of single-class predictions")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--labels", action="store_true", help="also write one label TIFF per image")
    parser.set_defaults(func=run)


def _image_files(paths: list[Path]) -> list[Path]:
    from harness.data import IMAGE_SUFFIXES
    from harness.errors import DataError

    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            files.append(path)
        else:
            raise DataError(f"{path}: no such image file or folder")
    if not files:
        raise DataError(f"no images found in {', '.join(map(str, paths))}")
    return files


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    import adapters
    from harness.config import load_model_config
    from harness.data import Sample, read_image
    from harness.predictions import write_label_tiffs, write_predictions
    from harness.run import resolve_device

    cfg = load_model_config(args.model, args.profile)
    cls = adapters.get(args.model)
    adapter = cls.build(cfg.params, weights=args.weights, device=resolve_device(args.device))
    if args.checkpoint:
        adapter.load(args.checkpoint)
    samples = []
    for k, path in enumerate(tqdm(_image_files(args.images), desc="predict", unit="image"), start=1):
        image = read_image(path)
        instances = adapter.predict(image)
        if not cls.multiclass:
            instances = [i.with_category(args.category) for i in instances]
        samples.append(Sample(image_path=path, height=image.shape[0], width=image.shape[1],
                              instances=tuple(instances), image_id=k, file_name=path.name))
    categories = sorted({i.category for s in samples for i in s.instances}) or [args.category]
    out = write_predictions(args.out / "predictions.json", samples, categories)
    if args.labels:
        write_label_tiffs(args.out / "labels", samples)
    sys.stdout.write(f"{sum(len(s.instances) for s in samples)} instances in {len(samples)} images → {out}\n")
    return 0
