"""Evaluation as the VLPart paper reports it: COCO/LVIS box and mask AP, base/novel splits, per-part
tables and class-agnostic proposal recall.

The matcher and the precision/recall accumulation are faster-coco-eval's (C++, numbers identical to
pycocotools); this module validates inputs, picks the protocol and turns the precision array into
the paper's rows:

* **COCO style** (Pascal-Part, PartImageNet, ...): AP, AP50, AP75 over all categories with ground
  truth; for a taxonomy with a base/novel split, the mean per-category AP over base and over novel
  categories; per-part AP of chosen objects (the paper's "dog: head, leg, paw, tail, torso" rows).
* **LVIS style** (PACO, ``lvis_style=True``): federated annotations. A detection of a category that
  is neither annotated on its image nor listed in the image's ``neg_category_ids`` is not evaluated;
  detections of a negative category are false positives; unmatched detections of a category in the
  image's ``not_exhaustive_category_ids`` are ignored; at most :data:`LVIS_MAX_DETS` detections per
  image (highest scores, across categories). faster-coco-eval's ``lvis_style`` mode implements the
  matching rules; it was checked against the official ``lvis`` API on random federated data (same
  precision arrays) before being relied on here.
* When the categories mix objects and parts (PACO), also object AP, part AP and the hierarchical
  part AP: for each part name the mean AP over the objects that have it, then the mean over part
  names.

Metric values are fractions in [0, 1] (``None`` where no category has ground truth); the markdown
table shows them in percent, as the paper does.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from faster_coco_eval import COCO, COCOeval_faster

from vlpart.core.coco import (
    category_vocabulary,
    load_coco,
    load_results,
    read_json,
    segmentation_box,
)
from vlpart.core.errors import InputError
from vlpart.core.vocab import BUILTIN_VOCABULARIES, Vocabulary, load_builtin, name_key
from vlpart.evaluation.report import COCO_MAX_DETS, LVIS_MAX_DETS, CategoryRow, EvalReport

__all__ = [
    "COCO_MAX_DETS",
    "IOU_TYPES",
    "LVIS_MAX_DETS",
    "evaluate_results",
    "load_gt",
]

logger = logging.getLogger(__name__)

IOU_TYPES = ("bbox", "segm")

SPLITS = ("base", "novel")
# faster-coco-eval's LVIS mode groups categories by this field (for APr/APc/APf, which this
# module does not report); ground truth without it gets a placeholder group.
_LVIS_FREQUENCY_KEY = "frequency"
_LVIS_IMAGE_KEYS = ("neg_category_ids", "not_exhaustive_category_ids")


def evaluate_results(
    gt: str | Path | Mapping[str, Any],
    results: str | Path | Sequence[Mapping[str, Any]],
    *,
    iou_types: Sequence[str] | None = None,
    split: str | Path | Mapping[str, Sequence[str]] | None = None,
    objects: Sequence[str] = (),
    lvis_style: bool = False,
) -> EvalReport:
    """Evaluate COCO-format detections against COCO-format ground truth.

    Args:
        gt: ground truth: a COCO JSON file or its loaded dict (``images`` with ``id``, ``width``,
            ``height`` and, for LVIS style, ``neg_category_ids`` / ``not_exhaustive_category_ids``;
            ``annotations`` with ``bbox`` XYWH and, for masks, ``segmentation``; ``categories``).
        results: detections: a COCO results JSON file or the list itself; each has ``image_id``,
            ``category_id``, ``score`` and ``bbox`` (XYWH, absolute pixels) and/or
            ``segmentation`` (RLE of the full image, as ``pycocotools.mask.encode`` returns).
        iou_types: any of :data:`IOU_TYPES`; ``None`` evaluates boxes, plus masks when both the
            ground truth and every detection carry them.
        split: base/novel categories: a built-in taxonomy name, a JSON file or a mapping
            ``{"base": [names], "novel": [names]}``; names match the ground truth's category
            names case-insensitively (``:``, ``_`` and blanks are equivalent). ``None`` takes the
            split of the built-in taxonomy whose names cover the ground truth's, if any.
        objects: objects whose per-part AP to detail, e.g. ``("dog",)``.
        lvis_style: use the LVIS protocol (PACO): see the module docstring.

    Returns:
        The metrics, per-category rows and part details.

    Raises:
        FileNotFoundError: a file does not exist.
        ValueError: a file is not valid JSON or not in COCO format, a detection refers to an
            unknown image or category, masks are requested but missing, an object in
            ``objects`` has no part categories, or the split is malformed.
    """
    gt_data, gt_source = load_gt(gt)
    det_source = str(results) if isinstance(results, str | Path) else "results"
    dets = load_results(results, gt_data)
    iou_types = _resolve_iou_types(iou_types, gt_data, dets, gt_source, det_source)
    cats = sorted(gt_data["categories"], key=lambda c: c["id"])
    names = [c["name"] for c in cats]
    taxonomy = _match_taxonomy(names)
    split_of, split_source = _resolve_split(split, names, taxonomy)
    obj_part = [(c.object, c.part) for c in category_vocabulary(cats, name=gt_source)]
    _check_objects(objects, obj_part, gt_source)
    if lvis_style:
        gt_data = _with_lvis_defaults(gt_data, gt_source)
        dets = _top_per_image(dets, LVIS_MAX_DETS)

    num_gt: dict[int, int] = defaultdict(int)
    for ann in gt_data["annotations"]:
        if not ann.get("iscrowd", 0):
            num_gt[ann["category_id"]] += 1
    ap: dict[str, np.ndarray] = {}
    ap50: dict[str, np.ndarray] = {}
    ap75: dict[str, np.ndarray] = {}
    coco_gt, coco_dt = _coco_pair(gt_data, dets)
    for iou_type in iou_types:
        ap[iou_type], ap50[iou_type], ap75[iou_type] = _per_category_ap(
            coco_gt, coco_dt, iou_type, lvis_style=lvis_style
        )

    rows = [
        CategoryRow(
            id=cat["id"],
            name=cat["name"],
            object=obj,
            part=part,
            split=split_of.get(name_key(cat["name"])),
            num_gt=num_gt[cat["id"]],
            ap={t: _opt(ap[t][k]) for t in iou_types},
            ap50={t: _opt(ap50[t][k]) for t in iou_types},
        )
        for k, (cat, (obj, part)) in enumerate(zip(cats, obj_part, strict=True))
    ]
    metrics = {
        t: _summary(rows, t, ap75=ap75[t], with_split=split_source is not None) for t in iou_types
    }
    return EvalReport(
        iou_types=iou_types,
        metrics=metrics,
        categories=tuple(rows),
        objects=tuple(o.strip() for o in objects),
        lvis_style=lvis_style,
        split_source=split_source,
        num_images=len(gt_data["images"]),
        num_detections=len(dets),
    )


def _check_objects(
    objects: Sequence[str], obj_part: Sequence[tuple[str, str | None]], gt_source: str
) -> None:
    """Every object of ``objects`` has part categories in the ground truth."""
    for wanted in objects:
        if not any(
            part is not None and name_key(obj) == name_key(wanted) for obj, part in obj_part
        ):
            known = sorted({obj for obj, part in obj_part if part is not None})
            raise InputError(
                f"{gt_source}: no part categories of object {wanted!r} in the ground truth"
                + (f" (objects with parts: {', '.join(known)})" if known else "")
            )


def _coco_pair(gt_data: Mapping[str, Any], dets: Sequence[dict]) -> tuple[COCO, COCO]:
    """faster-coco-eval's ground truth and detections, shared by every IoU type.

    The evaluator writes into the annotation dicts (``ignore``, ``rle``, ``id``, ``area``): the
    ground truth gets shallow copies of the caller's annotations; ``dets`` are
    :func:`~vlpart.core.coco.load_results`' copies already. Every detection gets a box (from
    its mask where it has none), so that one results object serves boxes and masks; its
    ``area`` is then the box's, which only the small/medium/large ranges would read.
    """
    coco_gt = COCO({**gt_data, "annotations": [dict(a) for a in gt_data["annotations"]]})
    dets = [d if "bbox" in d else {**d, "bbox": segmentation_box(d["segmentation"])} for d in dets]
    return coco_gt, coco_gt.loadRes(dets)


def _per_category_ap(
    coco_gt: COCO, coco_dt: COCO, iou_type: str, *, lvis_style: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AP@[.5:.95], AP@.5 and AP@.75 of each category, in id order; NaN without ground truth.

    Averages the interpolated precision over recall thresholds (and IoU thresholds) exactly as
    pycocotools' ``summarize`` does, for one category at a time, area "all" and the largest
    maxDets, the only area range and detection limit evaluated. Returns three float64 arrays
    ``[C]``.
    """
    evaluator = COCOeval_faster(
        coco_gt, coco_dt, iou_type, lvis_style=lvis_style, print_function=logger.debug
    )
    params = evaluator.params
    params.maxDets = [LVIS_MAX_DETS if lvis_style else COCO_MAX_DETS]
    params.areaRng, params.areaRngLbl = params.areaRng[:1], params.areaRngLbl[:1]  # "all"
    evaluator.evaluate()
    evaluator.accumulate()
    precision = np.asarray(evaluator.eval["precision"])[:, :, :, 0, -1]  # [T, R, C]
    thrs = np.asarray(params.iouThrs)

    def mean_valid(p: np.ndarray) -> np.ndarray:  # [..., C] -> [C], NaN where all invalid
        p = p.reshape(-1, p.shape[-1])
        valid = p > -1
        sums = np.where(valid, p, 0.0).sum(axis=0)
        counts = valid.sum(axis=0)
        return np.divide(sums, counts, out=np.full(len(sums), np.nan), where=counts > 0)

    at = {thr: int(np.flatnonzero(np.isclose(thrs, thr))[0]) for thr in (0.5, 0.75)}
    return mean_valid(precision), mean_valid(precision[at[0.5]]), mean_valid(precision[at[0.75]])


def _summary(
    rows: Sequence[CategoryRow], iou_type: str, *, ap75: np.ndarray, with_split: bool
) -> dict[str, float | None]:
    """Means of per-category AP over all / base / novel / object / part categories."""

    def mean(values: Sequence[float | None]) -> float | None:
        kept = [v for v in values if v is not None]
        return float(np.mean(kept)) if kept else None

    def group(name: str, members: Sequence[CategoryRow]) -> dict[str, float | None]:
        return {
            f"AP{name}": mean([r.ap[iou_type] for r in members]),
            f"AP50{name}": mean([r.ap50[iou_type] for r in members]),
        }

    out = {**group("", rows), "AP75": mean([_opt(v) for v in ap75])}
    if with_split:
        for split in SPLITS:
            out.update(group(f"_{split}", [r for r in rows if r.split == split]))
    objs = [r for r in rows if r.part is None]
    parts = [r for r in rows if r.part is not None]
    if objs and parts:
        out.update(group("_obj", objs))
        out.update(group("_part", parts))
        by_part: dict[str, list[CategoryRow]] = defaultdict(list)
        for r in parts:
            by_part[name_key(str(r.part))].append(r)
        for key, metric in (("AP_part_hier", "ap"), ("AP50_part_hier", "ap50")):
            per_part = [mean([getattr(r, metric)[iou_type] for r in g]) for g in by_part.values()]
            out[key] = mean(per_part)
    return out


def load_gt(gt: str | Path | Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    """Validated COCO ground truth and a name for error messages."""
    source = "ground truth" if isinstance(gt, Mapping) else str(gt)
    return load_coco(gt, what="ground-truth"), source


def _resolve_iou_types(
    iou_types: Sequence[str] | None,
    gt_data: Mapping[str, Any],
    dets: Sequence[Mapping[str, Any]],
    gt_source: str,
    det_source: str,
) -> tuple[str, ...]:
    gt_masks = all("segmentation" in a for a in gt_data["annotations"])
    det_masks = all("segmentation" in d for d in dets)
    det_boxes = all("bbox" in d for d in dets)
    if iou_types is None:
        chosen = ("bbox", "segm") if gt_masks and det_masks else ("bbox",)
        if chosen == ("bbox",):
            logger.info(
                "evaluating boxes only: %s carries no masks",
                gt_source if not gt_masks else det_source,
            )
        return chosen
    chosen = tuple(dict.fromkeys(iou_types))
    bad = [t for t in chosen if t not in IOU_TYPES]
    if bad or not chosen:
        raise InputError(f"unknown IoU types {bad or list(iou_types)}; choose from {IOU_TYPES}")
    if "segm" in chosen and not gt_masks:
        raise InputError(
            f"{gt_source}: mask AP needs a 'segmentation' on every annotation; "
            "evaluate with iou_types=('bbox',)"
        )
    if "segm" in chosen and not det_masks:
        raise InputError(
            f"{det_source}: mask AP needs an RLE 'segmentation' on every "
            "detection; evaluate with iou_types=('bbox',)"
        )
    if "bbox" in chosen and not (det_boxes or det_masks):
        raise InputError(f"{det_source}: every detection needs a 'bbox' or a 'segmentation'")
    return chosen


def _match_taxonomy(names: Sequence[str]) -> Vocabulary | None:
    """The first built-in taxonomy whose category names include all of ``names``."""
    wanted = {name_key(n) for n in names}
    for tax in BUILTIN_VOCABULARIES:
        vocab = load_builtin(tax)
        if wanted <= {name_key(n) for n in vocab.names}:
            return vocab
    return None


def _resolve_split(
    split: str | Path | Mapping[str, Sequence[str]] | None,
    names: Sequence[str],
    taxonomy: Vocabulary | None,
) -> tuple[dict[str, str], str | None]:
    """Normalised category name -> ``"base"``/``"novel"``, and where that came from."""
    if split is None:
        if taxonomy is None or not any(c.split for c in taxonomy):
            return {}, None
        return {name_key(c.name): c.split for c in taxonomy if c.split}, taxonomy.name
    if isinstance(split, Mapping):
        data, source = split, "mapping"
    elif str(split) in BUILTIN_VOCABULARIES:
        vocab = load_builtin(str(split))
        if not any(c.split for c in vocab):
            raise InputError(f"built-in taxonomy {split!r} has no base/novel split")
        data = {s: [c.name for c in vocab if c.split == s] for s in SPLITS}
        source = vocab.name
    else:
        data, source = read_json(split, what="split"), str(split)
    if not isinstance(data, Mapping) or set(data) - set(SPLITS) or not data:
        raise InputError(
            f"{source}: a split must be an object with 'base' and/or 'novel' "
            "lists of category names"
        )
    split_of: dict[str, str] = {}
    for name in SPLITS:
        members = data.get(name, [])
        if not isinstance(members, (list, tuple)) or not all(isinstance(m, str) for m in members):
            raise InputError(f"{source}: '{name}' must be a list of category names")
        for member in members:
            key = name_key(member)
            if split_of.get(key, name) != name:
                raise InputError(f"{source}: {member!r} is both base and novel")
            split_of[key] = name
    gt_keys = {name_key(n) for n in names}
    if not gt_keys & set(split_of):
        raise InputError(
            f"{source}: none of its category names is a ground-truth category (e.g. {names[0]!r})"
        )
    return split_of, source


def _with_lvis_defaults(gt_data: Mapping[str, Any], source: str) -> dict[str, Any]:
    """A copy of the ground truth that faster-coco-eval's LVIS mode accepts."""
    if not any(key in img for img in gt_data["images"] for key in _LVIS_IMAGE_KEYS):
        logger.warning(
            "%s: LVIS-style evaluation, but no image lists neg_category_ids or "
            "not_exhaustive_category_ids: only categories annotated on an image are "
            "evaluated there",
            source,
        )
    cats = [
        c if _LVIS_FREQUENCY_KEY in c else {**c, _LVIS_FREQUENCY_KEY: "f"}
        for c in gt_data["categories"]
    ]
    return {**gt_data, "categories": cats}


def _top_per_image(dets: Sequence[dict], max_dets: int) -> list[dict]:
    """The ``max_dets`` highest-scoring detections of each image (stable for ties)."""
    by_image: dict[int, list[dict]] = defaultdict(list)
    for det in dets:
        by_image[det["image_id"]].append(det)
    kept = []
    for image_dets in by_image.values():
        kept += sorted(image_dets, key=lambda d: -d["score"])[:max_dets]
    if len(kept) < len(dets):
        logger.info(
            "kept the top %d detections per image: %d of %d", max_dets, len(kept), len(dets)
        )
    return kept


def _opt(value: float) -> float | None:
    return None if math.isnan(value) else float(value)
