"""A synthetic replica of Glioma C6 at its published scale, with every expected count known by construction.

Why: the bundled sample has 6 images of 1024²; the real archive cannot be downloaded here. The replica has the
published statistics (Malashin et al.): 75 phase-contrast-like 8-bit images of 2592×1944 in the archive layout
(``dataset/spec/{train,valid,test}``, ``dataset/gen``), spec cells per split 5,387 / 738 / 2,035 labelled *cell type
A* or *cell type B*, 7,833 somata each inside its cell, gen 3,868 cells labelled *cell*. Cells overlap neighbours
on purpose (a fifth of them is placed as overlapping pairs), and a few per image are cut by the image border.

Geometry is built so that every count is unambiguous: cells are ellipses (40-vertex polygons) in the slots of a
grid; a slot holds one cell or one overlapping pair, and everything in a slot stays at least 4 px inside it, so
two slots never touch. A pair's two ellipses overlap by a wide margin; a soma is a scaled copy of its cell's
ellipse near its centre, so it lies inside its cell and never reaches the partner of a pair. Border cells are
placed across the image edge (vertices clipped to the frame). `expected.json`, written beside the data, holds per
split: images, instances per category, overlapping pairs per category / per target / in all, and the instances
that touch the 2-px evaluation frame — what `c6bench data validate`, `data convert` and `evaluate` must report.

``python -m benchmarks.replica --out DIR [--small] [--rgb] [--zip]`` (run from the repository root).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

CATEGORIES = {"cell type A": 1, "cell type B": 2, "soma": 3, "cell": 4}
SPEC_CATEGORIES = ("cell type A", "cell type B", "soma")
#: Targets as in configs/datasets/glioma_c6.yaml (the gen part is scored for cells only).
TARGETS = {"spec": {"cells": ("cell type A", "cell type B"), "type_a": ("cell type A",),
                    "type_b": ("cell type B",), "soma": ("soma",)},
           "gen": {"cells": ("cell",)}}
FRAME = 2  # the evaluation's boundary frame (px)
N_VERTICES = 40
PAIR_AXES = (20.0, 22.0)  # semi-axes of the two cells of an overlapping pair (px)
PAIR_DISTANCE = 33.0  # between their centres (px)
SOMA_SCALE = (0.25, 0.3)  # a soma's semi-axes as a fraction of its cell's


@dataclass(frozen=True)
class SplitSpec:
    """One split: where it goes, how many images and cells, and which categories label its cells."""

    ref: str  # part/split as the dataset YAML names it
    folder: str  # folder under dataset/
    images: int
    cells: int
    part: str = "spec"


@dataclass(frozen=True)
class ReplicaSpec:
    """Sizes and statistics of a replica (`FULL` = the published Glioma C6 numbers)."""

    height: int = 1944
    width: int = 2592
    splits: tuple[SplitSpec, ...] = (
        SplitSpec("spec/train", "spec/train", 30, 5387),
        SplitSpec("spec/valid", "spec/valid", 4, 738),
        SplitSpec("spec/test", "spec/test", 11, 2035),
        SplitSpec("gen/test", "gen", 30, 3868, part="gen"),
    )
    somata: int = 7833  # over all spec cells (8,160): most cells have one
    type_a_fraction: float = 0.55
    pair_fraction: float = 0.2  # of the cells, placed as members of overlapping pairs
    border_per_image: int = 2  # cells cut by the image edge
    slot: int = 112  # grid slot size (px)
    radius: tuple[float, float] = (16.0, 26.0)  # semi-axis range of a single cell's ellipse (px)

    def scaled(self, size: int, images: int = 1) -> ReplicaSpec:
        """Images `size` times smaller per side (same cell size and density), `images` times fewer per split."""
        splits = []
        for s in self.splits:
            n = max(1, s.images // images)
            splits.append(SplitSpec(s.ref, s.folder, n, round(s.cells / s.images / (size * size) * n), s.part))
        spec_cells = sum(s.cells for s in splits if s.part == "spec")
        full_spec = sum(s.cells for s in self.splits if s.part == "spec")
        return ReplicaSpec(self.height // size, self.width // size, tuple(splits),
                           round(self.somata * spec_cells / full_spec), self.type_a_fraction, self.pair_fraction,
                           self.border_per_image, self.slot, self.radius)


FULL = ReplicaSpec()
SMALL = FULL.scaled(2, 4)  # 972 x 1296 px, 7 / 1 / 2 / 7 images: seconds to generate, for the default test tier


@dataclass
class Shape:
    """One annotated ellipse (pixel-corner coordinates) before it is written as a polygon."""

    category: str
    cy: float
    cx: float
    ry: float
    rx: float
    angle: float
    cell: int = -1  # for a soma: index of its cell in the image's shape list

    def polygon(self, height: int, width: int) -> np.ndarray:
        """(N, 2) x, y vertices, clipped to the image."""
        t = np.linspace(0.0, 2.0 * np.pi, N_VERTICES, endpoint=False)
        ca, sa = math.cos(self.angle), math.sin(self.angle)
        x = self.cx + self.rx * np.cos(t) * ca - self.ry * np.sin(t) * sa
        y = self.cy + self.rx * np.cos(t) * sa + self.ry * np.sin(t) * ca
        return np.stack([np.clip(x, 0.0, width), np.clip(y, 0.0, height)], axis=1)


@dataclass
class ImageTruth:
    """What one generated image holds (for the expected counts)."""

    shapes: list[Shape]
    pairs: list[tuple[int, int]] = field(default_factory=list)  # overlapping cell pairs (indices into shapes)
    border: list[int] = field(default_factory=list)  # cells cut by the image edge


def _split_counts(total: int, parts: int) -> list[int]:
    base, extra = divmod(total, parts)
    return [base + (1 if k < extra else 0) for k in range(parts)]


def _cell_labels(rng: np.random.Generator, n: int, part: str, a_fraction: float) -> list[str]:
    if part == "gen":
        return ["cell"] * n
    return ["cell type A" if rng.random() < a_fraction else "cell type B" for _ in range(n)]


def layout_image(spec: ReplicaSpec, n_cells: int, n_somata: int, part: str, rng: np.random.Generator) -> ImageTruth:
    """Place `n_cells` cells (some as overlapping pairs, some across the border) and `n_somata` somata."""
    rows, cols = (spec.height - 8) // spec.slot, (spec.width - 8) // spec.slot
    oy, ox = (spec.height - rows * spec.slot) / 2, (spec.width - cols * spec.slot) / 2
    n_border = min(spec.border_per_image, n_cells)
    n_pairs = min(int(round(spec.pair_fraction * (n_cells - n_border) / 2)), (n_cells - n_border) // 2)
    n_single = n_cells - n_border - 2 * n_pairs
    inner = [(r, c) for r in range(1, rows - 1) for c in range(1, cols - 1)]
    if n_pairs + n_single > len(inner):
        raise ValueError(f"{n_cells} cells do not fit {len(inner)} slots of {spec.slot} px; lower the counts")
    chosen = [inner[k] for k in rng.permutation(len(inner))[: n_pairs + n_single]]
    lo, hi = spec.radius
    labels = iter(_cell_labels(rng, n_cells, part, spec.type_a_fraction))
    truth = ImageTruth([])

    def ellipse(cy: float, cx: float, low: float, high: float) -> Shape:
        ry, rx = rng.uniform(low, high), rng.uniform(low, high)
        return Shape(next(labels), cy, cx, ry, rx, float(rng.uniform(0, np.pi)))

    for k, (r, c) in enumerate(chosen):
        cy, cx = oy + (r + 0.5) * spec.slot, ox + (c + 0.5) * spec.slot
        if k < n_pairs:
            # semi-axes in [PAIR_AXES], centres PAIR_DISTANCE apart: they overlap by >= 7 px along the line between
            # them (20 + 20 - 33), and neither reaches the other's soma (<= 0.3 x 22 px from its centre: 22 + 6.6 < 33)
            theta = rng.uniform(0, 2 * np.pi)
            dy, dx = PAIR_DISTANCE / 2 * math.sin(theta), PAIR_DISTANCE / 2 * math.cos(theta)
            truth.shapes += [ellipse(cy - dy, cx - dx, *PAIR_AXES), ellipse(cy + dy, cx + dx, *PAIR_AXES)]
            truth.pairs.append((len(truth.shapes) - 2, len(truth.shapes) - 1))
        else:
            truth.shapes.append(ellipse(cy + rng.uniform(-8, 8), cx + rng.uniform(-8, 8), lo, hi))
    for k in range(n_border):  # centred on the left (even) or top (odd) edge, away from the corners
        if k % 2 == 0:
            cy, cx = oy + (1.5 + 2 * (k // 2 % max(rows - 3, 1))) * spec.slot, 0.0
        else:
            cy, cx = 0.0, ox + (1.5 + 2 * (k // 2 % max(cols - 3, 1))) * spec.slot
        truth.shapes.append(ellipse(cy, cx, lo, hi))
        truth.border.append(len(truth.shapes) - 1)
    if part == "spec":  # somata: inside their cells, never on a border cell (it may be cut off)
        candidates = [k for k in range(len(truth.shapes)) if k not in truth.border]
        for k in sorted(rng.choice(candidates, size=min(n_somata, len(candidates)), replace=False)):
            cell = truth.shapes[k]
            f = rng.uniform(*SOMA_SCALE)
            truth.shapes.append(Shape("soma", cell.cy, cell.cx, cell.ry * f, cell.rx * f, cell.angle, cell=int(k)))
    return truth


def render(truth: ImageTruth, height: int, width: int, rng: np.random.Generator, rgb: bool) -> np.ndarray:
    """A phase-contrast-like picture: textured background, bright cell bodies with a dark halo, brighter somata."""
    from scipy import ndimage
    from skimage.draw import polygon as fill

    image = ndimage.gaussian_filter(rng.normal(0.0, 14.0, (height, width)), 2.0) + 110.0
    for shape in truth.shapes:
        ys, xs = fill(*_rows_cols(shape.polygon(height, width)), shape=(height, width))
        if shape.category == "soma":
            image[ys, xs] += 18.0
            continue
        halo = Shape(shape.category, shape.cy, shape.cx, shape.ry + 3, shape.rx + 3, shape.angle)
        hy, hx = fill(*_rows_cols(halo.polygon(height, width)), shape=(height, width))
        image[hy, hx] -= 28.0
        image[ys, xs] += 28.0 + 28.0 + rng.normal(0.0, 6.0, ys.size)
    pixels = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    if rgb:
        tint = np.array([1.0, 0.96, 0.9])
        pixels = np.clip(np.rint(pixels[..., None] * tint), 0, 255).astype(np.uint8)
    return pixels


def _rows_cols(poly: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """skimage.draw.polygon fills pixels whose centres (row + 0.5, col + 0.5 in corner coordinates) are inside."""
    return poly[:, 1] - 0.5, poly[:, 0] - 0.5


def _touches_frame(poly: np.ndarray, height: int, width: int) -> bool:
    x, y = poly[:, 0], poly[:, 1]
    return bool(x.min() < FRAME or y.min() < FRAME or x.max() > width - FRAME or y.max() > height - FRAME)


def _polygon_area(poly: np.ndarray) -> float:
    x, y = poly[:, 0], poly[:, 1]
    return float(abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))) / 2.0)


def generate(out: Path, spec: ReplicaSpec = FULL, seed: int = 0, rgb: bool = False) -> dict[str, Any]:
    """Write the replica under ``out/dataset`` and ``out/expected.json``; returns the expected counts."""
    import tifffile
    from tqdm import tqdm

    from harness.io import atomic_path, write_json

    rng = np.random.default_rng(seed)
    root = Path(out) / "dataset"
    spec_cells = sum(s.cells for s in spec.splits if s.part == "spec")
    soma_left, cells_left = spec.somata, spec_cells
    expected: dict[str, Any] = {"seed": seed, "height": spec.height, "width": spec.width, "rgb": rgb, "splits": {}}
    for split in spec.splits:
        folder = root / split.folder
        coco: dict[str, Any] = {"images": [], "annotations": [], "categories": [
            {"id": i, "name": n} for n, i in CATEGORIES.items() if (n == "cell") == (split.part == "gen")]}
        counts = _empty_counts(split.part)
        for index, n_cells in enumerate(tqdm(_split_counts(split.cells, split.images), desc=f"replica {split.ref}",
                                             unit="img")):
            n_somata = 0
            if split.part == "spec":  # spread the somata over the spec images in proportion to their cells
                n_somata = round(soma_left * n_cells / cells_left)
                soma_left, cells_left = soma_left - n_somata, cells_left - n_cells
            truth = layout_image(spec, n_cells, n_somata, split.part, rng)
            name = f"{split.folder.replace('/', '_')}_{index:03d}.tif"
            with atomic_path(folder / "images" / name) as tmp:
                tifffile.imwrite(tmp, render(truth, spec.height, spec.width, rng, rgb),
                                 photometric="rgb" if rgb else "minisblack", compression="zlib")
            image_id = len(coco["images"]) + 1
            coco["images"].append({"id": image_id, "file_name": name, "height": spec.height, "width": spec.width})
            for shape in truth.shapes:
                poly = shape.polygon(spec.height, spec.width)
                x0, y0 = poly.min(axis=0)
                x1, y1 = poly.max(axis=0)
                coco["annotations"].append({
                    "id": len(coco["annotations"]) + 1, "image_id": image_id,
                    "category_id": CATEGORIES[shape.category], "iscrowd": 0,
                    "segmentation": [np.round(poly, 2).ravel().tolist()], "area": round(_polygon_area(poly), 2),
                    "bbox": [round(float(x0), 2), round(float(y0), 2), round(float(x1 - x0), 2),
                             round(float(y1 - y0), 2)],
                })
            _count(counts, truth, spec)
        write_json(folder / "annotations.coco.json", coco)
        counts["images"] = split.images
        expected["splits"][split.ref] = counts
    write_json(Path(out) / "expected.json", expected, indent=1)
    return expected


def _empty_counts(part: str) -> dict[str, Any]:
    cats = SPEC_CATEGORIES if part == "spec" else ("cell",)
    return {"images": 0, "instances": dict.fromkeys(cats, 0), "overlapping_pairs": dict.fromkeys(cats, 0),
            "overlapping_pairs_all": 0, "target_pairs": dict.fromkeys(TARGETS[part], 0),
            "target_instances": dict.fromkeys(TARGETS[part], 0), "touching_frame": dict.fromkeys(cats, 0)}


def _count(counts: dict[str, Any], truth: ImageTruth, spec: ReplicaSpec) -> None:
    """Add one image's counts (by construction: pairs overlap, somata overlap exactly their own cell)."""
    part_targets = TARGETS["spec" if "soma" in counts["instances"] else "gen"]
    for shape in truth.shapes:
        counts["instances"][shape.category] += 1
        if _touches_frame(shape.polygon(spec.height, spec.width), spec.height, spec.width):
            counts["touching_frame"][shape.category] += 1
        for target, cats in part_targets.items():
            counts["target_instances"][target] += shape.category in cats
    somata = sum(s.category == "soma" for s in truth.shapes)
    counts["overlapping_pairs_all"] += len(truth.pairs) + somata
    for i, j in truth.pairs:
        a, b = truth.shapes[i].category, truth.shapes[j].category
        if a == b:
            counts["overlapping_pairs"][a] += 1
        for target, cats in part_targets.items():
            counts["target_pairs"][target] += a in cats and b in cats


def zip_replica(out: Path, zip_path: Path | None = None) -> Path:
    """``dataset.zip`` of ``out/dataset`` (the archive layout `c6bench data fetch` unpacks)."""
    zip_path = Path(zip_path or Path(out) / "dataset.zip")
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_STORED) as archive:
        for path in sorted((Path(out) / "dataset").rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(out).as_posix())
    return zip_path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--small", action="store_true", help="a 4x smaller replica (seconds; for tests)")
    parser.add_argument("--rgb", action="store_true", help="write RGB TIFFs")
    parser.add_argument("--zip", action="store_true", help="also write dataset.zip")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    expected = generate(args.out, SMALL if args.small else FULL, seed=args.seed, rgb=args.rgb)
    if args.zip:
        logger.info("wrote %s", zip_replica(args.out))
    logger.info("wrote %s", args.out / "expected.json")
    logger.info("%s", json.dumps({ref: s["instances"] for ref, s in expected["splits"].items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
