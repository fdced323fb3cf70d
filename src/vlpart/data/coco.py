"""COCO-format JSON helpers: loading with clear errors, vocabularies, RLE masks, images."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pycocotools.mask as mask_util
import torch

from vlpart._io import read_rgb
from vlpart.vocab import Category, Vocabulary

__all__ = [
    "decode_segmentation",
    "encode_mask",
    "load_coco_json",
    "load_rgb_image",
    "mask_annotation",
    "vocabulary_from_categories",
]


def load_rgb_image(path: str | Path) -> torch.Tensor:
    """``Tensor[3, H, W]`` uint8 RGB of an image file.

    Raises:
        FileNotFoundError / ValueError: see :func:`vlpart._io.read_rgb`.
    """
    return torch.from_numpy(read_rgb(path)).permute(2, 0, 1).contiguous()


def load_coco_json(path: str | Path, *, require: Sequence[str] = ("images", "categories")) -> dict:
    """Read a COCO-format JSON file and check that the top-level lists in ``require`` exist.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not JSON, or a required key is missing or not a list.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: annotation file not found")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a COCO-format object, got {type(data).__name__}")
    for key in require:
        if not isinstance(data.get(key), list):
            raise ValueError(f"{path}: missing the COCO list {key!r}")
    return data


def vocabulary_from_categories(categories: Sequence[Mapping[str, Any]], *, name: str) -> Vocabulary:
    """The :class:`Vocabulary` of a COCO ``categories`` list, in increasing id order.

    A name ``"dog:head"`` is the part ``head`` of ``dog``; so is a name that starts with its
    ``supercategory`` and a space (PartImageNet's ``"Quadruped Head"``); any other name is an
    object. Optional fields ``split`` (``"base"``/``"novel"``) and ``image_count`` are kept.
    """
    cats = []
    for rec in sorted(categories, key=lambda c: c["id"]):
        cat_name = str(rec["name"])
        obj, sep, part = cat_name.partition(":")
        supercategory = str(rec.get("supercategory") or "")
        if not sep and supercategory and cat_name.startswith(supercategory + " "):
            obj, sep, part = supercategory, " ", cat_name[len(supercategory) + 1 :]
        cats.append(
            Category(
                name=cat_name,
                object=obj.strip(),
                part=part.strip() if sep else None,
                id=int(rec["id"]),
                split=rec.get("split"),
                image_count=rec.get("image_count"),
            )
        )
    return Vocabulary(tuple(cats), name=name)


def decode_segmentation(segmentation: Any, height: int, width: int) -> np.ndarray:
    """A COCO ``segmentation`` (polygons, uncompressed or compressed RLE) as a binary mask.

    Returns:
        np.ndarray[H, W], uint8 in {0, 1}.
    """
    if isinstance(segmentation, list):  # polygons
        if not segmentation:
            return np.zeros((height, width), dtype=np.uint8)
        rle = mask_util.merge(mask_util.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation.get("counts"), list):  # uncompressed RLE
        rle = mask_util.frPyObjects(segmentation, height, width)
    else:
        rle = segmentation
    return mask_util.decode(rle).astype(np.uint8, copy=False)


def encode_mask(mask: np.ndarray) -> dict:
    """Compressed RLE of a binary mask ``np.ndarray[H, W]`` (``counts`` as str, JSON-ready)."""
    if mask.dtype == np.bool_:
        mask = mask.view(np.uint8)
    rle = mask_util.encode(np.asfortranarray(mask, dtype=np.uint8))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def mask_annotation(mask: np.ndarray, *, ann_id: int, image_id: int, category_id: int) -> dict:
    """A COCO annotation of a binary mask ``np.ndarray[H, W]``: compressed RLE ``segmentation``,
    its XYWH ``bbox`` and pixel ``area``, ``iscrowd=0``."""
    rle = encode_mask(mask)
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category_id,
        "segmentation": rle,
        "bbox": [float(v) for v in mask_util.toBbox(rle)],
        "area": float(mask_util.area(rle)),
        "iscrowd": 0,
    }
