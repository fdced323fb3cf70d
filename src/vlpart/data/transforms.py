"""Training transforms on ``(image, target)`` pairs; every random choice comes from a generator.

A target is a dict with ``boxes`` (Tensor[N, 4] float32, XYXY absolute pixels), optionally
``masks`` (Tensor[N, H, W] uint8) and anything else, which is passed through unchanged. Images are
Tensor[3, H, W] uint8.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

from vlpart.core.errors import InputError

__all__ = ["Compose", "RandomHorizontalFlip", "ResizeShortestEdge", "Transform"]

Transform = Callable[[Tensor, dict, torch.Generator], tuple[Tensor, dict]]


class Compose:
    """Apply transforms in order, sharing one generator."""

    def __init__(self, transforms: Sequence[Transform]) -> None:
        self.transforms = list(transforms)

    def __call__(
        self, image: Tensor, target: dict, generator: torch.Generator
    ) -> tuple[Tensor, dict]:
        for t in self.transforms:
            image, target = t(image, target, generator)
        return image, target

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"


class ResizeShortestEdge:
    """Resize so the short side is one of ``short_sides`` (drawn uniformly) and the long side is
    at most ``max_size``; boxes are scaled, masks resized with nearest neighbour.

    The scale is ``min(short / min(h, w), max_size / max(h, w))`` and the new size
    ``int(h * scale + 0.5)``, as in the reference preprocessing.
    """

    def __init__(self, short_sides: int | Sequence[int], *, max_size: int) -> None:
        sides = [short_sides] if isinstance(short_sides, int) else list(short_sides)
        if not sides or min(sides) <= 0 or max_size <= 0:
            raise InputError(
                f"short sides {sides} and max_size {max_size} must be positive integers"
            )
        self.short_sides = sides
        self.max_size = max_size

    def __call__(
        self, image: Tensor, target: dict, generator: torch.Generator
    ) -> tuple[Tensor, dict]:
        pick = int(torch.randint(len(self.short_sides), (1,), generator=generator))
        h, w = image.shape[-2:]
        scale = min(self.short_sides[pick] / min(h, w), self.max_size / max(h, w))
        new_h, new_w = max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5))
        if (new_h, new_w) == (h, w):
            return image, target
        image = F.resize(image, [new_h, new_w], antialias=True)
        target = dict(target)
        boxes = target["boxes"]
        factor = boxes.new_tensor([new_w / w, new_h / h, new_w / w, new_h / h])
        target["boxes"] = boxes * factor
        if "masks" in target:
            masks = target["masks"]
            target["masks"] = (
                F.resize(masks, [new_h, new_w], interpolation=InterpolationMode.NEAREST_EXACT)
                if len(masks)
                else masks.new_zeros((0, new_h, new_w))
            )
        return image, target

    def __repr__(self) -> str:
        return f"ResizeShortestEdge({self.short_sides}, max_size={self.max_size})"


class RandomHorizontalFlip:
    """Mirror the image, its boxes and masks left-right with probability ``p``."""

    def __init__(self, p: float = 0.5) -> None:
        if not 0.0 <= p <= 1.0:
            raise InputError(f"flip probability must be in [0, 1], got {p}")
        self.p = p

    def __call__(
        self, image: Tensor, target: dict, generator: torch.Generator
    ) -> tuple[Tensor, dict]:
        if float(torch.rand((), generator=generator)) >= self.p:
            return image, target
        h, w = image.shape[-2:]
        target = dict(target)
        boxes = tv_tensors.BoundingBoxes(target["boxes"], format="XYXY", canvas_size=(h, w))
        target["boxes"] = F.horizontal_flip(boxes).as_subclass(Tensor)
        if "masks" in target:
            target["masks"] = target["masks"].flip(-1)
        return image.flip(-1), target

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"
