"""Dataset configs (``configs/datasets/*.yaml``): where the splits are and which categories make a target.

A dataset has parts (Glioma C6: ``spec`` and ``gen``), each with splits (folders holding the images and
exactly one COCO JSON, found by globbing) and a target → category-names map. Split references are
written ``part/split`` (``spec/train``). Target names are checked against the categories actually present
in the JSON: an unknown name fails listing the names present.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.coco import load_coco
from harness.errors import ConfigError, DataError
from harness.images import IMAGE_SUFFIXES
from harness.io import read_yaml
from harness.records import Sample

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO_ROOT / "configs"
GLIOMA_ROOT = REPO_ROOT / "data" / "glioma_c6"

_TOP_KEYS = {"name", "root", "parts", "classes", "train", "valid", "evaluate"}
_PART_KEYS = {"splits", "targets"}


@dataclass(frozen=True)
class Part:
    """One part of a dataset: split name → folder, target name → COCO category names."""

    splits: dict[str, str]
    targets: dict[str, tuple[str, ...]]


@dataclass(frozen=True)
class DatasetConfig:
    """A validated dataset YAML with its data root resolved."""

    name: str
    root: Path
    parts: dict[str, Part]
    classes: tuple[str, ...]
    train: str
    valid: str
    evaluate: tuple[str, ...]
    source: Path

    def part_of(self, ref: str) -> Part:
        """The `Part` of a ``part/split`` reference; an undefined one is an error listing those defined."""
        part, split = _split_ref(ref)
        if part not in self.parts or split not in self.parts[part].splits:
            alias = split == "val" and part in self.parts and "valid" in self.parts[part].splits
            raise ConfigError(f"split {ref!r} is not defined in {self.source}; defined: "
                              f"{', '.join(split_refs(self))}" + (f" (YOLO's 'val' is {part}/valid)" * alias))
        return self.parts[part]

    def split_dir(self, ref: str) -> Path:
        """Folder of a ``part/split`` reference."""
        return self.root / self.part_of(ref).splits[_split_ref(ref)[1]]

    def targets_of(self, ref: str) -> dict[str, tuple[str, ...]]:
        """Targets that can be evaluated on a split (those its part defines)."""
        return self.part_of(ref).targets


def _split_ref(ref: str) -> tuple[str, str]:
    if ref.count("/") != 1:
        raise ConfigError(f"split reference {ref!r} must be written 'part/split' (e.g. 'spec/test')")
    part, split = ref.split("/")
    return part, split


def load_dataset_config(path: Path | str, root: Path | str | None = None) -> DatasetConfig:
    """Read and validate a dataset YAML; ``root`` overrides the YAML's data root."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"{path}: dataset config not found; shipped ones: "
            f"{', '.join(p.name for p in sorted((CONFIG_DIR / 'datasets').glob('*.yaml')))}"
        )
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    _check_keys(raw, _TOP_KEYS, {"name", "root", "parts", "train", "valid", "evaluate"}, str(path))
    if not isinstance(raw["parts"], dict):
        raise ConfigError(f"{path}: parts must be a mapping of part name -> splits and targets")
    parts: dict[str, Part] = {}
    for part_name, part in (raw["parts"] or {}).items():
        where = f"{path}: parts.{part_name}"
        if not isinstance(part, dict):
            raise ConfigError(f"{where} must be a mapping with 'splits' and 'targets'")
        _check_keys(part, _PART_KEYS, _PART_KEYS, where)
        for key in _PART_KEYS:
            if not isinstance(part[key], dict) or not part[key]:
                raise ConfigError(f"{where}.{key} must be a non-empty mapping, got {part[key]!r}")
        targets = {
            str(t): tuple(str(c) for c in _as_list(cats, f"{where}.targets.{t}"))
            for t, cats in part["targets"].items()
        }
        parts[str(part_name)] = Part(
            splits={str(k): str(v) for k, v in part["splits"].items()}, targets=targets
        )
    data_root = Path(root) if root is not None else Path(raw["root"])
    if not data_root.is_absolute():
        data_root = (REPO_ROOT / data_root) if root is None else data_root.resolve()
    cfg = DatasetConfig(
        name=str(raw["name"]),
        root=data_root,
        parts=parts,
        classes=tuple(str(c) for c in raw.get("classes") or ()),
        train=str(raw["train"]),
        valid=str(raw["valid"]),
        evaluate=tuple(str(r) for r in _as_list(raw["evaluate"], f"{path}: evaluate")),
        source=path,
    )
    for ref in (cfg.train, cfg.valid, *cfg.evaluate):
        part, split = _split_ref(ref)
        if part not in parts or split not in parts[part].splits:
            raise ConfigError(
                f"{path}: split {ref!r} is not defined under parts; defined: "
                f"{', '.join(f'{p}/{s}' for p, v in parts.items() for s in v.splits)}"
            )
    train_targets = cfg.targets_of(cfg.train)
    for cls in cfg.classes:
        if cls not in train_targets:
            raise ConfigError(
                f"{path}: class {cls!r} is not a target of the training part; "
                f"targets: {', '.join(train_targets)}"
            )
    return cfg


def _as_list(value: Any, where: str) -> list[Any]:
    if isinstance(value, (str, int)):
        return [value]
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where} must be a non-empty list")
    return value


def _check_keys(raw: dict[str, Any], allowed: set[str], required: set[str], where: str) -> None:
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}"
        )
    missing = sorted(required - set(raw))
    if missing:
        raise ConfigError(f"{where}: missing key(s) {', '.join(missing)}")


def glioma_layout_root(folder: Path) -> Path | None:
    """The data root inside a folder holding the Glioma C6 archive: ``folder/dataset`` or ``folder`` itself
    (whichever has the ``spec/`` part), or None when neither does."""
    for root in (folder / "dataset", folder):
        if (root / "spec").is_dir():
            return root
    return None


def resolve_data(data: str | Path) -> DatasetConfig:
    """``auto`` (Glioma C6 when downloaded, else the bundled sample), ``sample``, ``glioma_c6``, a dataset
    YAML, or a folder holding the Glioma C6 archive layout (``dataset/spec/...`` or ``spec/...``)."""
    text = str(data)
    glioma_yaml = CONFIG_DIR / "datasets" / "glioma_c6.yaml"
    if text == "auto":
        root = glioma_layout_root(GLIOMA_ROOT) if GLIOMA_ROOT.is_dir() else None
        if root is not None:
            logger.info("using Glioma C6 at %s", root)
            return load_dataset_config(glioma_yaml, root=root)
        reason = (
            "holds no spec/ part (an interrupted download? run `c6bench data fetch` again)"
            if GLIOMA_ROOT.is_dir()
            else "is absent (get the dataset with `c6bench data fetch`)"
        )
        logger.warning(
            "Glioma C6 not found: %s %s; running on the bundled sample data/sample", GLIOMA_ROOT, reason
        )
        return load_dataset_config(CONFIG_DIR / "datasets" / "sample.yaml")
    named = CONFIG_DIR / "datasets" / f"{text}.yaml"
    if named.is_file():
        return load_dataset_config(named)
    path = Path(text)
    if path.suffix in (".yaml", ".yml"):
        return load_dataset_config(path)
    if path.is_dir():
        for shipped in sorted((CONFIG_DIR / "datasets").glob("*.yaml")):  # e.g. data/sample → sample.yaml
            cfg = load_dataset_config(shipped)
            if cfg.root.resolve() == path.resolve():
                return cfg
        root = glioma_layout_root(path)
        if root is None:
            raise ConfigError(
                f"--data {text!r}: folder has neither dataset/spec/ nor spec/ (the Glioma C6 layout)"
            )
        return load_dataset_config(glioma_yaml, root=root)
    raise ConfigError(
        f"--data {text!r}: not 'auto', a shipped dataset name "
        f"({', '.join(p.stem for p in sorted((CONFIG_DIR / 'datasets').glob('*.yaml')))}), "
        "a dataset YAML or a folder"
    )


def find_annotation_file(split_dir: Path) -> Path:
    """The single COCO JSON of a split folder (searched in the folder, then one level down)."""
    if not split_dir.is_dir():
        raise DataError(f"{split_dir}: split folder not found; is the dataset downloaded and the root right?")
    found = sorted(split_dir.glob("*.json")) or sorted(split_dir.glob("*/*.json"))
    if len(found) != 1:
        listing = ", ".join(str(p) for p in found) or "none"
        raise DataError(f"{split_dir}: expected exactly one COCO JSON file, found {len(found)} ({listing})")
    return found[0]


def load_split(cfg: DatasetConfig, ref: str) -> list[Sample]:
    """Samples of a ``part/split`` with its targets validated against the JSON's category names."""
    split_dir = cfg.split_dir(ref)
    json_path = find_annotation_file(split_dir)
    samples, categories = load_coco(json_path, _split_images_dir(split_dir))
    check_targets(cfg.targets_of(ref), set(categories.values()), json_path)
    return samples


def check_targets(targets: dict[str, Sequence[str]], present: set[str], json_path: Path) -> None:
    """Every category name a target uses must exist in the annotation file."""
    for target, names in targets.items():
        unknown = [n for n in names if n not in present]
        if unknown:
            raise ConfigError(
                f"target {target!r} uses categor{'y' if len(unknown) == 1 else 'ies'} "
                f"{', '.join(map(repr, unknown))} not found in {json_path}; names present: "
                f"{', '.join(map(repr, sorted(present)))} (fix the dataset YAML)"
            )


def select(samples: Iterable[Sample], categories: Sequence[str], as_name: str) -> list[Sample]:
    """Keep only instances of `categories`, renamed to `as_name` (one target, or one class)."""
    wanted = set(categories)
    return [
        s.with_instances(i.with_category(as_name) for i in s.instances if i.category in wanted)
        for s in samples
    ]


def as_classes(samples: Iterable[Sample], cfg: DatasetConfig, ref: str) -> list[Sample]:
    """Rename instances to the dataset's class names (for multiclass models); others are dropped."""
    targets = cfg.targets_of(ref)
    to_class = {cat: cls for cls in cfg.classes for cat in targets.get(cls, ())}
    return [
        s.with_instances(i.with_category(to_class[i.category]) for i in s.instances if i.category in to_class)
        for s in samples
    ]


def split_refs(cfg: DatasetConfig) -> list[str]:
    """Every ``part/split`` the config defines, in YAML order."""
    return [f"{part}/{split}" for part, p in cfg.parts.items() for split in p.splits]


def _split_images_dir(split_dir: Path) -> Path:
    return split_dir / "images" if (split_dir / "images").is_dir() else split_dir


def split_images(cfg: DatasetConfig, ref: str) -> tuple[Path, list[list[Any]], list[Path]]:
    """What a split is made of: its annotation JSON, the JSON's image entries ``[id, file_name, width,
    height]`` and the image files they name (in order).

    For content keys: the entries are read once per version of the JSON (`harness.digest.derived`), not on
    every resume; a malformed entry is left to the loader.
    """
    from harness import digest
    from harness.coco import image_path_of

    split_dir = cfg.split_dir(ref)
    json_path = find_annotation_file(split_dir)
    images_dir = _split_images_dir(split_dir)
    entries = digest.derived(json_path, "coco-images", _image_entries)
    return json_path, entries, [image_path_of(json_path, images_dir, e[1]) for e in entries]


def _image_entries(json_path: Path) -> list[list[Any]]:
    from harness.coco import read_json

    data = read_json(json_path)
    entries = data.get("images") if isinstance(data, dict) else None
    keep = [e for e in entries or () if isinstance(e, dict) and isinstance(e.get("file_name"), str) and e["file_name"]]
    return [[e.get("id"), e["file_name"], e.get("width"), e.get("height")] for e in keep]


def validate_samples(samples: Sequence[Sample], check_images: bool = True,
                     targets: dict[str, tuple[str, ...]] | None = None) -> dict[str, Any]:
    """Counts per category and target (images, instances, overlapping pairs) and the problems/warnings.

    Reads every image (``check_images``) to catch missing, empty, corrupt or wrongly sized files; each one is
    a problem naming the file. Overlaps (`harness.overlaps`): within a category, between two categories, per
    target and over all; two annotations of one category with the same mask (IoU 1) are a problem naming both.
    """
    from tqdm import tqdm

    from harness.overlaps import OverlapCounts

    problems: list[str] = []
    warnings: list[str] = []
    cats: dict[str, dict[str, int]] = {}
    overlaps = OverlapCounts(targets or {})
    for sample in tqdm(samples, desc="validate", unit="img"):
        warnings.extend(sample.extra.get("warnings", ()))
        if check_images:
            try:
                sample.load_image()
            except DataError as exc:
                problems.append(str(exc))
        insts = sample.instances
        pairs = overlaps.add(insts)
        problems += [_duplicate(insts[a], insts[b], insts[a].category) for a, b in pairs
                     if insts[a].category == insts[b].category and _same_mask(insts[a], insts[b])]
        for cat in dict.fromkeys(i.category for i in insts):
            row = cats.setdefault(cat, {"images": 0, "instances": 0, "overlapping_pairs": 0, "empty": 0})
            row["images"] += 1
        for inst in insts:
            row = cats[inst.category]
            row["instances"] += 1
            if inst.area == 0:
                row["empty"] += 1
                warnings.append(f"{inst.source}: rasterises to 0 pixels (a degenerate polygon)")
    for cat, row in cats.items():
        row["overlapping_pairs"] = int(overlaps.within[cat])
    return {
        "images": len(samples),
        "instances": sum(len(s.instances) for s in samples),
        "overlapping_pairs": overlaps.all,
        "categories": dict(sorted(cats.items())),
        "category_pairs": dict(sorted(overlaps.between.items())),
        "targets": overlaps.targets_dict(),
        "problems": problems,
        "warnings": warnings,
    }


def _same_mask(a: Any, b: Any) -> bool:
    return a.bbox == b.bbox and bool((a.crop == b.crop).all())


def _duplicate(first: Any, second: Any, category: str) -> str:
    """Problem text for two annotations with the same mask and category (IoU 1): one would be a FN forever."""
    other = first.source.split(": ", 1)[-1].split(" (")[0]
    return (f"{second.source}: exact duplicate of {other} (same mask, same category {category!r}, IoU 1); "
            "delete one of the two — a duplicate can never be matched and counts as a missed cell")


def validate(
    cfg: DatasetConfig, refs: Sequence[str] | None = None, check_images: bool = True
) -> dict[str, Any]:
    """Validate every split of a dataset and collect, rather than stop at, the problems found.

    A split whose JSON cannot be loaded is one problem (the loader's message names file and item); the other
    splits are still checked. Image files in a split folder that the JSON does not list are warnings.
    """
    report: dict[str, Any] = {"dataset": cfg.name, "root": str(cfg.root), "splits": {}}
    for ref in refs or split_refs(cfg):
        entry: dict[str, Any]
        try:
            split_dir = cfg.split_dir(ref)
            json_path = find_annotation_file(split_dir)
            load_warnings: list[str] = []
            images_dir = _split_images_dir(split_dir)
            samples, categories = load_coco(json_path, images_dir, warnings=load_warnings)
            check_targets(cfg.targets_of(ref), set(categories.values()), json_path)
        except (DataError, ConfigError) as exc:
            report["splits"][ref] = {"images": 0, "instances": 0, "overlapping_pairs": 0, "categories": {},
                                     "category_pairs": {}, "targets": {}, "problems": [str(exc)],
                                     "warnings": []}
            continue
        entry = {"json": str(json_path), **validate_samples(samples, check_images, cfg.targets_of(ref))}
        listed = {s.image_path.name for s in samples}
        for path in sorted(images_dir.iterdir()):
            if path.suffix.lower() in IMAGE_SUFFIXES and path.name not in listed:
                entry["warnings"].append(f"{path}: image file is not listed in {json_path}")
        report["splits"][ref] = entry
    report["problems"] = sum(len(e["problems"]) for e in report["splits"].values())
    report["warnings"] = sum(len(e["warnings"]) for e in report["splits"].values())
    return report
