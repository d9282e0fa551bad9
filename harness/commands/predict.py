"""`c6bench predict`: run a model on images and write COCO JSON (+ label TIFFs) that `c6bench evaluate` reads."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from harness.commands._args import int_at_least, path_arg

logger = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("predict", help="segment images with a model; writes predictions.json")
    parser.add_argument("--model", required=True)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--weights", default=None, help="known weights name or file (zero-shot)")
    group.add_argument("--checkpoint", type=path_arg, default=None, help="checkpoint written by `c6bench bench`")
    parser.add_argument("--profile", default="quick", help="config profile for the model parameters")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--images", nargs="+", type=path_arg, required=True, help="image files or folders")
    parser.add_argument("--category", default="cells", help="category name of single-class predictions")
    parser.add_argument("--out", type=path_arg, required=True)
    parser.add_argument("--labels", action="store_true", help="also write one label TIFF per image")
    parser.add_argument("--frame", type=int_at_least(0), default=None, metavar="K",
                        help="use plane K of TIFF stacks (time-lapse, z-stack); default: refuse stacks")
    parser.set_defaults(func=run)


def image_files(paths: list[Path]) -> list[tuple[Path, str]]:
    """``(file, file_name)`` of every image given (a folder: its image files, not recursive).

    ``file_name`` — what the predictions file and the label TIFFs are named by — is the path relative to the
    folder given, or with several arguments to their common folder, so ``--images A/ B/`` keeps ``A/x.tif``
    and ``B/x.tif`` apart and ``--images set18/raw.tif set19/raw.tif`` matches a COCO file that lists
    ``set18/raw.tif``.
    """
    import os

    from harness.errors import DataError
    from harness.images import IMAGE_SUFFIXES

    files: list[Path] = []
    bases: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise DataError(f"{path}: no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder")
            files += found
            bases.append(Path(os.path.abspath(path)))
        elif path.is_file():
            files.append(path)
            bases.append(Path(os.path.abspath(path)).parent)
        else:
            raise DataError(f"{path}: no such image file or folder")
    root = Path(os.path.commonpath(bases)) if len(bases) > 1 else bases[0]
    seen: dict[Path, Path] = {}
    out = []
    for file in files:
        resolved = file.resolve()
        if resolved in seen:
            raise DataError(f"{file}: given twice (also as {seen[resolved]}); each image is predicted once")
        seen[resolved] = file
        out.append((file, Path(os.path.abspath(file)).relative_to(root).as_posix()))
    return out


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    import adapters
    from harness.config import load_model_config
    from harness.images import read_image
    from harness.io import ensure_dir
    from harness.plan import resolve_device
    from harness.predictions import write_label_tiffs, write_predictions
    from harness.records import Sample

    cfg = load_model_config(args.model, args.profile)
    cls = adapters.get(args.model)
    files = image_files(args.images)
    ensure_dir(args.out)
    adapter = cls.build(cfg.params, weights=args.weights, device=resolve_device(args.device))
    if args.checkpoint:
        adapter.load(args.checkpoint)
    samples = []
    for k, (path, name) in enumerate(tqdm(files, desc="predict", unit="image"), start=1):
        image = read_image(path, frame=args.frame)
        instances = adapter.predict(image)
        if not cls.multiclass:
            instances = [i.with_category(args.category) for i in instances]
        samples.append(Sample(image_path=path, height=image.shape[0], width=image.shape[1],
                              instances=tuple(instances), image_id=k, file_name=name))
    categories = sorted({i.category for s in samples for i in s.instances}) or [args.category]
    out = write_predictions(args.out / "predictions.json", samples, categories)
    if args.labels:
        write_label_tiffs(args.out / "labels", samples)
    sys.stdout.write(f"{sum(len(s.instances) for s in samples)} instances in {len(samples)} images → {out}\n")
    return 0
