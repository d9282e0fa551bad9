"""Rebuild `data/sample/` from the Usiigaci sets in `../shared/data/usiigaci_phase_contrast/`.

Images are re-written losslessly as zlib-compressed TIFF (same uint16 pixels); annotations are split into
one COCO JSON per split, in the layout of the Glioma C6 archive (``spec/<split>/images/*.tif`` plus one
JSON per split). Run from the repository root: ``.venv/bin/python data/sample/make_sample.py [SRC]``.
"""

from __future__ import annotations

import copy
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import tifffile

SPLITS = {"train": ["set18", "set30", "set42"], "valid": ["set19"], "test": ["set28", "set45"]}


def main(src: Path, out: Path) -> None:
    coco = json.loads((src / "coco_from_roisets.json").read_text())
    for split, sets in SPLITS.items():
        images_dir = out / "spec" / split / "images"
        images_dir.mkdir(parents=True, exist_ok=True)
        keep = [img for img in coco["images"] if img["file_name"].split("/")[0] in sets]
        ids = {img["id"] for img in keep}
        split_coco = copy.deepcopy({k: v for k, v in coco.items() if k not in ("images", "annotations")})
        split_coco["images"] = []
        for img in keep:
            set_name = img["file_name"].split("/")[0]
            pixels = tifffile.imread(src / img["file_name"])
            target = images_dir / f"{set_name}.tif"
            tifffile.imwrite(target, pixels, compression="zlib", compressionargs={"level": 9})
            assert np.array_equal(tifffile.imread(target), pixels)
            split_coco["images"].append({**img, "file_name": f"{set_name}.tif"})
        split_coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] in ids]
        (out / "spec" / split / "annotations.coco.json").write_text(json.dumps(split_coco))
    shutil.copy(src / "LICENSE", out / "LICENSE.usiigaci-MIT.txt")


if __name__ == "__main__":
    here = Path(__file__).resolve().parent
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else here.parents[2] / "shared/data/usiigaci_phase_contrast", here)
