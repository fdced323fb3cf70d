"""The result record of one image: instances in original pixels, COCO export, overlay rendering."""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from vlpart.core.coco import result_records
from vlpart.core.errors import InputError, MissingDependencyError
from vlpart.core.fileio import read_image

__all__ = ["Prediction", "assign_parents", "palette", "tag_layout"]

# A part belongs to an object instance of its object category when at least this fraction of
# the part's mask lies inside the object's mask.
PARENT_CONTAINMENT_THRESH = 0.5
# What overlays draw by default: at most this many instances per label (a four-legged animal's
# legs), after a per-label suppression of boxes whose intersection with a better-scoring box of
# the same label exceeds this fraction of the smaller of the two, and at most this many in all.
DRAW_TOP_K_PER_LABEL = 4
DRAW_OVERLAP_THRESH = 0.65
DRAW_MAX_INSTANCES = 25
# Pixels of padding around a tag's text.
TAG_PAD = 1


@dataclass
class Prediction:
    """Instances found in one image, in the image's original pixel frame.

    Attributes:
        boxes (np.ndarray[N, 4], float32): XYXY, absolute pixels.
        scores (np.ndarray[N], float32): detection scores in [0, 1], descending.
        labels (list[str]): category names (``dog:head``, ``dog``).
        label_ids (np.ndarray[N], int64): rows of the vocabulary the labels come from.
        category_ids (np.ndarray[N], int64): the COCO category id of each instance
            (:func:`vlpart.core.coco.category_ids` of the vocabulary), written by :meth:`to_coco`.
        masks (np.ndarray[N, H, W], bool): instance masks.
        parent (np.ndarray[N], int64): index of the object instance each part belongs to (by
            mask containment), -1 for objects and for parts without a containing object.
        is_part (np.ndarray[N], bool): whether each label is an object part; ``None`` when not
            recorded (then :meth:`for_display` cannot keep parts within their parents).
        prompts (list[str]): the exact text the text encoder was given for each label
            (``"a dog head"``: the vocabulary's prompt under the template used); ``None`` when
            not recorded.
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: list[str]
    label_ids: np.ndarray
    category_ids: np.ndarray
    masks: np.ndarray
    parent: np.ndarray
    is_part: np.ndarray | None = None
    prompts: list[str] | None = None

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

    def semantic_map(
        self,
        *,
        score_thresh: float = 0.0,
        parts_only: bool = True,
        ignore_label: int = 255,
    ) -> np.ndarray:
        """The instances as one semantic label map (the OV-PARTS format).

        Each pixel takes the label id (vocabulary row) of the highest-scoring instance whose
        mask covers it, among those scoring at least ``score_thresh`` (and, with
        ``parts_only``, being parts: objects would hide their own parts); a pixel no such mask
        covers gets ``ignore_label``.

        Returns:
            np.ndarray[H, W]: uint8 when every label id and ``ignore_label`` fit in 8 bits,
            else int32.

        Raises:
            ValueError: a label id equal to ``ignore_label`` (a vocabulary of more than 255
                classes needs another ignore value, e.g. 65535); ``parts_only`` without
                :attr:`is_part` on a non-empty prediction.
        """
        if parts_only and self.is_part is None and len(self):
            raise InputError("semantic_map(parts_only=True) needs the prediction's is_part flags")
        if np.any(self.label_ids == ignore_label):
            raise InputError(
                f"label id {ignore_label} equals ignore_label; pass another ignore_label"
            )
        keep = self.scores >= score_thresh
        if parts_only and self.is_part is not None:
            keep &= self.is_part
        small = ignore_label < 256 and (len(self) == 0 or int(self.label_ids.max()) < 256)
        out = np.full(self.image_size, ignore_label, dtype=np.uint8 if small else np.int32)
        # Paint from the lowest score up, so that the best-scoring mask of a pixel wins.
        for i in np.argsort(self.scores, kind="stable"):
            if keep[i]:
                out[self.masks[i]] = self.label_ids[i]
        return out

    def to_supervision(self):
        """The instances as a ``supervision.Detections`` (``xyxy``, ``mask``, ``confidence``,
        ``class_id`` = :attr:`label_ids`; ``data["class_name"]`` = :attr:`labels` and
        ``data["parent"]`` = :attr:`parent`, -1 for none), for supervision's annotators,
        trackers and dataset writers.

        Raises:
            MissingDependencyError: supervision is not installed (the ``label`` extra).
        """
        try:
            import supervision as sv
        except ImportError:
            raise MissingDependencyError(
                "to_supervision needs supervision: pip install 'vlpart[label]'"
            ) from None
        return sv.Detections(
            xyxy=self.boxes.astype(np.float32).reshape(-1, 4),
            mask=self.masks.astype(bool),
            confidence=self.scores.astype(np.float32),
            class_id=self.label_ids.astype(np.int64),
            data={
                "class_name": np.array(self.labels, dtype=str),
                "parent": self.parent.astype(np.int64),
            },
        )

    def subset(self, keep: Sequence[int] | np.ndarray) -> Prediction:
        """The instances at indices ``keep``, in that order; ``parent`` is re-indexed into the
        subset (-1 where the parent is not kept)."""
        keep = np.asarray(keep, dtype=np.int64).reshape(-1)
        where = {int(old): new for new, old in enumerate(keep)}
        return Prediction(
            boxes=self.boxes[keep],
            scores=self.scores[keep],
            labels=[self.labels[i] for i in keep],
            label_ids=self.label_ids[keep],
            category_ids=self.category_ids[keep],
            masks=self.masks[keep],
            parent=np.array([where.get(int(self.parent[i]), -1) for i in keep], np.int64),
            is_part=None if self.is_part is None else self.is_part[keep],
            prompts=None if self.prompts is None else [self.prompts[i] for i in keep],
        )

    def for_display(
        self,
        *,
        top_k_per_label: int | None = DRAW_TOP_K_PER_LABEL,
        overlap_thresh: float | None = DRAW_OVERLAP_THRESH,
        max_instances: int | None = DRAW_MAX_INSTANCES,
        parts_within_parent: bool = False,
    ) -> Prediction:
        """The instances worth drawing, best score first: per label, a non-maximum suppression
        (an instance goes when its box overlaps a better one of its label by more than
        ``overlap_thresh`` of the smaller box: near-duplicates and nested copies) and at most
        ``top_k_per_label``; at most ``max_instances`` in all. ``None`` turns a limit off.

        With ``parts_within_parent`` a part is kept only when its parent object is kept, and its
        mask is cut to the parent's mask (needs ``is_part``).
        """
        kept = self._display_indices(
            top_k_per_label=top_k_per_label,
            overlap_thresh=overlap_thresh,
            max_instances=max_instances,
            parts_within_parent=parts_within_parent,
        )
        shown = self.subset(kept)
        if parts_within_parent and len(shown):
            shown.masks = shown.masks.copy()
            for i in np.nonzero(shown.is_part & (shown.parent >= 0))[0]:
                shown.masks[i] &= shown.masks[shown.parent[i]]
        return shown

    def _display_indices(
        self,
        *,
        top_k_per_label: int | None,
        overlap_thresh: float | None,
        max_instances: int | None,
        parts_within_parent: bool,
    ) -> list[int]:
        """The indices :meth:`for_display` keeps, in its order."""
        if parts_within_parent and self.is_part is None and len(self):
            raise InputError("parts_within_parent needs the prediction's is_part flags")
        order = np.argsort(-self.scores, kind="stable")
        kept: list[int] = []
        per_label: dict[str, list[int]] = {}
        for i in order:
            i = int(i)
            same = per_label.setdefault(self.labels[i], [])
            if top_k_per_label is not None and len(same) >= top_k_per_label:
                continue
            if overlap_thresh is not None and same:
                if _overlap_of_smaller(self.boxes[i], self.boxes[same]).max() > overlap_thresh:
                    continue
            same.append(i)
            kept.append(i)
        if parts_within_parent:
            objects = {i for i in kept if not self.is_part[i]}
            kept = [i for i in kept if not self.is_part[i] or int(self.parent[i]) in objects]
        if max_instances is not None:
            kept = kept[:max_instances]
        return kept

    def render(
        self,
        image: str | Path | np.ndarray | Image.Image,
        *,
        alpha: float = 0.45,
        top_k_per_label: int | None = DRAW_TOP_K_PER_LABEL,
        overlap_thresh: float | None = DRAW_OVERLAP_THRESH,
        max_instances: int | None = DRAW_MAX_INSTANCES,
        parts_within_parent: bool = False,
        colors: Sequence[tuple[int, int, int]] | None = None,
        tags: Sequence[str] | None = None,
    ) -> Image.Image:
        """Overlay masks, boxes and ``label score`` tags on ``image`` (a path,
        ``np.ndarray[H, W, 3]`` uint8 RGB or a PIL image of the prediction's size, or of that
        size reduced by a common factor, as a reduced decode of a huge JPEG is: masks are then
        sampled at its pixel centres and boxes scaled). Masks are blended inside their
        bounding rectangles, so memory stays about that of the image.

        Only :meth:`for_display`'s instances are drawn (the keyword arguments are its own);
        tags are placed so that no two overlap (a tag that finds no free place is left out).
        ``colors`` (RGB) and ``tags`` (text before the score), one per instance, replace the
        palette by display rank and the labels (a video coloured by track id).
        """
        base = read_image(image)
        height, width = base.shape[:2]
        full_h, full_w = self.image_size if len(self) else (height, width)
        reduced = height < full_h and width < full_w
        if (height, width) != (full_h, full_w) and not (
            reduced and abs(height * full_w - width * full_h) <= max(full_h, full_w)
        ):
            raise InputError(f"image is {base.shape[:2]}, prediction is for {self.image_size}")
        pred = self
        if (height, width) != (full_h, full_w) and len(self):
            # Sample the masks at the image's pixel centres first: the selection below copies.
            rows = ((np.arange(height) + 0.5) * full_h / height).astype(np.int64)
            cols = ((np.arange(width) + 0.5) * full_w / width).astype(np.int64)
            scale = np.array([width / full_w, height / full_h] * 2, dtype=np.float32)
            pred = replace(
                self,
                boxes=self.boxes * scale,
                masks=self.masks[:, rows[:, None], cols[None, :]],
            )
        options = dict(
            top_k_per_label=top_k_per_label,
            overlap_thresh=overlap_thresh,
            max_instances=max_instances,
            parts_within_parent=parts_within_parent,
        )
        kept = pred._display_indices(**options)
        shown = pred.for_display(**options)
        if tags is not None:
            shown.labels = [tags[i] for i in kept]
        colors = palette(len(shown)) if colors is None else [colors[i] for i in kept]
        canvas = base.copy()
        areas = np.array([np.count_nonzero(m) for m in shown.masks], dtype=np.int64)
        for i in np.argsort(-areas, kind="stable"):
            window = _mask_window(shown.masks[i])
            if window is None:
                continue
            top, bottom, left, right = window
            m = shown.masks[i, top:bottom, left:right]
            region = canvas[top:bottom, left:right]
            tint = (1 - alpha) * region[m] + alpha * np.asarray(colors[i], np.float32)
            region[m] = tint.clip(0, 255).astype(np.uint8)
        out = Image.fromarray(canvas)
        draw = ImageDraw.Draw(out)
        font = ImageFont.load_default(size=max(11, min(height, width) // 40))
        line = max(1, min(height, width) // 300)
        for i in range(len(shown)):
            draw.rectangle(tuple(float(v) for v in shown.boxes[i]), outline=colors[i], width=line)
        for i, rect in enumerate(tag_layout(shown, draw, font)):
            if rect is None:
                continue
            text = f"{shown.labels[i]} {shown.scores[i]:.2f}"
            draw.rectangle(rect, fill=colors[i])
            left, top, _, _ = draw.textbbox((0, 0), text, font=font)
            draw.text(
                (rect[0] + TAG_PAD - left, rect[1] + TAG_PAD - top),
                text,
                font=font,
                fill=_ink(colors[i]),
            )
        return out


def tag_layout(
    pred: Prediction, draw: ImageDraw.ImageDraw, font: ImageFont.ImageFont
) -> list[tuple[int, int, int, int] | None]:
    """Where :meth:`Prediction.render` puts each instance's ``label score`` tag.

    Tags are placed in score order at the first free spot among: above the box's top-left
    corner, inside it, below it, above its top-right corner, then further down and up the box's
    left edge; a spot is free when it lies inside the image and overlaps no tag placed before.

    Returns:
        Per instance ``(x0, y0, x1, y1)`` integer pixels of the tag, or ``None`` when no spot
        was free.
    """
    height, width = pred.image_size
    placed: list[tuple[int, int, int, int]] = []
    layout: list[tuple[int, int, int, int] | None] = [None] * len(pred)
    for i in np.argsort(-pred.scores, kind="stable"):
        i = int(i)
        left, top, right, bottom = draw.textbbox(
            (0, 0), f"{pred.labels[i]} {pred.scores[i]:.2f}", font=font
        )
        w, h = right - left + 2 * TAG_PAD, bottom - top + 2 * TAG_PAD
        if w > width or h > height:
            continue
        x0, y0, x1, y1 = (int(round(float(v))) for v in pred.boxes[i])
        spots = [(x0, y0 - h), (x0, y0), (x0, y1), (x1 - w, y0 - h)]
        spots += [(x0, y0 + k * h) for k in range(1, height // h + 1)]
        spots += [(x0, y0 - k * h) for k in range(2, height // h + 1)]
        for x, y in spots:
            x, y = min(max(x, 0), width - w), min(max(y, 0), height - h)
            rect = (x, y, x + w, y + h)
            if not any(_rects_overlap(rect, other) for other in placed):
                placed.append(rect)
                layout[i] = rect
                break
    return layout


def _rects_overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _overlap_of_smaller(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Intersection of ``box`` (XYXY) with each of ``boxes`` ([K, 4]) over the smaller area."""
    lt = np.maximum(box[:2], boxes[:, :2])
    rb = np.minimum(box[2:], boxes[:, 2:])
    inter = np.clip(rb - lt, 0, None).prod(1)
    area = np.clip(box[2:] - box[:2], 0, None).prod()
    areas = np.clip(boxes[:, 2:] - boxes[:, :2], 0, None).prod(1)
    return inter / np.maximum(np.minimum(area, areas), 1e-6)


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
    for i in range(n):
        window = _mask_window(masks[i]) if parts[i] is not None else None
        if window is None:
            continue
        same = [j for j in object_idx if objects[j].lower() == objects[i].lower()]
        if not same:
            continue
        # Intersections within the part's bounding rectangle (none of the part lies outside),
        # so no full-image copy of the masks is made.
        top, bottom, left, right = window
        part = masks[i, top:bottom, left:right]
        area = np.count_nonzero(part)
        frac = [np.count_nonzero(part & masks[j, top:bottom, left:right]) / area for j in same]
        best = int(np.argmax(frac))
        if frac[best] >= PARENT_CONTAINMENT_THRESH:
            parent[i] = same[best]
    return parent


def _mask_window(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """``(top, bottom, left, right)`` bounding rectangle of a mask, None if it is empty."""
    ys = np.flatnonzero(mask.any(axis=1))
    if len(ys) == 0:
        return None
    xs = np.flatnonzero(mask[ys[0] : ys[-1] + 1].any(axis=0))
    return int(ys[0]), int(ys[-1]) + 1, int(xs[0]), int(xs[-1]) + 1


def palette(n: int) -> list[tuple[int, int, int]]:
    """``n`` well-separated saturated colours (golden-ratio hue steps)."""
    return [
        tuple(int(255 * c) for c in colorsys.hsv_to_rgb((i * 0.618034) % 1.0, 0.75, 0.95))
        for i in range(n)
    ]


def _ink(color: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black or white text, whichever reads better on ``color``."""
    luminance = 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]
    return (0, 0, 0) if luminance > 140 else (255, 255, 255)
