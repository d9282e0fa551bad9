"""`c6bench data validate|convert|fetch`: check a dataset, export label maps or YOLO, download Glioma C6.

`--data` takes what `harness.dataset.resolve_data` takes: ``auto``, ``sample``, ``glioma_c6``, a dataset YAML
or a folder. `validate` exits 1 when it found problems (0 when only warnings); bad arguments exit 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.commands._args import int_at_least, path_arg
from harness.errors import ConfigError

logger = logging.getLogger(__name__)

MAX_LISTED = 20


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("data", help="validate, convert or fetch datasets")
    actions = parser.add_subparsers(dest="data_command", required=True, metavar="ACTION")

    val = actions.add_parser("validate", help="per split and category: images, instances, overlaps, problems")
    val.add_argument("--data", default="auto", help="auto | sample | glioma_c6 | dataset YAML | folder")
    val.add_argument("--split", action="append", help="part/split to check (repeatable; default: all)")
    val.add_argument("--no-images", action="store_true", help="skip reading every image (faster)")
    val.add_argument("--json", type=path_arg, help="also write the full report here")
    val.set_defaults(func=run_validate)

    conv = actions.add_parser("convert", help="export priority-resolved label TIFFs or a YOLO-seg tree")
    src = conv.add_mutually_exclusive_group(required=True)
    src.add_argument("--coco", type=path_arg, help="a COCO instances JSON")
    src.add_argument("--data", help="auto | sample | glioma_c6 | dataset YAML | folder (with --split)")
    conv.add_argument("--images", type=path_arg, help="image folder for --coco (default: next to the JSON)")
    conv.add_argument(
        "--split",
        action="append",
        help="part/split of --data (labelmaps: exactly one; yolo: repeatable, default train + valid)",
    )
    conv.add_argument("--split-name", default="train", help="YOLO split name for --coco (default train)")
    conv.add_argument("--to", choices=("labelmaps", "yolo"), required=True)
    conv.add_argument(
        "--priority",
        choices=("last", "first", "smallest"),
        default="last",
        help="overlap rule for label maps (default last = annotation order)",
    )
    conv.add_argument("--min-pixels", type=int_at_least(0), default=10, help="drop instances left smaller (default 10)")
    conv.add_argument("--categories", nargs="+", help="category names to keep (comma or space separated)")
    conv.add_argument("--target", help="with --data: keep a target's categories, renamed to the target")
    conv.add_argument("--out", type=path_arg, required=True, help="output folder")
    conv.set_defaults(func=run_convert)

    fetch = actions.add_parser(
        "fetch", help="download Glioma C6 (Zenodo 15083188) into data/glioma_c6 (network)"
    )
    fetch.add_argument("--dest", type=path_arg, default=None, help="target folder (default data/glioma_c6)")
    fetch.add_argument("--url", default=None, help="archive URL (default: the Zenodo dataset.zip)")
    fetch.add_argument("--zip", type=path_arg, default=None, help="use an already downloaded dataset.zip instead")
    fetch.add_argument("--keep-zip", action="store_true", help="keep dataset.zip after unpacking")
    fetch.add_argument("--timeout", type=float, default=None, help="network timeout in seconds")
    fetch.set_defaults(func=run_fetch)


# --------------------------------------------------------------------------------------------- validate


def format_report(report: dict[str, Any]) -> str:
    """Plain-text table of a `harness.dataset.validate` report, problems and warnings listed."""
    rows = [("split", "category", "images", "instances", "overlapping pairs", "empty")]
    for ref, entry in report["splits"].items():
        for cat, row in entry["categories"].items():
            rows.append(
                (
                    ref,
                    cat,
                    str(row["images"]),
                    str(row["instances"]),
                    str(row["overlapping_pairs"]),
                    str(row["empty"]),
                )
            )
        rows.append(
            (ref, "(all)", str(entry["images"]), str(entry["instances"]), str(entry["overlapping_pairs"]), "")
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [f"dataset {report['dataset']} at {report['root']}"]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    for kind in ("problems", "warnings"):
        items = [f"[{ref}] {msg}" for ref, e in report["splits"].items() for msg in e[kind]]
        lines.append(f"{kind}: {len(items)}")
        lines += [f"  {m}" for m in items[:MAX_LISTED]]
        if len(items) > MAX_LISTED:
            lines.append(f"  ... and {len(items) - MAX_LISTED} more (see --json)")
    return "\n".join(lines) + "\n"


def run_validate(args: argparse.Namespace) -> int:
    from harness.dataset import resolve_data, validate

    cfg = resolve_data(args.data)
    report = validate(cfg, refs=args.split, check_images=not args.no_images)
    sys.stdout.write(format_report(report))
    if args.json:
        from harness.io import write_text

        write_text(args.json, json.dumps(report, indent=2) + "\n")
    return 1 if report["problems"] else 0


# --------------------------------------------------------------------------------------------- convert


def _names(values: Sequence[str] | None) -> list[str] | None:
    if not values:
        return None
    return [n.strip() for v in values for n in v.split(",") if n.strip()]


def _filter(samples: list[Any], categories: Sequence[str] | None, present: set[str], where: str) -> list[Any]:
    if categories is None:
        return samples
    unknown = [c for c in categories if c not in present]
    if unknown:
        raise ConfigError(
            f"--categories {', '.join(map(repr, unknown))} not found in {where}; names present: "
            f"{', '.join(map(repr, sorted(present)))}"
        )
    wanted = set(categories)
    return [s.with_instances(i for i in s.instances if i.category in wanted) for s in samples]


def _from_coco(args: argparse.Namespace, warnings: list[str]) -> tuple[dict[str, list[Any]], list[str]]:
    from harness.data import load_coco

    if args.split or args.target:
        raise ConfigError("--split and --target go with --data; with --coco use --categories")
    samples, categories = load_coco(args.coco, args.images, warnings=warnings)
    names = [categories[k] for k in sorted(categories, key=str)]
    wanted = _names(args.categories)
    samples = _filter(samples, wanted, set(names), str(args.coco))
    return {args.split_name: samples}, wanted or names


def _from_data(args: argparse.Namespace, warnings: list[str]) -> tuple[dict[str, list[Any]], list[str]]:
    from harness.dataset import as_classes, load_split, resolve_data, select

    if args.images:
        raise ConfigError("--images goes with --coco")
    cfg = resolve_data(args.data)
    refs = args.split or ([cfg.train, cfg.valid] if args.to == "yolo" else None)
    if not refs or (args.to == "labelmaps" and len(refs) != 1):
        raise ConfigError(
            "--to labelmaps with --data needs exactly one --split part/split "
            f"(defined: {', '.join(f'{p}/{s}' for p, v in cfg.parts.items() for s in v.splits)})"
        )
    wanted = _names(args.categories)
    if wanted and args.target:
        raise ConfigError("give --categories or --target, not both")
    splits: dict[str, list[Any]] = {}
    classes: list[str] | None = None
    for ref in refs:
        samples = load_split(cfg, ref)
        warnings.extend(w for s in samples for w in s.extra.get("warnings", ()))
        present = {i.category for s in samples for i in s.instances}
        if args.target:
            targets = cfg.targets_of(ref)
            if args.target not in targets:
                raise ConfigError(
                    f"--target {args.target!r} is not defined for {ref}; targets: {', '.join(targets)}"
                )
            samples, classes = select(samples, targets[args.target], args.target), [args.target]
        elif wanted:
            samples, classes = _filter(samples, wanted, present | _all_categories(cfg, ref), ref), wanted
        elif args.to == "yolo":
            samples, classes = as_classes(samples, cfg, ref), list(cfg.classes)
        else:
            classes = sorted(present)
        splits[ref.split("/", 1)[1]] = samples
    return splits, classes or []


def _all_categories(cfg: Any, ref: str) -> set[str]:
    return {c for names in cfg.targets_of(ref).values() for c in names}


def write_label_maps(samples: Sequence[Any], out: Path, rule: str, min_pixels: int) -> dict[str, Any]:
    """One label TIFF per image (uint16, or int32 above 65535 labels) and the per-image conversion records."""
    import numpy as np
    import tifffile
    from tqdm import tqdm

    from harness.convert import label_map
    from harness.io import atomic_path

    out.mkdir(parents=True, exist_ok=True)
    images: dict[str, Any] = {}
    for sample in tqdm(samples, desc="label maps", unit="img"):
        sample.load_image()  # the image must exist and match the annotated size
        labels, resolution = label_map(sample, rule=rule, min_pixels=min_pixels)
        dtype = np.uint16 if len(resolution.instances) <= np.iinfo(np.uint16).max else np.int32
        name = f"{sample.name}.tif"
        if name in images:
            raise ConfigError(f"{sample.image_path}: its label map would be {name}, like that of "
                              f"{images[name]['image']}; rename one of the two images")
        with atomic_path(out / name) as tmp:
            tifffile.imwrite(tmp, labels.astype(dtype), compression="zlib", photometric="minisblack")
        images[name] = {
            "image": str(sample.image_path),
            **resolution.summary(),
            "warnings": list(sample.extra.get("warnings", ())),
        }
    return images


def run_convert(args: argparse.Namespace) -> int:
    from harness.io import ensure_dir

    warnings: list[str] = []
    splits, classes = _from_coco(args, warnings) if args.coco else _from_data(args, warnings)
    ensure_dir(args.out)
    if args.to == "yolo":
        from harness.convert import write_yolo_dataset

        data_yaml = write_yolo_dataset(splits, args.out, classes)
        summary = json.loads((args.out / "export.json").read_text())
        for split, row in summary["splits"].items():
            sys.stdout.write(
                f"{split}: {row['images']} images, {row['instances']} instances "
                f"({row['skipped_empty']} empty skipped)\n"
            )
        sys.stdout.write(f"warnings: {len(warnings)}\n{data_yaml}\n")
        return 0
    ((split, samples),) = splits.items()
    images = write_label_maps(samples, args.out, args.priority, args.min_pixels)
    totals = {
        key: sum(v[key] for v in images.values()) for key in ("in", "kept", "dropped", "trimmed_pixels")
    }
    record = {
        "source": str(args.coco or f"{args.data} {split}"),
        "rule": args.priority,
        "min_pixels": args.min_pixels,
        "categories": classes,
        "totals": {"images": len(images), **totals, "warnings": len(warnings)},
        "images": images,
    }
    from harness.io import write_text

    write_text(args.out / "conversion.json", json.dumps(record, indent=2) + "\n")
    sys.stdout.write(
        f"{len(images)} label maps in {args.out} (rule {args.priority}, min_pixels {args.min_pixels}): "
        f"{totals['in']} instances in, {totals['kept']} kept, {totals['dropped']} dropped; "
        f"warnings: {len(warnings)}\n"
    )
    for name, row in images.items():
        for drop in row["dropped_detail"]:
            sys.stdout.write(
                f"  {name}: instance {drop['order']} ({drop['category']}) dropped: {drop['reason']}\n"
            )
    return 0


# --------------------------------------------------------------------------------------------- fetch


def run_fetch(args: argparse.Namespace) -> int:
    from harness import fetch
    from harness.dataset import GLIOMA_ROOT, resolve_data, validate

    dest = args.dest or GLIOMA_ROOT
    root = fetch.fetch_dataset(
        dest,
        url=args.url or fetch.DATASET_URL,
        zip_path=args.zip,
        keep_zip=args.keep_zip,
        timeout=args.timeout or fetch.TIMEOUT_S,
    )
    sys.stdout.write(f"Glioma C6 unpacked to {root}\n")
    report = validate(resolve_data(root))
    sys.stdout.write(format_report(report))
    return 1 if report["problems"] else 0
