"""The result record of one image: instances in original pixels, COCO export, overlay rendering."""

from __future__ import annotations

import colorsys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from vlpart._io import read_image
from vlpart.coco import result_records

__all__ = ["Prediction", "assign_parents"]

# A part belongs to an object instance of its object category when at least this fraction of
# the part's mask lies inside the object's mask.
PARENT_CONTAINMENT_THRESH = 0.5


@dataclass
class Prediction:
    """Instances found in one image, in the image's original pixel frame.

    Attributes:
        boxes (np.ndarray[N, 4], float32): XYXY, absolute pixels.
        scores (np.ndarray[N], float32): detection scores in [0, 1], descending.
        labels (list[str]): category names (``dog:head``, ``dog``).
        label_ids (np.ndarray[N], int64): rows of the vocabulary the labels come from.
        category_ids (np.ndarray[N], int64): the COCO category id of each instance
            (:func:`vlpart.coco.category_ids` of the vocabulary), written by :meth:`to_coco`.
        masks (np.ndarray[N, H, W], bool): instance masks.
        parent (np.ndarray[N], int64): index of the object instance each part belongs to (by
            mask containment), -1 for objects and for parts without a containing object.
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: list[str]
    label_ids: np.ndarray
    category_ids: np.ndarray
    masks: np.ndarray
    parent: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def image_size(self) -> tuple[int, int]:
        """``(H, W)`` of the image."""
        return int(self.masks.shape[1]), int(self.masks.shape[2])

    def to_coco(self, image_id: int) -> list[dict]:
        """COCO results: one dict per instance with ``bbox`` (XYWH), ``score``,
        ``category_id`` (from :attr:`category_ids`), ``segmentation`` (compressed RLE,
        ``counts`` as str), ``label`` and ``parent``."""
        out = result_records(image_id, self.boxes, self.scores, self.category_ids, self.masks)
        for record, label, parent in zip(out, self.labels, self.parent, strict=True):
            record["label"] = label
            record["parent"] = int(parent)
        return out

    def render(
        self, image: str | Path | np.ndarray | Image.Image, *, alpha: float = 0.45
    ) -> Image.Image:
        """Overlay masks, boxes and ``label score`` tags on ``image`` (a path,
        ``np.ndarray[H, W, 3]`` uint8 RGB or a PIL image of the prediction's size)."""
        base = read_image(image)
        if base.shape[:2] != self.image_size and len(self):
            raise ValueError(f"image is {base.shape[:2]}, prediction is for {self.image_size}")
        canvas = base.astype(np.float32)
        colors = _palette(len(self))
        for i in np.argsort(-self.masks.reshape(len(self), -1).sum(1)) if len(self) else []:
            m = self.masks[i]
            canvas[m] = (1 - alpha) * canvas[m] + alpha * np.asarray(colors[i], np.float32)
        out = Image.fromarray(canvas.clip(0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(out)
        height, width = base.shape[:2]
        font = ImageFont.load_default(size=max(11, min(height, width) // 40))
        line = max(1, min(height, width) // 300)
        for i in range(len(self)):
            x0, y0, x1, y1 = (float(v) for v in self.boxes[i])
            draw.rectangle((x0, y0, x1, y1), outline=colors[i], width=line)
            text = f"{self.labels[i]} {self.scores[i]:.2f}"
            tx0, ty0, tx1, ty1 = draw.textbbox((x0, y0), text, font=font)
            ty = y0 - (ty1 - ty0) - 2 if y0 - (ty1 - ty0) - 2 >= 0 else y0
            draw.rectangle((tx0, ty, tx1 + 2, ty + (ty1 - ty0) + 2), fill=colors[i])
            draw.text((x0 + 1, ty + 1 - (ty0 - y0)), text, font=font, fill=_ink(colors[i]))
        return out


def assign_parents(masks: np.ndarray, objects: list[str], parts: list[str | None]) -> np.ndarray:
    """Link each part instance to the object instance that contains it.

    A part of object ``o`` (``parts[i] is not None``, ``objects[i] == o``) is linked to the
    instance ``j`` with ``parts[j] is None`` and ``objects[j] == o`` whose mask covers the largest
    fraction of the part's mask, if that fraction is at least ``PARENT_CONTAINMENT_THRESH``.

    Args:
        masks (np.ndarray[N, H, W], bool): instance masks.
        objects: object name of each instance (``dog`` for ``dog`` and for ``dog:head``).
        parts: part name of each instance, ``None`` for objects.

    Returns:
        np.ndarray[N], int64: parent index, -1 where there is none.
    """
    n = len(objects)
    parent = np.full(n, -1, dtype=np.int64)
    object_idx = [j for j in range(n) if parts[j] is None]
    if not object_idx:
        return parent
    flat = masks.reshape(n, -1).astype(np.float32)
    overlap = flat @ flat[object_idx].T  # [N, num_objects] intersection areas
    area = flat.sum(1)
    for i in range(n):
        if parts[i] is None or area[i] == 0:
            continue
        same = [k for k, j in enumerate(object_idx) if objects[j].lower() == objects[i].lower()]
        if not same:
            continue
        frac = overlap[i, same] / area[i]
        best = int(np.argmax(frac))
        if frac[best] >= PARENT_CONTAINMENT_THRESH:
            parent[i] = object_idx[same[best]]
    return parent


def _palette(n: int) -> list[tuple[int, int, int]]:
    """``n`` well-separated saturated colours (golden-ratio hue steps)."""
    return [
        tuple(int(255 * c) for c in colorsys.hsv_to_rgb((i * 0.618034) % 1.0, 0.75, 0.95))
        for i in range(n)
    ]


def _ink(color: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black or white text, whichever reads better on ``color``."""
    luminance = 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]
    return (0, 0, 0) if luminance > 140 else (255, 255, 255)
