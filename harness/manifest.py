"""What a run's ``manifest.json`` records about the code: the git commit and the package versions."""

from __future__ import annotations

import logging
import platform
import subprocess

from harness import dataset as ds

logger = logging.getLogger(__name__)

PACKAGES = ("numpy", "scipy", "scikit-image", "pycocotools", "tifffile", "torch", "torchvision", "cellpose",
            "ultralytics", "segment-anything", "segmentation-models-pytorch", "peft")


def git_hash() -> str:
    """The checkout's commit (``unknown`` outside git): which code produced a result."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ds.REPO_ROOT, capture_output=True, text=True,
                             timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def versions() -> dict[str, str]:
    """Python and the installed versions of the packages that can change a result."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out
