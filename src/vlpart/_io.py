"""File primitives shared by every module: atomic writes and the one image reader.

Every image vlpart reads (prediction, training, evaluation, parsing, conversion) goes through
:func:`read_image`, so EXIF orientation, the pixel limit, pixel-mode conversion and the error
texts are the same everywhere.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = [
    "MAX_PIXELS",
    "MAX_PIXELS_ENV",
    "atomic_write",
    "read_image",
    "read_image_size",
    "write_json_atomic",
    "write_text_atomic",
]

# Largest image (width x height) read by default: above any camera photo, below the size whose
# decoded RGB (450 MB) and model input no longer fit a laptop. ``$VLPART_MAX_PIXELS`` or
# ``max_pixels=`` change it.
MAX_PIXELS = 150_000_000
MAX_PIXELS_ENV = "VLPART_MAX_PIXELS"

# Pixel modes with an alpha channel: composited over white (what viewers show for a page).
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_BACKGROUND = (255, 255, 255)
# EXIF orientations 5-8 swap width and height.
_TRANSPOSED_ORIENTATIONS = (5, 6, 7, 8)
_EXIF_ORIENTATION = 0x0112

ImageSource = str | Path | Image.Image | np.ndarray


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Let ``write`` fill a temporary file beside ``path``, then rename it onto ``path``.

    A crash or an exception never leaves a half-written ``path`` (the temporary file is removed),
    and concurrent writers (DDP ranks) each rename a complete file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json_atomic(data: Any, path: str | Path) -> Path:
    """Write ``data`` as compact JSON to ``path`` atomically."""
    return write_text_atomic(path, json.dumps(data, separators=(",", ":")))


def read_image(image: ImageSource, *, max_pixels: int | None = None) -> np.ndarray:
    """The one image reader: ``np.ndarray[H, W, 3]`` uint8 RGB (writable, C-contiguous).

    * EXIF orientation is applied (a portrait phone photo comes out upright, as viewers show it);
    * 16-bit and 32-bit integer (``I;16*``, ``I``) and float (``F``) images are scaled to 8 bit,
      not clipped: 16-bit values by 255/65535; ``I`` values within 0..65535 likewise, others
      min-max; ``F`` values within [0, 1] by 255, within [0, 255] as they are, others min-max;
    * alpha (``RGBA``, ``LA``, ``PA``, palette with transparency) is composited over white;
      ``CMYK``, ``YCbCr``, ``L``, ``1`` and palettes are converted to RGB.

    Args:
        image: a file path, a PIL image, or an ``np.ndarray[H, W, 3]`` uint8 RGB (validated and
            returned as it is).
        max_pixels: largest ``width * height`` accepted; ``None`` reads ``$VLPART_MAX_PIXELS``,
            else :data:`MAX_PIXELS`.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a readable image, an image above the pixel limit, an unsupported pixel
            mode, non-finite float pixels, or an array of the wrong shape or dtype; the message
            starts with the file name.
        TypeError: ``image`` is none of the accepted types.
    """
    if isinstance(image, np.ndarray):
        return _check_array(image)
    if isinstance(image, Image.Image):
        name = getattr(image, "filename", "") or "image"
        _check_pixels(image.size, name, max_pixels)
        return _to_rgb(ImageOps.exif_transpose(image), name)
    if not isinstance(image, str | Path):
        raise TypeError(
            f"unsupported image type {type(image).__name__}; give a path, a PIL image or an "
            "np.ndarray[H, W, 3] uint8"
        )
    path = Path(image)
    with _open(path, max_pixels) as opened:
        try:
            return _to_rgb(ImageOps.exif_transpose(opened), str(path))
        except (OSError, SyntaxError) as err:  # truncated or corrupt pixel data
            raise ValueError(f"{path}: not a readable image ({err})") from None


def read_image_size(path: str | Path, *, max_pixels: int | None = None) -> tuple[int, int]:
    """``(H, W)`` of an image file as :func:`read_image` returns it (EXIF orientation applied),
    from the header only. Raises as :func:`read_image` does."""
    path = Path(path)
    with _open(path, max_pixels) as opened:
        width, height = opened.size
        if opened.getexif().get(_EXIF_ORIENTATION) in _TRANSPOSED_ORIENTATIONS:
            width, height = height, width
    return height, width


def _open(path: Path, max_pixels: int | None) -> Image.Image:
    """Open ``path`` lazily (header only) and check its pixel count."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: image not found")
    limit = _pixel_limit(max_pixels)
    try:
        with warnings.catch_warnings():
            # We apply our own limit below; Pillow's warning would only repeat it.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened = Image.open(path)
    except Image.DecompressionBombError as err:
        # Pillow refuses before we see the size; its message carries the pixel count.
        found = re.search(r"\((\d+) pixels\)", str(err))
        size = f"{int(found.group(1)) / 1e6:.1f} megapixels" if found else "too many pixels"
        raise ValueError(
            f"{path}: image has {size}, above the limit of "
            f"{min(limit, 2 * Image.MAX_IMAGE_PIXELS) / 1e6:.1f} megapixels"
        ) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise ValueError(f"{path}: not a readable image ({err})") from None
    try:
        _check_pixels(opened.size, str(path), limit)
    except ValueError:
        opened.close()
        raise
    return opened


def _pixel_limit(max_pixels: int | None) -> int:
    if max_pixels is not None:
        return int(max_pixels)
    env = os.environ.get(MAX_PIXELS_ENV)
    if env is None:
        return MAX_PIXELS
    try:
        value = int(env)
    except ValueError:
        raise ValueError(
            f"${MAX_PIXELS_ENV}: expected a whole number of pixels, got {env!r}"
        ) from None
    if value < 1:
        raise ValueError(f"${MAX_PIXELS_ENV}: must be positive, got {value}")
    return value


def _check_pixels(size: tuple[int, int], name: str, max_pixels: int | None) -> None:
    width, height = size
    limit = _pixel_limit(max_pixels)
    if width < 1 or height < 1:
        raise ValueError(f"{name}: image is empty ({width}x{height})")
    if width * height > limit:
        raise ValueError(
            f"{name}: image is {width}x{height} ({width * height / 1e6:.1f} megapixels), above "
            f"the limit of {limit / 1e6:.1f} megapixels; set ${MAX_PIXELS_ENV} to read it"
        )


def _check_array(image: np.ndarray) -> np.ndarray:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(
            f"image arrays must be [H, W, 3] uint8 RGB, got {list(image.shape)} {image.dtype}"
        )
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"image array is empty: {list(image.shape)}")
    return image


def _to_rgb(image: Image.Image, name: str) -> np.ndarray:
    """Decode ``image`` and convert its pixel mode to 8-bit RGB (see :func:`read_image`)."""
    mode = image.mode
    if mode == "P" and "transparency" in image.info:
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in _ALPHA_MODES:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*_BACKGROUND, 255))
        return np.array(Image.alpha_composite(background, rgba).convert("RGB"))
    if mode.startswith("I;16") or mode in ("I", "F"):
        gray = _scale_to_uint8(np.asarray(image), mode, name)
        return np.repeat(gray[:, :, None], 3, axis=2)
    try:
        return np.array(image.convert("RGB"))
    except ValueError as err:
        raise ValueError(f"{name}: unsupported pixel mode {mode!r} ({err})") from None


def _scale_to_uint8(values: np.ndarray, mode: str, name: str) -> np.ndarray:
    """One-channel 16/32-bit integer or float pixels -> ``np.ndarray[H, W]`` uint8."""
    values = values.astype(np.float64)
    if not np.isfinite(values).all():
        raise ValueError(f"{name}: float image with NaN or infinite pixels")
    low, high = float(values.min()), float(values.max())
    if mode.startswith("I;16") or (mode == "I" and low >= 0 and high <= 65535):
        scaled = values * (255.0 / 65535.0)
    elif mode == "F" and low >= 0 and high <= 1:
        scaled = values * 255.0
    elif mode == "F" and low >= 0 and high <= 255:
        scaled = values
    else:
        scaled = (values - low) * (255.0 / (high - low)) if high > low else values * 0
    return np.rint(scaled).clip(0, 255).astype(np.uint8)
