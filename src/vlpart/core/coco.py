"""The COCO-file owner: reading and validating ground truth and results, categories as a
:class:`~vlpart.core.vocab.Vocabulary`, RLE masks, result records, atomic writing and shard merging.

Every COCO-format file vlpart reads or writes (datasets, evaluation, parsed parts, ``vlpart
predict`` outputs, the synthetic world, the Pascal-Part converter) goes through this module, so
the checks, the error texts and the name rule are the same everywhere. Errors are ``ValueError``
naming the file and the JSON path of the bad value, e.g.
``val.json: annotations[12].bbox: expected 4 finite numbers, got 'x'``.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from pycocotools import mask as mask_utils

from vlpart.core.errors import InputError, MissingFileError
from vlpart.core.fileio import OutputSet, write_json_atomic
from vlpart.core.vocab import Category, Vocabulary, name_key, split_category_name

T = TypeVar("T")

__all__ = [
    "category_ids",
    "category_records",
    "category_vocabulary",
    "decode_segmentation",
    "encode_mask",
    "encode_masks",
    "load_coco",
    "load_results",
    "mask_annotation",
    "merge_shards",
    "rank_share",
    "read_json",
    "result_records",
    "segmentation_box",
    "shard_path",
    "write_coco",
    "xywh_box",
]

# Decimals of the boxes (pixels) and scores vlpart writes into COCO files.
BOX_DECIMALS = 2
SCORE_DECIMALS = 5


def read_json(source: str | Path, *, what: str = "JSON") -> Any:
    """Parse a JSON file.

    Raises:
        FileNotFoundError: ``source`` does not exist (``"{path}: {what} file not found"``).
        ValueError: the file is not UTF-8 text or not valid JSON.
    """
    path = Path(source)
    if not path.is_file():
        raise MissingFileError(f"{path}: {what} file not found")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a text/JSON file") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None


def load_coco(
    source: str | Path | Mapping[str, Any],
    *,
    annotations: bool = True,
    masks: bool = False,
    what: str = "annotation",
) -> dict[str, Any]:
    """Read and validate a COCO-format ground-truth/dataset file.

    Checked: a top-level object; ``images`` (``id``, positive ``width``/``height``; optional
    ``pos_category_ids``, ``neg_category_ids``, ``not_exhaustive_category_ids`` lists of known
    category ids); ``categories`` (at least one; unique ``id`` and unique name under
    :func:`~vlpart.core.vocab.name_key`); ``annotations`` (``id``, known ``image_id`` and
    ``category_id``, ``bbox`` of 4 finite numbers with non-negative width and height, optional
    ``segmentation`` as polygons of >= 3 points or RLE).

    Args:
        source: the file, or an already loaded dict (errors then name ``"ground truth"``).
        annotations: require the ``annotations`` list (image-level files have none).
        masks: require a ``segmentation`` on every annotation.
        what: the kind of file, for "not found" errors.

    Returns:
        The loaded dict (a shallow copy for a mapping ``source``).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the first problem found, as ``"{file}: {json path}: {problem}"``.
    """
    if isinstance(source, Mapping):
        data, name = dict(source), "ground truth"
    else:
        data, name = read_json(source, what=what), str(source)
    if not isinstance(data, dict):
        raise InputError(
            f"{name}: expected a COCO object with 'images', 'annotations' and 'categories', "
            f"got a JSON {_kind(data)}"
            + (" (is this a results file?)" if isinstance(data, list) else "")
        )
    for key in ("images", "categories", *(("annotations",) if annotations else ())):
        if key not in data:
            raise InputError(f"{name}: not a COCO file: no '{key}' list")
    for key in ("images", "categories", "annotations"):
        if key in data and not isinstance(data[key], list):
            raise InputError(f"{name}: {key}: expected a list, got a JSON {_kind(data[key])}")
    if not data["categories"]:
        raise InputError(f"{name}: categories: the file lists no categories")
    cat_ids = _check_categories(data["categories"], name)
    image_ids = _check_images(data["images"], cat_ids, name)
    for i, ann in enumerate(data.get("annotations", [])):
        _check_annotation(ann, f"{name}: annotations[{i}]", image_ids, cat_ids, masks=masks)
    return data


def load_results(
    source: str | Path | Sequence[Mapping[str, Any]], gt: Mapping[str, Any]
) -> list[dict]:
    """Read and validate COCO results against validated ground truth ``gt``.

    Each detection needs ``image_id`` and ``category_id`` of ``gt``, a finite ``score``, and a
    ``bbox`` (4 finite numbers) and/or a ``segmentation`` (RLE ``{"size": [h, w], "counts"}`` of
    the image's size).

    Returns:
        Copies of the detections.

    Raises:
        FileNotFoundError / ValueError: as :func:`load_coco`, paths like ``results.json: [3].bbox``.
    """
    if isinstance(source, str | Path):
        data, name = read_json(source, what="results"), str(source)
    else:
        data, name = source, "results"
    if not isinstance(data, list):
        hint = " (is this a ground-truth file?)" if isinstance(data, dict) else ""
        raise InputError(
            f"{name}: expected a JSON list of detections, got a JSON {_kind(data)}{hint}"
        )
    images = {img["id"]: img for img in gt["images"]}
    cat_ids = {c["id"] for c in gt["categories"]}
    dets = []
    for i, det in enumerate(data):
        where = f"{name}: [{i}]"
        if not isinstance(det, dict):
            raise InputError(f"{where}: expected a detection object, got a JSON {_kind(det)}")
        _check_refs(det, where, images, cat_ids)
        if "score" not in det:
            raise InputError(f"{where}: no 'score'")
        if not _is_number(det["score"]):
            raise InputError(f"{where}.score: expected a finite number, got {det['score']!r}")
        if "bbox" in det:
            _check_box(det["bbox"], f"{where}.bbox")
        segm = det.get("segmentation")
        if segm is not None:
            img = images[det["image_id"]]
            if not isinstance(segm, dict):
                raise InputError(
                    f"{where}.segmentation: expected RLE {{'size': [h, w], 'counts': ...}}, "
                    f"got a JSON {_kind(segm)}"
                )
            _check_rle(segm, f"{where}.segmentation")
            if list(segm["size"]) != [img["height"], img["width"]]:
                raise InputError(
                    f"{where}.segmentation: mask size {list(segm['size'])} differs from image "
                    f"{det['image_id']} ({img['height']}x{img['width']})"
                )
        elif "bbox" not in det:
            raise InputError(f"{where}: neither 'bbox' nor 'segmentation'")
        dets.append(dict(det))
    return dets


# ---- categories <-> Vocabulary ---------------------------------------------------------------


def category_vocabulary(categories: Sequence[Mapping[str, Any]], *, name: str) -> Vocabulary:
    """The :class:`Vocabulary` of a COCO ``categories`` list, in increasing id order.

    Object and part come from :func:`~vlpart.core.vocab.split_category_name` (the one ``obj:part``
    rule, with the ``supercategory`` prefix rule); ``split`` and ``image_count`` are kept.
    """
    cats = []
    for rec in sorted(categories, key=lambda c: c["id"]):
        cat_name = str(rec["name"])
        obj, part = split_category_name(cat_name, rec.get("supercategory") or None)
        cats.append(
            Category(
                name=cat_name,
                object=obj,
                part=part,
                id=int(rec["id"]),
                split=rec.get("split"),
                image_count=rec.get("image_count"),
            )
        )
    return Vocabulary(tuple(cats), name=name)


def category_ids(vocabulary: Vocabulary) -> list[int]:
    """The COCO category id of each vocabulary row.

    The categories' own ids when they are unique (built-in taxonomies, datasets, and parsed specs,
    whose ids are their 1-based positions); otherwise (categories built by hand, all with the
    default id 0) the 1-based positions.
    """
    ids = [c.id for c in vocabulary]
    if len(set(ids)) == len(ids):
        return ids
    return list(range(1, len(vocabulary) + 1))


def category_records(vocabulary: Vocabulary) -> list[dict]:
    """COCO ``categories`` of a vocabulary, ids from :func:`category_ids`: ``id``, ``name``,
    ``supercategory`` (the object, for parts), ``split`` and ``image_count`` where known.

    :func:`category_vocabulary` reads them back into the same objects and parts.
    """
    out = []
    for cat, cat_id in zip(vocabulary, category_ids(vocabulary), strict=True):
        rec: dict[str, Any] = {"id": cat_id, "name": cat.name}
        if cat.part is not None:
            rec["supercategory"] = cat.object
        if cat.split is not None:
            rec["split"] = cat.split
        if cat.image_count is not None:
            rec["image_count"] = cat.image_count
        out.append(rec)
    return out


# ---- masks ---------------------------------------------------------------------------------------


def decode_segmentation(segmentation: Any, height: int, width: int) -> np.ndarray:
    """A COCO ``segmentation`` (polygons, uncompressed or compressed RLE) as a binary mask.

    Returns:
        np.ndarray[H, W], uint8 in {0, 1}.
    """
    if isinstance(segmentation, list):  # polygons
        if not segmentation:
            return np.zeros((height, width), dtype=np.uint8)
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation.get("counts"), list):  # uncompressed RLE
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        rle = _compressed(segmentation)
    return mask_utils.decode(rle).astype(np.uint8, copy=False)


def encode_mask(mask: np.ndarray) -> dict:
    """Compressed RLE ``{"size": [h, w], "counts": str}`` of a binary ``np.ndarray[H, W]``."""
    return encode_masks(mask[None])[0]


def encode_masks(masks: np.ndarray) -> list[dict]:
    """Compressed RLE (``counts`` as str, JSON-ready) of binary masks ``np.ndarray[N, H, W]``."""
    # One mask at a time: a column-major copy of the whole stack would double its memory
    # (and touch every page of masks that are zero outside their boxes).
    out = []
    for mask in masks:
        fortran = np.asfortranarray(np.asarray(mask).astype(np.uint8, copy=False)[:, :, None])
        rle = mask_utils.encode(fortran)[0]
        out.append({"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")})
    return out


def segmentation_box(segmentation: Mapping[str, Any]) -> list[float]:
    """XYWH box of a compressed or uncompressed RLE."""
    rle = segmentation
    if isinstance(rle.get("counts"), list):
        rle = mask_utils.frPyObjects(dict(rle), *rle["size"])
    return [float(v) for v in mask_utils.toBbox(_compressed(rle))]


def mask_annotation(mask: np.ndarray, *, ann_id: int, image_id: int, category_id: int) -> dict:
    """A COCO annotation of a binary mask ``np.ndarray[H, W]``: compressed RLE ``segmentation``,
    its XYWH ``bbox`` and pixel ``area``, ``iscrowd=0``."""
    rle = encode_mask(mask)
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category_id,
        "segmentation": rle,
        "bbox": segmentation_box(rle),
        "area": float(mask_utils.area(_compressed(rle))),
        "iscrowd": 0,
    }


def xywh_box(box: Sequence[float] | np.ndarray) -> list[float]:
    """The COCO ``bbox`` of an XYXY box: ``[x, y, w, h]`` in pixels, rounded to
    :data:`BOX_DECIMALS` decimals (every box vlpart writes goes through here)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    return [round(v, BOX_DECIMALS) for v in (x0, y0, x1 - x0, y1 - y0)]


def result_records(
    image_id: int,
    boxes: np.ndarray,
    scores: np.ndarray,
    category_ids: Sequence[int] | np.ndarray,
    masks: np.ndarray | None = None,
) -> list[dict]:
    """COCO result dicts of one image's instances.

    Args:
        image_id: the image's id in the results file.
        boxes (np.ndarray[N, 4]): XYXY pixels; written as XYWH ``bbox`` (2 decimals).
        scores (np.ndarray[N]): detection scores (5 decimals).
        category_ids (N ints): the COCO category id of each instance (explicit; see
            :func:`category_ids` for a vocabulary's).
        masks (np.ndarray[N, H, W], bool): written as compressed RLE ``segmentation``.
    """
    rles = encode_masks(masks) if masks is not None else [None] * len(scores)
    out = []
    for box, score, cat_id, rle in zip(boxes, scores, category_ids, rles, strict=True):
        rec = {
            "image_id": int(image_id),
            "category_id": int(cat_id),
            "bbox": xywh_box(box),
            "score": round(float(score), SCORE_DECIMALS),
        }
        if rle is not None:
            rec["segmentation"] = rle
        out.append(rec)
    return out


# ---- writing -------------------------------------------------------------------------------------


def write_coco(
    path: str | Path,
    *,
    images: Sequence[Mapping[str, Any]],
    categories: Sequence[Mapping[str, Any]],
    annotations: Sequence[Mapping[str, Any]] | None = None,
    info: Mapping[str, Any] | None = None,
    outputs: OutputSet | None = None,
) -> Path:
    """Write a COCO file atomically (temporary file, then rename); ``annotations=None`` leaves
    the list out (image-level files). With ``outputs`` the file is only staged there, to be
    committed with the rest of that set."""
    data: dict[str, Any] = {}
    if info is not None:
        data["info"] = dict(info)
    data["images"] = list(images)
    data["categories"] = list(categories)
    if annotations is not None:
        data["annotations"] = list(annotations)
    if outputs is not None:
        outputs.write_json(path, data)
        return Path(path)
    return write_json_atomic(data, path)


def rank_share(items: Sequence[T], rank: int, world_size: int) -> list[T]:
    """The items rank ``rank`` of ``world_size`` processes takes: ``rank, rank + world_size,
    ...`` (the one sharding rule; its output goes to :func:`shard_path`).

    Raises:
        ValueError: not ``0 <= rank < world_size``.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise InputError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    return list(items[rank::world_size])


def shard_path(out_path: str | Path, rank: int, world_size: int) -> Path:
    """``parts.json`` -> ``parts.shard003-of-008.json``."""
    out = Path(out_path)
    return out.with_name(f"{out.stem}.shard{rank:03d}-of-{world_size:03d}{out.suffix}")


def merge_shards(out_path: str | Path, world_size: int) -> Path:
    """Join the COCO shard files (:func:`shard_path`) of a ``world_size``-rank run into
    ``out_path``: images by id, annotation ids renumbered 1.. in image order.

    Raises:
        FileNotFoundError: a shard is missing (its rank has not finished).
        ValueError: shards of different runs (categories or ``info`` differ), or shards that
            share image ids.
    """
    paths = [shard_path(out_path, r, world_size) for r in range(world_size)]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise MissingFileError(f"missing shards (unfinished ranks?): {', '.join(missing)}")
    shards = [load_coco(p) for p in paths]
    first = shards[0]
    images: list[dict] = []
    per_image: dict[int, list[dict]] = {}
    for path, shard in zip(paths, shards, strict=True):
        if shard["categories"] != first["categories"] or shard.get("info") != first.get("info"):
            raise InputError(f"{path}: shard of a different run than {paths[0]}")
        for img in shard["images"]:
            if img["id"] in per_image:
                raise InputError(
                    f"{path}: image id {img['id']} is in two shards of {out_path}; were they "
                    "made with one item list?"
                )
            per_image[img["id"]] = []
            images.append(img)
        for ann in sorted(shard["annotations"], key=lambda a: a["id"]):
            per_image[ann["image_id"]].append(ann)
    return write_records(out_path, images, per_image, first["categories"], first.get("info"))


def write_records(
    path: str | Path,
    images: Sequence[Mapping[str, Any]],
    annotations_of: Mapping[int, Sequence[Mapping[str, Any]]],
    categories: Sequence[Mapping[str, Any]],
    info: Mapping[str, Any] | None = None,
) -> Path:
    """Write per-image annotations as one COCO file: images sorted by id, annotation ids
    1.. in that order (any ``id`` in ``annotations_of`` is replaced)."""
    images = sorted(images, key=lambda img: img["id"])
    annotations = []
    for img in images:
        for ann in annotations_of.get(img["id"], ()):
            annotations.append({**ann, "id": len(annotations) + 1})
    return write_coco(
        path, images=images, categories=categories, annotations=annotations, info=info
    )


# ---- validation helpers --------------------------------------------------------------------------


def _kind(value: Any) -> str:
    kinds = {dict: "object", list: "array", str: "string", bool: "boolean"}
    if value is None:
        return "null"
    return kinds.get(type(value), "number" if isinstance(value, int | float) else "value")


def _is_number(value: Any) -> bool:
    return (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


def _is_id(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_categories(categories: list, name: str) -> set[int]:
    ids: set[int] = set()
    keys: dict[str, str] = {}
    for i, cat in enumerate(categories):
        where = f"{name}: categories[{i}]"
        if not isinstance(cat, dict):
            raise InputError(f"{where}: expected a category object, got a JSON {_kind(cat)}")
        for key in ("id", "name"):
            if key not in cat:
                raise InputError(f"{where}: no '{key}'")
        if not _is_id(cat["id"]):
            raise InputError(f"{where}.id: expected an integer, got {cat['id']!r}")
        if not isinstance(cat["name"], str) or not cat["name"].strip():
            raise InputError(f"{where}.name: expected a non-empty string, got {cat['name']!r}")
        if cat["id"] in ids:
            raise InputError(f"{where}.id: category id {cat['id']} appears twice")
        key = name_key(cat["name"])
        if key in keys:
            raise InputError(f"{where}.name: {cat['name']!r} is the same category as {keys[key]!r}")
        ids.add(cat["id"])
        keys[key] = cat["name"]
    return ids


def _check_images(images: list, cat_ids: set[int], name: str) -> set[int]:
    ids: set[int] = set()
    for i, img in enumerate(images):
        where = f"{name}: images[{i}]"
        if not isinstance(img, dict):
            raise InputError(f"{where}: expected an image object, got a JSON {_kind(img)}")
        for key in ("id", "width", "height"):
            if key not in img:
                raise InputError(f"{where}: no '{key}'")
        if not _is_id(img["id"]):
            raise InputError(f"{where}.id: expected an integer, got {img['id']!r}")
        if img["id"] in ids:
            raise InputError(f"{where}.id: image id {img['id']} appears twice")
        for key in ("width", "height"):
            if not _is_id(img[key]) or img[key] < 1:
                raise InputError(f"{where}.{key}: expected a positive integer, got {img[key]!r}")
        for key in ("pos_category_ids", "neg_category_ids", "not_exhaustive_category_ids"):
            if key not in img:
                continue
            values = img[key]
            if not isinstance(values, list) or not all(_is_id(v) for v in values):
                raise InputError(f"{where}.{key}: expected a list of category ids, got {values!r}")
            unknown = [v for v in values if v not in cat_ids]
            if unknown:
                raise InputError(f"{where}.{key}: {unknown[0]} is not a category of the file")
        ids.add(img["id"])
    return ids


def _check_refs(record: dict, where: str, image_ids: Any, cat_ids: set[int]) -> None:
    for key in ("image_id", "category_id"):
        if key not in record:
            raise InputError(f"{where}: no '{key}'")
    if record["image_id"] not in image_ids:
        raise InputError(
            f"{where}.image_id: {record['image_id']!r} is not an image of the ground truth"
        )
    if record["category_id"] not in cat_ids:
        raise InputError(
            f"{where}.category_id: {record['category_id']!r} is not a category of the ground truth"
        )


def _check_annotation(
    ann: Any, where: str, image_ids: set[int], cat_ids: set[int], *, masks: bool
) -> None:
    if not isinstance(ann, dict):
        raise InputError(f"{where}: expected an annotation object, got a JSON {_kind(ann)}")
    if "id" not in ann:
        raise InputError(f"{where}: no 'id'")
    _check_refs(ann, where, image_ids, cat_ids)
    if "bbox" not in ann:
        raise InputError(f"{where}: no 'bbox' [x, y, w, h]")
    _check_box(ann["bbox"], f"{where}.bbox")
    if "segmentation" in ann:
        _check_segmentation(ann["segmentation"], f"{where}.segmentation")
    elif masks:
        raise InputError(f"{where}: no 'segmentation' (this file needs masks)")


def _check_box(box: Any, where: str) -> None:
    if not (isinstance(box, list | tuple) and len(box) == 4 and all(map(_is_number, box))):
        raise InputError(f"{where}: expected 4 finite numbers [x, y, w, h], got {box!r}")
    if box[2] < 0 or box[3] < 0:
        raise InputError(f"{where}: negative width or height in {box!r}")


def _check_segmentation(segm: Any, where: str) -> None:
    if isinstance(segm, list):
        for k, poly in enumerate(segm):
            if not isinstance(poly, list) or not all(map(_is_number, poly)):
                raise InputError(
                    f"{where}[{k}]: expected a polygon [x1, y1, x2, y2, ...], got {poly!r}"
                )
            if len(poly) % 2:
                raise InputError(
                    f"{where}[{k}]: a polygon needs x, y pairs, got {len(poly)} values"
                )
            if len(poly) < 6:
                raise InputError(
                    f"{where}[{k}]: a polygon needs at least 3 points, got {len(poly) // 2}"
                )
    elif isinstance(segm, dict):
        _check_rle(segm, where)
    else:
        raise InputError(f"{where}: expected polygons or RLE, got a JSON {_kind(segm)}")


def _check_rle(segm: dict, where: str) -> None:
    size, counts = segm.get("size"), segm.get("counts")
    if not (isinstance(size, list) and len(size) == 2 and all(_is_id(v) and v >= 0 for v in size)):
        raise InputError(f"{where}.size: expected [height, width], got {size!r}")
    if not isinstance(counts, str) and not (
        isinstance(counts, list) and all(_is_id(v) and v >= 0 for v in counts)
    ):
        raise InputError(f"{where}.counts: expected an RLE string or run lengths, got {counts!r}")


def _compressed(rle: Mapping[str, Any]) -> dict[str, Any]:
    """``rle`` as pycocotools takes it: ``counts`` as bytes."""
    counts = rle["counts"]
    return {
        "size": list(rle["size"]),
        "counts": counts.encode() if isinstance(counts, str) else counts,
    }
