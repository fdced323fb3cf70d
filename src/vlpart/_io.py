"""File primitives shared by every module: atomic writes and RGB image reading."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

__all__ = ["atomic_write", "read_rgb", "write_json_atomic", "write_text_atomic"]


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


def read_rgb(path: str | Path, *, max_pixels: int | None = None) -> np.ndarray:
    """``np.ndarray[H, W, 3]`` uint8 RGB (writable) of an image file.

    Args:
        max_pixels: refuse images whose ``width * height`` exceeds this, from the header,
            before decoding (decompression bombs); None: Pillow's own limit only.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a readable image, or is above the pixel limit.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: image not found")
    try:
        with Image.open(path) as image:
            width, height = image.size
            if max_pixels is None or width * height <= max_pixels:
                return np.array(image.convert("RGB"))
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as err:
        raise ValueError(f"{path}: not a readable image ({err})") from None
    raise ValueError(
        f"{path}: image is {width}x{height} ({width * height / 1e6:.1f} megapixels), above the "
        f"limit of {max_pixels / 1e6:.1f} megapixels"
    )
