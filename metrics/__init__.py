"""Metrics: overlap-aware matching and the paper's scores (numpy/scipy/pycocotools/scikit-image only)."""
