"""Metrics: overlap-aware matching and the paper's scores (numpy/scipy/pycocotools/scikit-image only).

- `metrics.matching`: IoU between instance sets that may overlap within a set (bounding-box prefilter +
  crop intersections), optimal one-to-one matching per IoU threshold, the boundary (outer frame) rule.
- `metrics.scores`: TP/FP/FN → precision, recall, F1, AP = TP/(TP+FP+FN); pooled and per-image means,
  bootstrap intervals.
- `metrics.morphology`: per-instance shape descriptors.

Nothing here imports `harness`: instances only need ``.bbox`` and ``.crop`` (`metrics.matching.Masked`).
"""
