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
        help="part/split of --data (labelmaps: exactly one; yolo: repeatable, default train + valid; splits "
        "sharing a name, as spec/test and gen/test, are written as spec_test and gen_test)",
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
    conv.add_argument("--target", help="with --data: keep a target's categories (YOLO: as one class named "
                      "like the target); label maps: default one folder per target")
    conv.add_argument("--classes", nargs="+", help="with --data --to yolo: targets to export as classes "
                      "(default: the dataset's classes; e.g. cells soma, where gen's cell is a cells)")
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
    lines = [f"dataset {report['dataset']} at {report['root']}", *_table(rows)]
    target_rows = [("split", "target", "instances", "overlapping pairs", "of which between categories")]
    target_rows += [(ref, t, str(row["instances"]), str(row["overlapping_pairs"]), _between(row, entry))
                    for ref, entry in report["splits"].items() for t, row in entry.get("targets", {}).items()]
    if len(target_rows) > 1:
        lines += _table(target_rows)
    for kind in ("problems", "warnings"):
        items = [f"[{ref}] {msg}" for ref, e in report["splits"].items() for msg in e[kind]]
        lines.append(f"{kind}: {len(items)}")
        lines += [f"  {m}" for m in items[:MAX_LISTED]]
        if len(items) > MAX_LISTED:
            lines.append(f"  ... and {len(items) - MAX_LISTED} more (see --json)")
    return "\n".join(lines) + "\n"


def _table(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def _between(row: dict[str, Any], entry: dict[str, Any]) -> str:
    """``17 (cell type A / cell type B: 17)``: the target's overlapping pairs of two different categories."""
    from harness.overlaps import PAIR_SEPARATOR

    cats = set(row["categories"])
    parts = [f"{k}: {n}" for k, n in entry.get("category_pairs", {}).items()
             if set(k.split(PAIR_SEPARATOR)) <= cats]
    return f"{row['across_categories']}" + (f" ({', '.join(parts)})" if parts else "")


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
    from harness.coco import load_coco

    if args.split or args.target or args.classes:
        raise ConfigError("--split, --target and --classes go with --data; with --coco use --categories")
    samples, categories = load_coco(args.coco, args.images, warnings=warnings)
    names = [categories[k] for k in sorted(categories, key=str)]
    wanted = _names(args.categories)
    if args.to == "labelmaps" and not wanted and len(names) > 1:
        raise ConfigError(
            f"{args.coco} has {len(names)} categories ({', '.join(map(repr, names))}); one label map holds "
            "the instances it is given, so overlapping categories (a soma inside its cell) would cut each "
            f"other: choose them with --categories (e.g. --categories {names[0]!r})"
        )
    samples = _filter(samples, wanted, set(names), str(args.coco))
    return {args.split_name: samples}, wanted or names


def _load_data(
    args: argparse.Namespace, warnings: list[str]
) -> tuple[Any, dict[str, list[Any]], list[str] | None]:
    """The dataset config, the samples of each requested ``part/split`` and the --categories asked for."""
    from harness.dataset import load_split, resolve_data, split_refs

    if args.images:
        raise ConfigError("--images goes with --coco")
    cfg = resolve_data(args.data)
    refs = args.split or ([cfg.train, cfg.valid] if args.to == "yolo" else None)
    if not refs or (args.to == "labelmaps" and len(refs) != 1):
        raise ConfigError(f"--to labelmaps with --data needs exactly one --split part/split (defined: "
                          f"{', '.join(split_refs(cfg))})")
    if len(set(refs)) != len(refs):
        twice = [r for r in dict.fromkeys(refs) if refs.count(r) > 1]
        raise ConfigError(f"--split given twice: {', '.join(twice)}")
    wanted = _names(args.categories)
    given = [flag for flag, value in (("--categories", wanted), ("--target", args.target),
                                      ("--classes", args.classes)) if value]
    if len(given) > 1:
        raise ConfigError(f"give one of --categories, --target, --classes, not {' and '.join(given)}")
    if args.classes and args.to != "yolo":
        raise ConfigError("--classes goes with --to yolo; label maps are written per target (--target)")
    loaded = {}
    for ref in refs:
        cfg.part_of(ref)  # an undefined split is an error listing the defined ones
        loaded[ref] = load_split(cfg, ref)
        warnings.extend(w for s in loaded[ref] for w in s.extra.get("warnings", ()))
    return cfg, loaded, wanted


def _target(cfg: Any, ref: str, target: str) -> tuple[str, ...]:
    targets = cfg.targets_of(ref)
    if target not in targets:
        raise ConfigError(f"--target {target!r} is not defined for {ref}; targets: {', '.join(targets)}")
    return targets[target]


def _present(samples: Sequence[Any], cfg: Any, ref: str) -> set[str]:
    return {i.category for s in samples for i in s.instances} | _all_categories(cfg, ref)


def _yolo_from_data(args: argparse.Namespace, warnings: list[str]) -> tuple[dict[str, list[Any]], list[str]]:
    from harness.classes import export_classes
    from harness.dataset import select

    cfg, loaded, wanted = _load_data(args, warnings)
    splits: dict[str, list[Any]] = {}
    if args.target:
        classes = [args.target]
        splits = {ref: select(s, _target(cfg, ref, args.target), args.target) for ref, s in loaded.items()}
    elif wanted:
        classes = wanted
        splits = {ref: _filter(s, wanted, _present(s, cfg, ref), ref) for ref, s in loaded.items()}
    else:
        classes = _names(args.classes) or list(cfg.classes)
        asked = _names(args.classes) or []
        unknown = [c for c in asked if not any(c in cfg.targets_of(ref) for ref in loaded)]
        if unknown or not classes:
            raise ConfigError(
                f"YOLO class(es) {', '.join(map(repr, unknown)) or '(none)'} are targets of none of "
                f"{', '.join(loaded)}; targets: "
                + "; ".join(f"{ref}: {', '.join(cfg.targets_of(ref))}" for ref in loaded)
            )
        for ref, samples in loaded.items():
            to_class = export_classes(cfg.targets_of(ref), classes, f"{cfg.source} ({ref})")
            splits[ref] = _to_classes(samples, to_class, classes, ref, list(cfg.targets_of(ref)), warnings)
    return _split_names(splits), classes


def _to_classes(samples: Sequence[Any], to_class: dict[str, str], classes: Sequence[str], ref: str,
                targets: Sequence[str], warnings: list[str]) -> list[Any]:
    """Instances renamed to their YOLO class; losing some is a warning with counts, losing all an error."""
    out = [s.with_instances(i.with_category(to_class[i.category]) for i in s.instances
                            if i.category in to_class) for s in samples]
    n_in, n_out = sum(len(s.instances) for s in samples), sum(len(s.instances) for s in out)
    if n_out == n_in:
        return out
    lost = sorted({i.category for s in samples for i in s.instances if i.category not in to_class})
    bare = sum(1 for s, o in zip(samples, out, strict=True) if s.instances and not o.instances)
    message = (f"{ref}: {n_in - n_out} of {n_in} instances (categor{'y' if len(lost) == 1 else 'ies'} "
               f"{', '.join(map(repr, lost))}) belong to none of the YOLO classes {', '.join(classes)}; "
               f"{bare} of {len(samples)} images have no instance of the classes left")
    if n_out == 0:
        raise ConfigError(f"{message}. Nothing would be exported: choose classes that {ref} defines with "
                          f"--classes or --target (its targets: {', '.join(targets)})")
    logger.warning("%s", message)
    warnings.append(message)
    return out


def _maps_from_data(args: argparse.Namespace, warnings: list[str]) -> tuple[str, list[tuple[Any, ...]]]:
    """``(ref, [(folder below --out or None, target or None, samples, categories), ...])``: one label map per
    image and target; --target or --categories choose one map instead."""
    from harness.labelmaps import select_categories

    cfg, loaded, wanted = _load_data(args, warnings)
    ((ref, samples),) = loaded.items()
    if args.target:
        cats = _target(cfg, ref, args.target)
        return ref, [(None, args.target, select_categories(samples, cats), list(cats))]
    if wanted:
        return ref, [(None, None, _filter(samples, wanted, _present(samples, cfg, ref), ref), wanted)]
    targets = cfg.targets_of(ref)
    return ref, [(t, t, select_categories(samples, cats), list(cats)) for t, cats in targets.items()]


def _split_names(splits: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """``part/split`` → output name: the split's name (``train``), or ``part_split`` for splits that share it
    (``spec/test`` and ``gen/test`` → ``spec_test``, ``gen_test``) so that neither overwrites the other."""
    short = [ref.split("/", 1)[1] for ref in splits]
    named = {}
    for (ref, samples), name in zip(splits.items(), short, strict=True):
        named[ref.replace("/", "_") if short.count(name) > 1 else name] = samples
    shared = [ref for ref, name in zip(splits, short, strict=True) if short.count(name) > 1]
    if shared:
        logger.info("%s share a split name: written as %s", ", ".join(shared),
                    ", ".join(ref.replace("/", "_") for ref in shared))
    return named


def _all_categories(cfg: Any, ref: str) -> set[str]:
    return {c for names in cfg.targets_of(ref).values() for c in names}


def run_convert(args: argparse.Namespace) -> int:
    from harness.io import ensure_dir

    warnings: list[str] = []
    if args.to == "yolo":
        from harness.convert import write_yolo_dataset

        splits, classes = _from_coco(args, warnings) if args.coco else _yolo_from_data(args, warnings)
        ensure_dir(args.out)
        data_yaml = write_yolo_dataset(splits, args.out, classes)
        summary = json.loads((args.out / "export.json").read_text())
        for split, row in summary["splits"].items():
            sys.stdout.write(
                f"{split}: {row['images']} images, {row['instances']} instances "
                f"({row['skipped_empty']} empty skipped)\n"
            )
        sys.stdout.write(f"warnings: {len(warnings)}\n")
        sys.stdout.writelines(f"  {w}\n" for w in warnings[:MAX_LISTED])
        if len(warnings) > MAX_LISTED:
            sys.stdout.write(f"  ... and {len(warnings) - MAX_LISTED} more\n")
        sys.stdout.write(f"{data_yaml}\n")
        return 0
    from harness import labelmaps

    if args.coco:
        splits, classes = _from_coco(args, warnings)
        source, maps = str(args.coco), [(None, None, next(iter(splits.values())), classes)]
    else:
        ref, maps = _maps_from_data(args, warnings)
        source = f"{args.data} {ref}"
    ensure_dir(args.out)
    for folder, target, samples, categories in maps:
        out = args.out / folder if folder else args.out
        record = labelmaps.convert(samples, out, source=source, rule=args.priority,
                                   min_pixels=args.min_pixels, categories=categories, warnings=warnings,
                                   target=target)
        sys.stdout.writelines(f"{line}\n" for line in labelmaps.summary_lines(record, out))
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
