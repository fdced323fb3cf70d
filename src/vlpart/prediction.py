"""The result record of one image: instances in original pixels, COCO export, overlay rendering."""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from vlpart._io import read_rgb

__all__ = ["Prediction", "assign_parents", "coco_results"]

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
        masks (np.ndarray[N, H, W], bool): instance masks.
        parent (np.ndarray[N], int64): index of the object instance each part belongs to (by
            mask containment), -1 for objects and for parts without a containing object.
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: list[str]
    label_ids: np.ndarray
    masks: np.ndarray
    parent: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def image_size(self) -> tuple[int, int]:
        """``(H, W)`` of the image."""
        return int(self.masks.shape[1]), int(self.masks.shape[2])

    def to_coco(self, image_id: int, category_ids: list[int] | None = None) -> list[dict]:
        """COCO results: one dict per instance with ``bbox`` (XYWH), ``score``,
        ``category_id`` and ``segmentation`` (compressed RLE, ``counts`` as str).

        Args:
            image_id: the image's id in the results file.
            category_ids: category id of each vocabulary row; default ``row + 1``.
        """
        out = coco_results(
            image_id, self.boxes, self.scores, self.label_ids, self.masks, category_ids
        )
        for record, label, parent in zip(out, self.labels, self.parent, strict=True):
            record["label"] = label
            record["parent"] = int(parent)
        return out

    def render(
        self, image: str | Path | np.ndarray | Image.Image, *, alpha: float = 0.45
    ) -> Image.Image:
        """Overlay masks, boxes and ``label score`` tags on ``image`` (a path,
        ``np.ndarray[H, W, 3]`` uint8 RGB or a PIL image of the prediction's size, or of that
        size reduced by a common factor, as a reduced decode of a huge image is; masks are then
        sampled at the image's pixel centres and boxes scaled).

        Masks are blended inside their bounding rectangles only, so memory stays that of the
        image plus the largest mask's rectangle."""
        if isinstance(image, str | Path):
            image = read_rgb(image)
        base = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
        height, width = base.shape[:2]
        full_h, full_w = self.image_size if len(self) else (height, width)
        reduced = height <= full_h and width <= full_w
        if (height, width) != (full_h, full_w) and not (
            reduced and abs(height * full_w - width * full_h) <= max(full_h, full_w)
        ):
            raise ValueError(f"image is {base.shape[:2]}, prediction is for {self.image_size}")
        rows = ((np.arange(height) + 0.5) * full_h / height).astype(np.int64)
        cols = ((np.arange(width) + 0.5) * full_w / width).astype(np.int64)
        canvas = base.copy()
        colors = _palette(len(self))
        areas = [int(m.sum()) for m in self.masks]
        for i in np.argsort(-np.asarray(areas, dtype=np.int64), kind="stable"):
            window = _mask_window(self.masks[i])
            if window is None:
                continue
            # Output pixels whose sample falls in the mask's rectangle.
            r0, r1 = np.searchsorted(rows, [window[0], window[1]])
            c0, c1 = np.searchsorted(cols, [window[2], window[3]])
            m = self.masks[i][np.ix_(rows[r0:r1], cols[c0:c1])]
            region = canvas[r0:r1, c0:c1]
            blended = (1 - alpha) * region[m] + alpha * np.asarray(colors[i], np.float32)
            region[m] = blended.clip(0, 255).astype(np.uint8)
        out = Image.fromarray(canvas)
        draw = ImageDraw.Draw(out)
        font = ImageFont.load_default(size=max(11, min(height, width) // 40))
        line = max(1, min(height, width) // 300)
        box_scale = np.array([width / full_w, height / full_h] * 2, dtype=np.float64)
        for i in range(len(self)):
            x0, y0, x1, y1 = (float(v) for v in self.boxes[i] * box_scale)
            draw.rectangle((x0, y0, x1, y1), outline=colors[i], width=line)
            text = f"{self.labels[i]} {self.scores[i]:.2f}"
            tx0, ty0, tx1, ty1 = draw.textbbox((x0, y0), text, font=font)
            ty = y0 - (ty1 - ty0) - 2 if y0 - (ty1 - ty0) - 2 >= 0 else y0
            draw.rectangle((tx0, ty, tx1 + 2, ty + (ty1 - ty0) + 2), fill=colors[i])
            draw.text((x0 + 1, ty + 1 - (ty0 - y0)), text, font=font, fill=_ink(colors[i]))
        return out


def _mask_window(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """``(top, bottom, left, right)`` bounding rectangle of a bool mask, None if empty."""
    ys = np.flatnonzero(mask.any(axis=1))
    if len(ys) == 0:
        return None
    xs = np.flatnonzero(mask[ys[0] : ys[-1] + 1].any(axis=0))
    return int(ys[0]), int(ys[-1]) + 1, int(xs[0]), int(xs[-1]) + 1


def coco_results(
    image_id: int,
    boxes: np.ndarray,
    scores: np.ndarray,
    label_ids: np.ndarray,
    masks: np.ndarray,
    category_ids: Sequence[int] | None = None,
) -> list[dict]:
    """COCO result dicts of one image's instances.

    Args:
        image_id: the image's id in the results file.
        boxes (np.ndarray[N, 4]): XYXY pixels; written as XYWH ``bbox``.
        scores (np.ndarray[N]): detection scores.
        label_ids (np.ndarray[N]): vocabulary rows.
        masks (np.ndarray[N, H, W], bool): written as compressed RLE (``counts`` as str).
        category_ids: category id of each vocabulary row; default ``row + 1``.
    """
    from pycocotools import mask as mask_utils

    if len(scores) == 0:
        return []
    # One mask at a time: a column-major copy of the whole stack would double its memory.
    rles = [mask_utils.encode(np.asfortranarray(m.astype(np.uint8)[:, :, None]))[0] for m in masks]
    out = []
    for box, score, row, rle in zip(boxes, scores, label_ids, rles, strict=True):
        x0, y0, x1, y1 = (float(v) for v in box)
        out.append(
            {
                "image_id": int(image_id),
                "category_id": category_ids[int(row)] if category_ids else int(row) + 1,
                "bbox": [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)],
                "score": round(float(score), 5),
                "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()},
            }
        )
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
    windows = [_mask_window(m) for m in masks]
    for i in range(n):
        if parts[i] is None or windows[i] is None:
            continue
        same = [j for j in object_idx if objects[j].lower() == objects[i].lower()]
        if not same:
            continue
        top, bottom, left, right = windows[i]
        part = masks[i, top:bottom, left:right]
        # Intersections inside the part's bounding rectangle (nothing of the part lies outside).
        frac = [
            np.count_nonzero(part & masks[j, top:bottom, left:right]) / np.count_nonzero(part)
            for j in same
        ]
        best = int(np.argmax(frac))
        if frac[best] >= PARENT_CONTAINMENT_THRESH:
            parent[i] = same[best]
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
