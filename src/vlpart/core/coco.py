"""The COCO-file owner: reading and validating ground truth and results, categories as a
:class:`~vlpart.core.vocab.Vocabulary`, RLE masks, result records, atomic writing and shard merging.

Every COCO-format file vlpart reads or writes (datasets, evaluation, parsed parts, ``vlpart
predict`` outputs, the synthetic world, the Pascal-Part converter) goes through this module, so
the checks, the error texts and the name rule are the same everywhere. Errors are ``ValueError``
naming the file and the JSON path of the bad value, e.g.
``val.json: annotations[12].bbox: expected 4 finite numbers, got 'x'``.
"""

from __future__ import annotations

import contextlib
import json
import math
import numbers
from collections.abc import Iterable, Iterator, Mapping, Sequence
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
    "instance_records",
    "load_coco",
    "load_results",
    "mask_annotation",
    "merge_shards",
    "mot_challenge_rows",
    "rank_share",
    "read_json",
    "result_records",
    "segmentation_box",
    "shard_path",
    "with_track_ids",
    "write_coco",
    "xywh_box",
    "write_coco_stream",
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
    images = _check_images(data["images"], cat_ids, name)
    strings = _RunChecks()
    with strings.first_error():
        for i, ann in enumerate(data.get("annotations", [])):
            _check_annotation(
                ann, f"{name}: annotations[{i}]", images, cat_ids, masks=masks, strings=strings
            )
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
    strings = _RunChecks()
    with strings.first_error():
        for i, det in enumerate(data):
            dets.append(_checked_detection(det, f"{name}: [{i}]", images, cat_ids, strings))
    return dets


def _checked_detection(
    det: Any, where: str, images: Mapping[int, dict], cat_ids: set[int], strings: _RunChecks
) -> dict:
    """A copy of one checked detection, uncompressed RLE compressed; string runs are left to
    ``strings``."""
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
        _check_rle(segm, f"{where}.segmentation", image=img, strings=strings)
        if isinstance(segm["counts"], list):  # uncompressed: the evaluators take strings
            return {**det, "segmentation": _to_string_rle(segm)}
    elif "bbox" not in det:
        raise InputError(f"{where}: neither 'bbox' nor 'segmentation'")
    return dict(det)


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


def decode_segmentation(
    segmentation: Any, height: int, width: int, *, where: str = "segmentation"
) -> np.ndarray:
    """A COCO ``segmentation`` (polygons, uncompressed or compressed RLE) as a binary mask.

    Files read by :func:`load_coco` are checked already; ``where`` names the value in the error
    for one that was not.

    Returns:
        np.ndarray[H, W], uint8 in {0, 1}.

    Raises:
        InputError: a malformed segmentation, or an RLE whose size is not ``height`` x ``width``.
    """
    if isinstance(segmentation, list) and not segmentation:
        return np.zeros((height, width), dtype=np.uint8)
    image = {"id": "of the annotation", "height": height, "width": width}
    _check_segmentation(segmentation, where, image=image)
    try:
        if isinstance(segmentation, list):  # polygons
            rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
        elif isinstance(segmentation["counts"], list):  # uncompressed RLE
            rle = mask_utils.frPyObjects(segmentation, height, width)
        else:
            rle = _compressed(segmentation)
        return mask_utils.decode(rle).astype(np.uint8, copy=False)
    except (ValueError, OverflowError, TypeError) as err:
        raise InputError(f"{where}: pycocotools cannot decode it ({err})") from None


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
    """XYWH box of a compressed or uncompressed RLE (checked, as :func:`load_results` does)."""
    rle = segmentation
    if isinstance(rle.get("counts"), list):
        rle = _to_string_rle(rle)
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


def instance_records(
    image_id: int,
    masks: np.ndarray,
    scores: np.ndarray,
    category_ids: Sequence[int] | np.ndarray,
    parents: Sequence[int] | np.ndarray,
    *,
    first_id: int,
) -> list[dict]:
    """COCO *instances* (training annotations) of one image's predicted masks.

    Each is :func:`mask_annotation` (RLE, box and area of the mask, ``iscrowd=0``) plus
    ``score`` (5 decimals) and ``parent_id``: the id of the object annotation a part lies in, or
    ``None``. Empty masks are left out (a part whose parent is left out gets ``None``).

    Args:
        image_id: the image's id.
        masks (np.ndarray[N, H, W], bool): instance masks.
        scores (np.ndarray[N]): detection scores.
        category_ids (N ints): COCO category id of each instance.
        parents (N ints): index of each instance's parent instance, -1 for none.
        first_id: the id of the first annotation written; the others follow 1 by 1.
    """
    ids: dict[int, int] = {}
    out = []
    for i, mask in enumerate(masks):
        if not mask.any():
            continue
        ids[i] = first_id + len(out)
        rec = mask_annotation(
            mask, ann_id=ids[i], image_id=int(image_id), category_id=int(category_ids[i])
        )
        rec["score"] = round(float(scores[i]), 5)
        rec["parent_id"] = int(parents[i])  # resolved below, once every id is known
        out.append(rec)
    for rec in out:
        rec["parent_id"] = ids.get(rec["parent_id"])
    return out


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


def with_track_ids(
    records: list[dict], track_ids: Sequence[int], parent_track_ids: Sequence[int]
) -> list[dict]:
    """``records`` (one image's results, in instance order) with ``track_id`` and
    ``parent_track_id`` set (-1: untracked, no parent); returns the same list."""
    for rec, tid, ptid in zip(records, track_ids, parent_track_ids, strict=True):
        rec["track_id"], rec["parent_track_id"] = int(tid), int(ptid)
    return records


def mot_challenge_rows(
    annotations: Sequence[Mapping[str, Any]], images: Sequence[Mapping[str, Any]]
) -> dict[str, list[str]]:
    """MOTChallenge rows ``frame,id,x,y,w,h,score,-1,-1,-1`` (``frame`` = the image's
    ``frame_index`` + 1) of the annotations with a ``track_id`` other than -1, per ``label``,
    in the order given."""
    frame_of = {im["id"]: im["frame_index"] for im in images}
    rows: dict[str, list[str]] = {}
    for a in annotations:
        if a["track_id"] == -1:
            continue
        x, y, w, h = a["bbox"]
        rows.setdefault(a["label"], []).append(
            f"{frame_of[a['image_id']] + 1},{a['track_id']},{x:.2f},{y:.2f},{w:.2f},{h:.2f},"
            f"{a['score']:.5f},-1,-1,-1"
        )
    return rows


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


def write_coco_stream(
    path: str | Path,
    *,
    images: Iterable[Mapping[str, Any]],
    categories: Sequence[Mapping[str, Any]],
    annotations: Iterable[Mapping[str, Any]],
    info: Mapping[str, Any] | None = None,
) -> None:
    """Write a COCO file record by record, holding one record at a time: for files too big
    for memory (``images`` and ``annotations`` may be generators, each read once, in that
    order). Writes ``path`` in place: stage it with :meth:`OutputSet.write` or
    :func:`~vlpart.core.fileio.atomic_write`. The bytes equal :func:`write_coco`'s."""

    def dumps(value: Any) -> str:
        return json.dumps(value, separators=(",", ":"))

    with open(path, "w", encoding="utf-8") as f:
        f.write("{")
        if info is not None:
            f.write(f'"info":{dumps(dict(info))},')
        for key, records in (("images", images), ("categories", categories)):
            f.write(f'"{key}":[')
            _write_joined(f, map(dumps, records))
            f.write("],")
        f.write('"annotations":[')
        _write_joined(f, map(dumps, annotations))
        f.write("]}")
        f.flush()


def _write_joined(f: Any, texts: Iterable[str]) -> None:
    for i, text in enumerate(texts):
        if i:
            f.write(",")
        f.write(text)


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
    kind = type(value)
    if kind is float:  # what JSON gives: decided without the slow abstract-class checks
        return math.isfinite(value)
    if kind is int:
        return True
    return (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


def _is_id(value: Any) -> bool:
    return type(value) is int or (
        isinstance(value, numbers.Integral) and not isinstance(value, bool)
    )


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


def _check_images(images: list, cat_ids: set[int], name: str) -> dict[int, dict]:
    """Image id -> image record, every record checked."""
    ids: dict[int, dict] = {}
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
        ids[img["id"]] = img
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
    ann: Any,
    where: str,
    images: Mapping[int, dict],
    cat_ids: set[int],
    *,
    masks: bool,
    strings: _RunChecks,
) -> None:
    if not isinstance(ann, dict):
        raise InputError(f"{where}: expected an annotation object, got a JSON {_kind(ann)}")
    if "id" not in ann:
        raise InputError(f"{where}: no 'id'")
    _check_refs(ann, where, images, cat_ids)
    if "bbox" not in ann:
        raise InputError(f"{where}: no 'bbox' [x, y, w, h]")
    _check_box(ann["bbox"], f"{where}.bbox")
    if "segmentation" in ann:
        _check_segmentation(
            ann["segmentation"],
            f"{where}.segmentation",
            image=images[ann["image_id"]],
            strings=strings,
        )
    elif masks:
        raise InputError(f"{where}: no 'segmentation' (this file needs masks)")


def _check_box(box: Any, where: str) -> None:
    if not (isinstance(box, list | tuple) and len(box) == 4 and all(map(_is_number, box))):
        raise InputError(f"{where}: expected 4 finite numbers [x, y, w, h], got {box!r}")
    if box[2] < 0 or box[3] < 0:
        raise InputError(f"{where}: negative width or height in {box!r}")


def _check_segmentation(
    segm: Any, where: str, *, image: Mapping[str, Any], strings: _RunChecks | None = None
) -> None:
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
        _check_rle(segm, where, image=image, strings=strings)
    else:
        raise InputError(f"{where}: expected polygons or RLE, got a JSON {_kind(segm)}")


def _check_rle(
    segm: dict,
    where: str,
    *,
    image: Mapping[str, Any] | None = None,
    strings: _RunChecks | None = None,
) -> None:
    """A structurally sound RLE whose runs cover exactly its ``size`` (and, given ``image``,
    whose size is the image's): pycocotools reads anything else as garbage or fails inside.

    Given ``strings``, the runs of a compressed (string) RLE are left to it, to be checked with
    the other strings of the file in one pass.
    """
    size, counts = segm.get("size"), segm.get("counts")
    if not (
        isinstance(size, list)
        and len(size) == 2
        and _is_id(size[0])
        and _is_id(size[1])
        and size[0] >= 0
        and size[1] >= 0
    ):
        raise InputError(f"{where}.size: expected [height, width], got {size!r}")
    if image is not None and (size[0] != image["height"] or size[1] != image["width"]):
        raise InputError(
            f"{where}.size: mask size {list(size)} differs from image {image['id']} "
            f"({image['height']}x{image['width']})"
        )
    if isinstance(counts, str):
        if strings is not None:
            strings.add(counts, size, where)
            return
        runs = _string_runs(counts, f"{where}.counts")
    elif isinstance(counts, list) and all(_is_id(v) and 0 <= v < _MAX_RUN for v in counts):
        runs = np.asarray(counts, dtype=np.int64)
    else:
        shown = repr(counts) if len(repr(counts)) <= 60 else repr(counts)[:57] + "..."
        raise InputError(
            f"{where}.counts: expected an RLE string or a list of run lengths (integers from 0 "
            f"to 2^32 - 1), got {shown}"
        )
    _check_coverage(runs, size, where)


def _check_coverage(runs: np.ndarray, size: Sequence[int], where: str) -> None:
    if int(runs.sum()) != size[0] * size[1]:
        raise InputError(
            f"{where}.counts: the runs cover {int(runs.sum())} pixels, not the "
            f"{size[0]}x{size[1]} = {size[0] * size[1]} of its size; the RLE is corrupt"
        )


class _RunChecks:
    """Compressed RLE strings of one file whose runs are checked together, in one vectorised
    pass over all their characters (a file of 27 000 masks costs one pass, not 27 000 small
    numpy calls). Only when that pass finds a problem are the strings checked one by one, so
    the error is the one :func:`_string_runs` gives for the first bad string."""

    def __init__(self) -> None:
        self._items: list[tuple[str, Sequence[int], str]] = []  # (counts, [h, w], where)

    def add(self, counts: str, size: Sequence[int], where: str) -> None:
        self._items.append((counts, size, where))

    @contextlib.contextmanager
    def first_error(self) -> Iterator[None]:
        """Around the loop that adds strings: the first problem of the file in order, whether
        it is in a string added before another check failed or in none of the strings."""
        try:
            yield
        except InputError:
            self._one_by_one()  # a bad string before the failing record comes first
            raise
        if not _strings_cover(
            [counts for counts, _, _ in self._items],
            [size[0] * size[1] for _, size, _ in self._items],
        ):
            self._one_by_one()

    def _one_by_one(self) -> None:
        for counts, size, where in self._items:
            _check_coverage(_string_runs(counts, f"{where}.counts"), size, where)


_MAX_RUN = 1 << 32  # pycocotools stores runs as uint32
_CHUNK_CHARS = 1 << 18
_RLE_DIGITS = bytes(range(ord("0"), ord("0") + 64))  # '0' to 'o'


def _string_runs(counts: str, where: str) -> np.ndarray:
    """Run lengths ``np.ndarray[K]`` int64 of a compressed RLE string, checked.

    The format is pycocotools' (``rleToString``): each run is a group of 5-bit digits, least
    significant first, stored as characters ``'0' + digit`` with bit 0x20 meaning "another digit
    follows" and bit 0x10 of the last digit the sign; runs from the fourth on are stored as the
    difference to the run two before. pycocotools' own reader does not check any of it.
    """
    try:
        digits = np.frombuffer(counts.encode("ascii"), dtype=np.uint8).astype(np.int64) - 48
    except UnicodeEncodeError:
        raise InputError(f"{where}: not an RLE string (non-ASCII characters)") from None
    if not digits.size:
        return digits
    bad = np.flatnonzero((digits < 0) | (digits > 63))
    if bad.size:
        raise InputError(
            f"{where}: character {counts[bad[0]]!r} at {bad[0]} is not an RLE digit ('0' to 'o')"
        )
    more = (digits & 0x20) != 0
    if more[-1]:
        raise InputError(f"{where}: the string ends inside a run; it is truncated")
    ends = np.flatnonzero(~more)
    starts = np.concatenate([[0], ends[:-1] + 1])
    lengths = ends - starts + 1
    if lengths.max() > 7:
        raise InputError(f"{where}: a run of {lengths.max()} digits overflows 32 bits")
    shift = 5 * (np.arange(digits.size) - np.repeat(starts, lengths))
    runs = np.add.reduceat((digits & 0x1F) << shift, starts)
    negative = (digits[ends] & 0x10) != 0
    runs[negative] -= np.left_shift(1, 5 * lengths[negative])
    runs[1::2] = np.cumsum(runs[1::2])  # run i >= 3 is stored minus run i - 2
    runs[2::2] = np.cumsum(runs[2::2])
    if ((runs < 0) | (runs >= _MAX_RUN)).any():
        raise InputError(f"{where}: a run length is negative or overflows 32 bits; it is corrupt")
    return runs


def _strings_cover(strings: Sequence[str], areas: Sequence[int]) -> bool:
    """Whether every string is an RLE that :func:`_string_runs` accepts and whose runs sum to
    its area (``height * width``): vectorised over the strings laid end to end, in chunks of
    about :data:`_CHUNK_CHARS` characters (so that the arrays stay in cache)."""
    start, chars = 0, 0
    for i, counts in enumerate(strings):
        chars += len(counts)
        if chars >= _CHUNK_CHARS:
            if not _chunk_covers(strings[start : i + 1], areas[start : i + 1]):
                return False
            start, chars = i + 1, 0
    return _chunk_covers(strings[start:], areas[start:])


def _chunk_covers(strings: Sequence[str], areas: Sequence[int]) -> bool:
    """:func:`_strings_cover` of one chunk: S strings, L characters, K runs, M digits followed
    by another of the same run (runs of 16 pixels or more; few)."""
    if not strings:
        return True
    lengths = np.fromiter(map(len, strings), dtype=np.int64, count=len(strings))  # [S]
    text = "".join(strings)
    if not lengths.all() or not text.isascii():
        return False
    raw = text.encode("ascii")
    if raw.translate(None, _RLE_DIGITS):  # a character outside '0'..'o' is left
        return False
    digits = np.frombuffer(raw, dtype=np.uint8) - np.uint8(48)  # [L] 0..63
    more = digits >= 0x20  # [L] another digit of the run follows
    last = np.cumsum(lengths) - 1  # [S] each string's last character
    if more[last].any():  # a string ends inside a run
        return False
    ends = np.flatnonzero(~more)  # [K] each run's last (most significant) digit
    top = digits[ends]
    runs = (top & 0x0F).astype(np.int64) - (top & 0x10)  # [K] as one-digit runs, signed
    runs_per_string = lengths.copy()  # [S]
    cont = np.flatnonzero(more)  # [M]
    if cont.size:
        run = np.searchsorted(ends, cont)  # [M] the run of each such digit
        heads = np.flatnonzero(np.diff(run, prepend=-1))  # [G] first digit of a longer run
        multi, num = run[heads], np.diff(heads, append=cont.size)  # [G] run, its digits - 1
        if num.max() > 6:  # more than 7 digits overflow 32 bits
            return False
        place = 5 * (np.arange(cont.size) - np.repeat(heads, num))
        low = np.add.reduceat((digits[cont] & 0x1F).astype(np.int64) << place, heads)
        high = top[multi].astype(np.int64)
        runs[multi] = low + ((high & 0x0F) << (5 * num)) - ((high & 0x10) << (5 * num))
        runs_per_string -= np.bincount(np.searchsorted(last, cont), minlength=len(strings))
    first = np.cumsum(runs_per_string) - runs_per_string  # [S] global index of run 0
    # Run k >= 3 of a string is stored minus run k - 2: a running sum over every other run,
    # restarted in each string, over the even and the odd global indices in turn.
    total = np.zeros(len(strings), dtype=np.int64)  # [S] pixels covered
    for parity in (0, 1):
        values = runs[parity::2]
        sums = np.concatenate([[0], np.cumsum(values)])  # sums[j + 1] = values[: j + 1].sum()
        own = first % 2 == parity  # run 0 falls here, then runs 2, 4, ...; else runs 1, 3, ...
        count = (runs_per_string + own) // 2  # [S] runs of each string here
        start = np.cumsum(count) - count
        decoded = sums[1:] - np.repeat(sums[np.where(own, start + 1, start)], count)
        decoded[start[own]] = values[start[own]]  # run 0 is stored as itself
        if decoded.size and (decoded.min() < 0 or decoded.max() >= _MAX_RUN):
            return False
        filled = count > 0
        if filled.any():
            total[filled] += np.add.reduceat(decoded, start[filled])
    return bool(np.array_equal(total, np.asarray(areas, dtype=np.int64)))


def _to_string_rle(rle: Mapping[str, Any]) -> dict[str, Any]:
    """A checked uncompressed RLE (``counts`` a list) as compressed RLE (``counts`` a str)."""
    packed = mask_utils.frPyObjects(
        {"size": list(rle["size"]), "counts": rle["counts"]}, *rle["size"]
    )
    return {"size": list(rle["size"]), "counts": packed["counts"].decode("ascii")}


def _compressed(rle: Mapping[str, Any]) -> dict[str, Any]:
    """``rle`` as pycocotools takes it: ``counts`` as bytes."""
    counts = rle["counts"]
    return {
        "size": list(rle["size"]),
        "counts": counts.encode() if isinstance(counts, str) else counts,
    }
