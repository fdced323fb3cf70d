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

__all__ = [
    "DRAFT_MIN_PIXELS",
    "atomic_write",
    "read_rgb",
    "read_rgb_reduced",
    "write_json_atomic",
    "write_text_atomic",
]

# Images with more pixels than this are decoded at a reduced scale where the format allows
# (JPEG's DCT scaling by 1/2, 1/4, 1/8 via ``Image.draft``); smaller ones are decoded exactly.
DRAFT_MIN_PIXELS = 6000 * 6000


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


def read_rgb(path: str | Path) -> np.ndarray:
    """``np.ndarray[H, W, 3]`` uint8 RGB (writable) of an image file.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a readable image.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: image not found")
    try:
        with Image.open(path) as image:
            return np.array(image.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise ValueError(f"{path}: not a readable image ({err})") from None


def read_rgb_reduced(
    path: str | Path, *, min_side: int, min_pixels: int = DRAFT_MIN_PIXELS
) -> tuple[np.ndarray, tuple[int, int]]:
    """Like :func:`read_rgb`, but an image of more than ``min_pixels`` pixels is decoded at the
    smallest scale the format supports natively (JPEG: 1/2, 1/4, 1/8) whose short side is still
    at least ``min_side``; other images and formats are decoded in full.

    Returns:
        ``np.ndarray[h, w, 3]`` uint8 RGB as decoded, and the image's full ``(H, W)``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a readable image.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: image not found")
    try:
        with Image.open(path) as image:
            width, height = image.size
            if width * height > min_pixels and image.format == "JPEG":
                scale = min_side / min(width, height)
                image.draft("RGB", (max(1, int(width * scale)), max(1, int(height * scale))))
            return np.array(image.convert("RGB")), (height, width)
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise ValueError(f"{path}: not a readable image ({err})") from None
