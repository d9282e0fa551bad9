"""Label-map export (``c6bench data convert --to labelmaps``): one priority-resolved label TIFF per image, and
``conversion.json`` saying what every label value is.

Why one map per target: Glioma C6's categories overlap by design (each soma lies inside its cell). Painted
into one map, a soma cuts a hole into its cell (rule ``last``) or vanishes under it (rule ``first``), so a
label map holds the categories of one target; without ``--target`` the command writes one folder per target.
The record of each image lists, for label value k, the instance it came from (``labels[k - 1]``: its COCO
category and its index among the image's annotations), what was dropped and why
(`harness.convert.resolve_priority`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from harness.errors import ConfigError
from harness.io import atomic_path, write_json
from harness.records import Sample

logger = logging.getLogger(__name__)

MAX_LISTED = 20  # dropped instances printed; the full list is in conversion.json
LABELS_NOTE = "label k is labels[k-1]: [COCO category, index of the instance among the image's annotations]"
TOTAL_KEYS = ("in", "kept", "dropped", "trimmed_pixels")


def select_categories(samples: Sequence[Sample], categories: Sequence[str]) -> list[Sample]:
    """The samples with only the instances of `categories` (names kept: the record tells them apart)."""
    wanted = set(categories)
    return [s.with_instances(i for i in s.instances if i.category in wanted) for s in samples]


def write_label_maps(samples: Sequence[Sample], out: Path, rule: str, min_pixels: int,
                     desc: str = "label maps") -> dict[str, Any]:
    """One label TIFF per image (uint16, or int32 above 65535 labels) and the per-image conversion records."""
    import numpy as np
    import tifffile
    from tqdm import tqdm

    from harness.convert import label_map

    out.mkdir(parents=True, exist_ok=True)
    images: dict[str, Any] = {}
    for sample in tqdm(samples, desc=desc, unit="img"):
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
            "labels": [[inst.category, inst.order] for inst in resolution.instances],
            "warnings": list(sample.extra.get("warnings", ())),
        }
    return images


def convert(samples: Sequence[Sample], out: Path, *, source: str, rule: str, min_pixels: int,
            categories: Sequence[str], warnings: Sequence[str], target: str | None = None) -> dict[str, Any]:
    """Write the label maps of `samples` into `out` and ``out/conversion.json``; returns the record."""
    images = write_label_maps(samples, out, rule, min_pixels,
                              desc=f"label maps {target}" if target else "label maps")
    totals = {key: sum(v[key] for v in images.values()) for key in TOTAL_KEYS}
    record = {
        "source": source,
        "target": target,
        "rule": rule,
        "min_pixels": min_pixels,
        "categories": list(categories),
        "labels_format": LABELS_NOTE,
        "totals": {"images": len(images), **totals, "warnings": len(warnings)},
        "images": images,
    }
    write_json(out / "conversion.json", record, indent=1)
    return record


def summary_lines(record: Mapping[str, Any], out: Path, limit: int = MAX_LISTED) -> list[str]:
    """What the command prints for one folder: the totals, then at most `limit` dropped instances."""
    t = record["totals"]
    head = f"target {record['target']}: " if record.get("target") else ""
    lines = [f"{head}{t['images']} label maps in {out} ({', '.join(record['categories'])}; rule "
             f"{record['rule']}, min_pixels {record['min_pixels']}): {t['in']} instances in, {t['kept']} "
             f"kept, {t['dropped']} dropped; warnings: {t['warnings']}"]
    drops = [(name, d) for name, row in record["images"].items() for d in row["dropped_detail"]]
    lines += [f"  {name}: instance {d['order']} ({d['category']}) dropped: {d['reason']}"
              for name, d in drops[:limit]]
    if len(drops) > limit:
        lines.append(f"  ... and {len(drops) - limit} more (all in {out / 'conversion.json'})")
    return lines
