"""CellSeg1's automatic mask generator: a point grid over the image and its crop layers → candidate masks.

Follows ``segment_anything``'s ``SamAutomaticMaskGenerator`` as CellSeg1 configures it (``example_config.yaml``),
on the LoRA SAM at its model size: the image squashed to the work size; for each crop box of
``crop_n_layers`` (SAM's ``generate_crop_boxes``) the crop resized to the model size, a point grid of
``points_per_side``² prompts (SAM's ``build_all_layer_point_grids``) decoded in batches; kept: predicted IoU
>= the cut, stability >= ``stability_score_thresh``, not touching an inner crop edge (a cut-off cell), area
below ``max_mask_region_area_ratio`` of the image and at least ``min_mask_region_area`` after keeping the
largest connected piece. Then (`nms`) mask-IoU NMS, and masks resized back to the image (`to_instances`).

Deviation, on purpose: ``min_mask_region_area`` keeps a mask's largest piece and drops the mask when that is
smaller (SAM's ``postprocess_small_regions`` fills holes and removes islands instead).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from adapters._upstream.cellseg1.augment import resize

if TYPE_CHECKING:
    import torch
    from torch import nn

    from harness.records import Instance

logger = logging.getLogger(__name__)

GENERATORS = ("cellseg1", "sam")  # this generator, or plain SAM's own (`plain_sam`)


@dataclass
class Candidate:
    """One generated mask in work-image coordinates, kept as a bbox crop; `layer` = its crop layer."""

    y0: int
    x0: int
    crop: np.ndarray
    iou: float
    stability: float
    layer: int = 0

    @property
    def score(self) -> float:
        return self.iou * self.stability

    @property
    def box(self) -> tuple[int, int, int, int]:
        return self.y0, self.x0, self.y0 + self.crop.shape[0], self.x0 + self.crop.shape[1]

    bbox = box  # the `metrics.matching.Masked` protocol


@dataclass(frozen=True)
class GeneratorSettings:
    """The generator's fixed settings (the adapter's params of the same names)."""

    image_size: int
    points_per_side: int
    points_per_batch: int
    crop_overlap_ratio: float
    stability_score_thresh: float
    stability_score_offset: float
    mask_nms_thresh: float
    max_mask_region_area_ratio: float
    min_mask_region_area: int


def candidates(sam: nn.Module, work: np.ndarray, gen: GeneratorSettings, iou_floor: float, n_layers: int,
               device: str) -> list[Candidate]:
    """Masks from the point grid over `work` (the squashed image) and its `n_layers` crop layers, each crop
    resized to the model size; only those passing the filters of the module docstring."""
    import torch
    from segment_anything.utils.amg import build_all_layer_point_grids, generate_crop_boxes
    from tqdm import tqdm

    from adapters._upstream.cellseg1.loss import stability
    from adapters._upstream.cellseg1.sam import decode, embed

    s, ws = gen.image_size, work.shape[0]
    boxes, layers = generate_crop_boxes((ws, ws), n_layers, gen.crop_overlap_ratio)
    grids = build_all_layer_point_grids(gen.points_per_side, n_layers, 1)
    max_area = gen.max_mask_region_area_ratio * ws * ws
    out: list[Candidate] = []
    sam.eval()
    with torch.inference_mode():
        for (cx0, cy0, cx1, cy1), layer in tqdm(list(zip(boxes, layers, strict=True)), desc="cellseg1 crops",
                                                leave=False, disable=len(boxes) == 1):
            ch, cw = cy1 - cy0, cx1 - cx0
            emb = embed(sam, resize(np.ascontiguousarray(work[cy0:cy1, cx0:cx1]), s, s)[None], device)
            pts_all = grids[layer] * np.array([s, s])  # grid in model pixels of the resized crop
            for b in range(0, len(pts_all), gen.points_per_batch):
                pts = torch.as_tensor(pts_all[b:b + gen.points_per_batch], dtype=torch.float32, device=device)
                logits, iou = decode(sam, emb, pts)
                logits = torch.nn.functional.interpolate(logits[:, None], size=(ch, cw), mode="bilinear",
                                                         align_corners=False)[:, 0]
                stab = stability(logits, gen.stability_score_offset)
                keep = (iou >= iou_floor) & (stab >= gen.stability_score_thresh)
                for k in torch.nonzero(keep).flatten().tolist():
                    c = _candidate(logits[k] > 0, (cy0, cx0, cy1, cx1), float(iou[k]), float(stab[k]), max_area,
                                   layer, ws, gen.min_mask_region_area)
                    if c is not None:
                        out.append(c)
    return out


def _candidate(mask: torch.Tensor, crop_box: tuple[int, int, int, int], iou: float, stab: float, max_area: float,
               layer: int, work_size: int, min_area: int) -> Candidate | None:
    """A thresholded mask in crop pixels → Candidate in work-image pixels, or None when filtered out."""
    from harness.convert import largest_piece
    from harness.masks import tighten

    m = mask.cpu().numpy()
    if not m.any():
        return None
    ys, xs = np.nonzero(m.any(axis=1))[0], np.nonzero(m.any(axis=0))[0]
    y0, y1, x0, x1 = ys[0], ys[-1] + 1, xs[0], xs[-1] + 1
    cy0, cx0, cy1, cx1 = crop_box
    # drop masks touching an edge of a crop that is not an image edge (cut-off cells)
    if (y0 == 0 and cy0 > 0) or (x0 == 0 and cx0 > 0) or (y1 == m.shape[0] and cy1 < work_size) or \
            (x1 == m.shape[1] and cx1 < work_size):
        return None
    crop = largest_piece(m[y0:y1, x0:x1])
    area = int(crop.sum())
    if area < min_area or area >= max_area:
        return None
    ty, tx, crop = tighten(cy0 + int(y0), cx0 + int(x0), crop)
    return Candidate(ty, tx, crop, iou, stab, layer)


def to_instances(cands: list[Candidate], work_size: int, height: int, width: int,
                 category: str) -> list[Instance]:
    """Candidates on the work image → Instances on the `height` × `width` image (crops resized back)."""
    from harness.records import Instance

    out = []
    sy, sx = height / work_size, width / work_size
    for c in cands:
        y0, x0, y1, x1 = c.box
        fy0, fx0 = int(round(y0 * sy)), int(round(x0 * sx))
        fy1, fx1 = max(fy0 + 1, int(round(y1 * sy))), max(fx0 + 1, int(round(x1 * sx)))
        crop = resize(c.crop, fy1 - fy0, fx1 - fx0)
        if crop.any():
            out.append(Instance.from_mask(category, fy0, fx0, crop, height, width, order=len(out),
                                          score=float(c.iou), source="cellseg1"))
    return out
