"""The data layer's former single module, kept only so that existing imports keep working.

Its pieces now live in `harness.records` (Instance, Sample), `harness.masks` (rasteriser, RLE codec),
`harness.coco` (COCO reading) and `harness.images` (image reading); import from those. The adapters still
import from here while they are reorganised (issue 16); this module goes once they do not.
"""

from __future__ import annotations

from harness.coco import OUTSIDE_TOLERANCE, image_path_of, load_coco, parse_segmentation, read_json
from harness.images import IMAGE_SUFFIXES, normalize_percentile, read_image, to_gray, to_uint8
from harness.masks import BBox, rasterize_polygons, rle_counts, rle_to_crop, tighten
from harness.records import Instance, Sample

__all__ = ["IMAGE_SUFFIXES", "OUTSIDE_TOLERANCE", "BBox", "Instance", "Sample", "image_path_of", "load_coco",
           "normalize_percentile", "parse_segmentation", "rasterize_polygons", "read_image", "read_json",
           "rle_counts", "rle_to_crop", "tighten", "to_gray", "to_uint8"]
