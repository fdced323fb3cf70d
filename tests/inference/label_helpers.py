"""Helpers of the labelling tests (``from label_helpers import ...``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

VOCAB = "dog;dog:head,torso"


def make_photos(root: Path, count: int, *, bad: bool = True) -> Path:
    """``count`` small noise images (varied sizes, in two subfolders) and one unreadable file."""
    rng = np.random.default_rng(0)
    for i in range(count):
        folder = root / ("a" if i % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 255, (60 + 3 * i, 90 - 2 * i, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"img{i:02d}.png")
    if bad:
        (root / "a" / "broken.jpg").write_bytes(b"not a jpeg")
    return root
