"""The YOLO segmentation layout (what ultralytics trains on): ``images/``, ``labels/<stem>.txt``
and ``data.yaml``.

One line per instance: ``<class> x1 y1 x2 y2 ...``, the class a 0-based index into ``names`` of
``data.yaml`` and the polygon's vertices in pixel coordinates divided by the image's width and
height (so in [0, 1]). An image without instances has an empty label file (a background image).
Masks become polygons with OpenCV's contour tracing (``opencv-python-headless``, the ``label``
extra), imported when first used.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import yaml

from vlpart.core.errors import MissingDependencyError

__all__ = ["data_yaml", "label_name", "mask_polygon", "polygon_lines"]

# Decimals of the normalised coordinates (1e-6 of the side: below a pixel for any image).
DECIMALS = 6


def mask_polygon(mask: np.ndarray) -> np.ndarray | None:
    """The outer contour of a mask's largest region, ``np.ndarray[K, 2]`` float64 ``(x, y)``
    pixels, ``K >= 3``; ``None`` for a mask with no region of 3 or more contour points.

    A YOLO line holds one polygon, so a mask in several pieces keeps its largest one (by
    polygon area); holes are not represented.
    """
    try:
        import cv2
    except ImportError:
        raise MissingDependencyError(
            "the YOLO layout needs OpenCV: pip install 'vlpart[label]' (opencv-python-headless)"
        ) from None
    contours, _ = cv2.findContours(
        np.ascontiguousarray(mask, dtype=np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
    )
    contours = [c[:, 0, :] for c in contours if len(c) >= 3]
    if not contours:
        return None
    best = max(contours, key=lambda c: abs(cv2.contourArea(c)))
    return best.astype(np.float64)


def polygon_lines(masks: np.ndarray, class_ids: Sequence[int] | np.ndarray) -> list[str]:
    """The label-file lines of one image's instances.

    Args:
        masks (np.ndarray[N, H, W], bool): instance masks.
        class_ids (N ints): 0-based class index of each instance.

    Returns:
        One line per instance that has a polygon (see :func:`mask_polygon`), in input order.
    """
    lines = []
    for mask, class_id in zip(masks, class_ids, strict=True):
        polygon = mask_polygon(mask)
        if polygon is None:
            continue
        height, width = mask.shape
        normalised = (polygon / np.array([width, height])).clip(0.0, 1.0)
        coords = " ".join(f"{v:.{DECIMALS}f}" for v in normalised.reshape(-1))
        lines.append(f"{int(class_id)} {coords}")
    return lines


def label_name(image_id: int, source: str | Path) -> str:
    """File stem shared by an image and its label file, unique per image id:
    ``00000042_dog`` for image 42 read from ``…/dog.jpg``."""
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(source).stem)
    return f"{int(image_id):08d}_{stem}"


def data_yaml(names: Sequence[str]) -> str:
    """``data.yaml`` of a dataset in this layout whose classes are ``names`` (index order);
    ``path`` is the yaml's folder, and the one split (``train`` = ``val``) is ``images``."""
    data = {
        "path": ".",
        "train": "images",
        "val": "images",
        "nc": len(names),
        "names": {i: str(name) for i, name in enumerate(names)},
    }
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
