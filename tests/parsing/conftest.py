"""Fixtures for parsing tests: a transparent colour-feature extractor and tiny synthetic objects."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vlpart.parsing import BaseObject, Features
from vlpart.parsing.features import build_feature_extractor

CELL = 8


class ColourExtractor:
    """A stand-in backbone whose features are readable by eye.

    Dense feature of a cell = its mean normalised RGB plus a constant 0.5 (so black cells still
    have a direction); CLS = mean colour of the image; saliency = mean brightness per cell,
    min-max normalised. Counts the images it has seen.
    """

    name = "colour"
    identity = "colour/test"
    image_mean = (0.5, 0.5, 0.5)
    image_std = (0.5, 0.5, 0.5)
    stride = CELL
    patch_size = CELL
    size_divisor = CELL
    device = torch.device("cpu")

    def __init__(self) -> None:
        self.images_seen = 0

    def __call__(self, images: torch.Tensor) -> Features:
        self.images_seen += images.shape[0]
        cells = F.avg_pool2d(images, CELL)  # [B, 3, h, w]
        dense = torch.cat([cells, torch.full_like(cells[:, :1], 0.5)], dim=1).permute(0, 2, 3, 1)
        brightness = cells.mean(dim=1).flatten(1)
        lo, hi = brightness.min(1, keepdim=True).values, brightness.max(1, keepdim=True).values
        saliency = ((brightness - lo) / (hi - lo)).view_as(cells[:, 0])
        return Features(
            cls=images.mean(dim=(2, 3)),
            dense=dense,
            saliency=saliency,
            stride=CELL,
            patch_size=CELL,
        )


@pytest.fixture
def colour_extractor() -> ColourExtractor:
    return ColourExtractor()


@pytest.fixture(scope="module")
def dino_random():
    """Random-init DINO ViT-S/8 (stride 8), built once per module with a fixed seed."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return build_feature_extractor("dino_vits8", weights=None)


HEAD, TORSO, TAIL = (40, 200, 60), (200, 120, 50), (30, 40, 220)


def animal(height: int, width: int, *, mirrored: bool = False, seed: int = 0) -> tuple:
    """An ellipse with a green head, orange torso and blue tail on a dark noisy background.

    Returns:
        ``(image [H, W, 3] uint8, object mask [H, W], part masks [3, H, W] head/torso/tail)``.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    obj = ((yy - height / 2) / (0.4 * height)) ** 2 + ((xx - width / 2) / (0.42 * width)) ** 2 < 1
    left, right = xx < 0.35 * width, xx >= 0.7 * width
    head, tail = (obj & right, obj & left) if mirrored else (obj & left, obj & right)
    torso = obj & ~head & ~tail
    image = rng.integers(0, 30, (height, width, 3)).astype(np.uint8)
    for mask, colour in ((head, HEAD), (torso, TORSO), (tail, TAIL)):
        image[mask] = colour
    return image, obj, np.stack([head, torso, tail])


def animal_object(height: int, width: int, category: str = "cat", **kwargs) -> BaseObject:
    """:func:`animal` as a base object with parts ``{category}:head/torso/tail``."""
    image, obj, parts = animal(height, width, **kwargs)
    names = [f"{category}:{p}" for p in ("head", "torso", "tail")]
    return BaseObject(image, obj, parts, names, category, source=f"{category}{height}x{width}")


@pytest.fixture
def make_animal():
    """Factory of synthetic animals: see :func:`animal`."""
    return animal


@pytest.fixture
def make_base_object():
    """Factory of synthetic base objects: see :func:`animal_object`."""
    return animal_object


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: one intra-op thread is faster than two on the shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
