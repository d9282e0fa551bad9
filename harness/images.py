"""Reading images as the models see them: one 2-D grayscale or ``H×W×3`` RGB array per file, or a clear refusal.

A TIFF can hold more than one image — a time-lapse, a z-stack, channels — and a ``(3, H, W)`` array is an RGB
image with separate colour planes only when the file says so. The decision is the file's own metadata, as
`tifffile` reads it (the series' axes from ImageJ/OME/tifffile descriptions, the photometric interpretation
and samples per pixel), never the shape alone:

* axes ``YX`` → grayscale; ``YXS``/``SYX`` with photometric RGB and 3 or 4 samples → RGB (alpha dropped);
  a gray + alpha pair → the gray plane;
* any other axis longer than one (``T`` time, ``Z`` depth, ``C`` channels, ``Q``/``I`` unnamed frames) → a stack:
  refused with the file, shape and axes, unless ``frame=K`` picks one plane of the single such axis
  (``c6bench predict --frame K``).

Pixel values must be finite (NaN pixels are refused naming the file) and images at least `MIN_SIDE` pixels
on each side (a 1×1 image cannot hold a cell).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from harness.errors import DataError

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")
MIN_SIDE = 8
_RGB = 2  # TIFF photometric interpretation RGB


def _tiff(path: Path, frame: int | None) -> np.ndarray:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        axes, shape = series.axes, tuple(series.shape)
        photometric = int(tif.pages[0].photometric)
        image = series.asarray()
    sizes = dict(zip(axes, shape, strict=True))
    if "Y" not in sizes or "X" not in sizes:
        raise DataError(f"{path}: no image plane in this TIFF (axes {axes}, shape {shape})")
    extra = [a for a in axes if a not in "YXS" and sizes[a] > 1]
    if extra:
        if frame is None or len(extra) > 1:
            n = sizes[extra[0]]
            what = {"T": "time points", "Z": "z-planes", "C": "channels"}.get(extra[0], "frames")
            raise DataError(
                f"{path}: holds {n} {what} of {sizes['X']}x{sizes['Y']} (shape {shape}, axes {axes}): a stack, "
                "not one image; "
                + ("pass --frame K to use one plane, or " if len(extra) == 1 else "")
                + "save the image you mean as its own file"
            )
        if not 0 <= frame < sizes[extra[0]]:
            raise DataError(
                f"{path}: --frame {frame} is out of range; the file has {sizes[extra[0]]} planes "
                f"(axes {axes}), so K is 0..{sizes[extra[0]] - 1}"
            )
        image = np.take(image, frame, axis=axes.index(extra[0]))
        axes = axes.replace(extra[0], "")
    elif frame not in (None, 0):
        raise DataError(f"{path}: --frame {frame} given, but the file holds a single image (axes {axes})")
    keep = [k for k, a in enumerate(axes) if a in "YXS"]
    image = image.reshape([image.shape[k] for k in keep])
    axes = "".join(axes[k] for k in keep)
    if "S" in axes:
        image = np.moveaxis(image, axes.index("S"), -1)
        samples = image.shape[-1]
        if samples in (3, 4) and photometric == _RGB:
            image = image[..., :3]
        elif samples == 2 and photometric != _RGB:
            image = image[..., 0]  # gray + alpha
        elif samples > 1:
            raise DataError(
                f"{path}: {samples} samples per pixel (photometric {photometric}, shape {shape}); "
                "expected grayscale or RGB"
            )
        else:
            image = image[..., 0]
    return image


def _pillow(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as handle:
        if handle.mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV"):
            handle = handle.convert("RGB")
        elif handle.mode == "1":
            handle = handle.convert("L")
        image = np.asarray(handle)
    if image.ndim == 3 and image.shape[-1] == 4:  # RGBA
        image = image[..., :3]
    elif image.ndim == 3 and image.shape[-1] == 2:  # LA
        image = image[..., 0]
    return image


def read_image(path: Path | str, frame: int | None = None) -> np.ndarray:
    """Read one image as stored: 2-D grayscale or ``H×W×3`` (alpha dropped), 8- or 16-bit (or float).

    `frame` picks one plane of a TIFF stack (see the module docstring); any other problem is a `DataError`
    naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"{path}: image file not found" if not path.is_dir() else f"{path}: is a folder, not an image"
        )
    if path.stat().st_size == 0:
        raise DataError(f"{path}: image file is empty (0 bytes); re-download or re-export it")
    try:
        image = _tiff(path, frame) if path.suffix.lower() in (".tif", ".tiff") else _pillow(path)
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - any decoder failure is the same user problem
        raise DataError(
            f"{path}: cannot decode image ({type(exc).__name__}: {exc}); the file is corrupt"
        ) from exc
    if image.size == 0:
        raise DataError(f"{path}: cannot decode image (no pixel data); the file is corrupt")
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[-1] != 3):
        raise DataError(f"{path}: expected a 2-D grayscale or RGB image, got array of shape {image.shape}")
    if min(image.shape[:2]) < MIN_SIDE:
        raise DataError(
            f"{path}: image is {image.shape[1]}x{image.shape[0]} px; at least {MIN_SIDE}x{MIN_SIDE} "
            "is needed to hold a cell"
        )
    if np.issubdtype(image.dtype, np.floating) and not np.isfinite(image).all():
        bad = int((~np.isfinite(image)).sum())
        raise DataError(
            f"{path}: {bad} of {image.size} pixel values are NaN or infinite; fix or re-export the image"
        )
    return image


def to_gray(image: np.ndarray) -> np.ndarray:
    """RGB → grayscale (mean of channels, dtype kept as float32); grayscale passes through."""
    if image.ndim == 2:
        return image
    return image.astype(np.float32).mean(axis=-1)


def _unit(image: np.ndarray, low: float, high: float) -> np.ndarray:
    """float64 copy of `image` with its `low`/`high` percentiles (of the float32 pixels) at 0/1."""
    pixels = np.asarray(image, dtype=np.float32)
    lo, hi = np.percentile(pixels, [low, high])
    if hi <= lo:
        return np.zeros(pixels.shape, dtype=np.float64)
    return (pixels - lo) / (hi - lo)  # float64: the percentiles are float64 scalars (NEP 50)


def normalize_percentile(image: np.ndarray, low: float = 1.0, high: float = 99.0) -> np.ndarray:
    """Scale to float32 so that the `low`/`high` percentiles map to 0/1 (per image, as cellpose does).

    float32 under NumPy 2 too, where the float64 percentiles would otherwise promote the result (NEP 50): a model
    that feeds it to a float32 network must not get float64.
    """
    return _unit(image, low, high).astype(np.float32)


def to_uint8(image: np.ndarray, low: float = 1.0, high: float = 99.0) -> np.ndarray:
    """Percentile-normalised 8-bit copy (for YOLO/SAM inputs and overlays); uint8 input is returned as is."""
    if image.dtype == np.uint8:
        return image
    return (np.clip(_unit(image, low, high), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
