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

import copy
import json
import logging
import math
from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from faster_coco_eval import COCO, COCOeval_faster
from torchvision.ops import box_iou
from tqdm import tqdm

from vlpart.core.coco import (
    category_vocabulary,
    load_coco,
    load_results,
    read_json,
    segmentation_box,
)
from vlpart.core.errors import InputError
from vlpart.core.fileio import write_text_atomic
from vlpart.core.vocab import BUILTIN_VOCABULARIES, Vocabulary, load_builtin, name_key

__all__ = [
    "COCO_MAX_DETS",
    "IOU_TYPES",
    "LVIS_MAX_DETS",
    "PROPOSAL_IOU_THRESH",
    "PROPOSAL_KS",
    "CategoryRow",
    "EvalReport",
    "evaluate_results",
    "proposal_recall",
]

logger = logging.getLogger(__name__)

IOU_TYPES = ("bbox", "segm")
# COCO's detections per image (pycocotools' largest maxDets).
COCO_MAX_DETS = 100
# LVIS / PACO: detections kept per image across all categories (lvis-api ``LVISResults``).
LVIS_MAX_DETS = 300
# Proposal recall of the paper's Table 2: AR@k at IoU 0.5.
PROPOSAL_KS = (30, 100, 300, 1000)
PROPOSAL_IOU_THRESH = 0.5

SPLITS = ("base", "novel")
# faster-coco-eval's LVIS mode groups categories by this field (for APr/APc/APf, which this
# module does not report); ground truth without it gets a placeholder group.
_LVIS_FREQUENCY_KEY = "frequency"
_LVIS_IMAGE_KEYS = ("neg_category_ids", "not_exhaustive_category_ids")

# Summary rows: metric key -> label in the markdown table.
_METRIC_LABELS = {
    "AP": "AP",
    "AP50": "AP50",
    "AP75": "AP75",
    "AP_base": "AP (base)",
    "AP50_base": "AP50 (base)",
    "AP_novel": "AP (novel)",
    "AP50_novel": "AP50 (novel)",
    "AP_obj": "AP (objects)",
    "AP50_obj": "AP50 (objects)",
    "AP_part": "AP (parts)",
    "AP50_part": "AP50 (parts)",
    "AP_part_hier": "AP (parts, hierarchical)",
    "AP50_part_hier": "AP50 (parts, hierarchical)",
}


@dataclass(frozen=True)
class CategoryRow:
    """Per-category result.

    Attributes:
        id: the ground truth's category id.
        name: the ground truth's category name.
        object: the object the category is or belongs to.
        part: the part name, ``None`` for an object category.
        split: ``"base"``, ``"novel"`` or ``None`` (no split, or not listed in it).
        num_gt: non-crowd ground-truth instances.
        ap: IoU type -> AP@[.5:.95] in [0, 1]; ``None`` when ``num_gt`` is 0.
        ap50: IoU type -> AP@.5 in [0, 1]; ``None`` when ``num_gt`` is 0.
    """

    id: int
    name: str
    object: str
    part: str | None
    split: str | None
    num_gt: int
    ap: dict[str, float | None]
    ap50: dict[str, float | None]


@dataclass(frozen=True)
class EvalReport:
    """Everything :func:`evaluate_results` measured.

    Attributes:
        iou_types: the evaluated IoU types (``"bbox"``, ``"segm"``).
        metrics: IoU type -> metric key (``AP``, ``AP50``, ``AP75``, ``AP_base``, ``AP50_base``,
            ``AP_novel``, ``AP50_novel``, ``AP_obj``, ``AP_part``, ``AP_part_hier`` and their
            ``AP50_*`` twins, where they apply) -> value in [0, 1], or ``None`` when no category
            of that group has ground truth.
        categories: one row per ground-truth category, in id order.
        objects: objects whose per-part AP is detailed, as the caller spelled them.
        lvis_style: whether the LVIS protocol was used.
        split_source: where the base/novel split came from (a taxonomy name, a file, ``"mapping"``),
            or ``None``.
        num_images: images in the ground truth.
        num_detections: detections evaluated (after the LVIS per-image cap).
    """

    iou_types: tuple[str, ...]
    metrics: dict[str, dict[str, float | None]]
    categories: tuple[CategoryRow, ...]
    objects: tuple[str, ...]
    lvis_style: bool
    split_source: str | None
    num_images: int
    num_detections: int

    def parts_of(self, obj: str) -> list[CategoryRow]:
        """The part rows of object ``obj`` (case-insensitive), in id order."""
        key = name_key(obj)
        return [r for r in self.categories if r.part is not None and name_key(r.object) == key]

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict (values in [0, 1], ``None`` for "no ground truth")."""
        details = {
            obj: {
                t: {r.part: {"AP": r.ap[t], "AP50": r.ap50[t]} for r in self.parts_of(obj)}
                for t in self.iou_types
            }
            for obj in self.objects
        }
        return {
            "protocol": "lvis" if self.lvis_style else "coco",
            "max_dets_per_image": LVIS_MAX_DETS if self.lvis_style else COCO_MAX_DETS,
            "iou_types": list(self.iou_types),
            "split_source": self.split_source,
            "num_images": self.num_images,
            "num_detections": self.num_detections,
            "metrics": self.metrics,
            "objects": details,
            "categories": [
                {
                    "id": r.id,
                    "name": r.name,
                    "object": r.object,
                    "part": r.part,
                    "split": r.split,
                    "num_gt": r.num_gt,
                    **{t: {"AP": r.ap[t], "AP50": r.ap50[t]} for t in self.iou_types},
                }
                for r in self.categories
            ],
        }

    def to_markdown(self) -> str:
        """Summary, per-object part tables and the per-category table, AP in percent."""
        protocol = "LVIS" if self.lvis_style else "COCO"
        max_dets = LVIS_MAX_DETS if self.lvis_style else COCO_MAX_DETS
        lines = [
            f"# Evaluation ({protocol} protocol, at most {max_dets} detections per image)",
            "",
            f"{self.num_images} images, {self.num_detections} detections, "
            f"{sum(r.num_gt > 0 for r in self.categories)}/{len(self.categories)} categories "
            f"with ground truth; AP in %"
            + (f"; base/novel split from {self.split_source}" if self.split_source else ""),
            "",
            _md_row(["metric", *self.iou_types]),
            _md_row(["---", *["---:"] * len(self.iou_types)]),
        ]
        keys = [k for k in _METRIC_LABELS if any(k in self.metrics[t] for t in self.iou_types)]
        for key in keys:
            values = [_pct(self.metrics[t].get(key)) for t in self.iou_types]
            lines.append(_md_row([_METRIC_LABELS[key], *values]))
        for obj in self.objects:
            rows = self.parts_of(obj)
            lines += ["", f"## {obj}: {', '.join(str(r.part) for r in rows)}", ""]
            lines.append(_md_row(["", *(str(r.part) for r in rows)]))
            lines.append(_md_row(["---", *["---:"] * len(rows)]))
            for t in self.iou_types:
                lines.append(_md_row([f"{t} AP", *(_pct(r.ap[t]) for r in rows)]))
                lines.append(_md_row([f"{t} AP50", *(_pct(r.ap50[t]) for r in rows)]))
        header = ["id", "category", "split", "GT"]
        for t in self.iou_types:
            header += [f"{t} AP", f"{t} AP50"]
        lines += ["", "## Per category", "", _md_row(header)]
        lines.append(_md_row(["---:", "---", "---", "---:", *["---:"] * 2 * len(self.iou_types)]))
        for r in self.categories:
            cells = [str(r.id), r.name, r.split or "-", str(r.num_gt)]
            for t in self.iou_types:
                cells += [_pct(r.ap[t]), _pct(r.ap50[t])]
            lines.append(_md_row(cells))
        return "\n".join(lines) + "\n"

    def save(self, directory: str | Path) -> tuple[Path, Path]:
        """Write ``metrics.json`` and ``metrics.md`` into ``directory`` (created if needed).

        Each file is written to a temporary file in the same directory and renamed, so an
        interrupted run never leaves a truncated file behind.

        Returns:
            The paths of ``metrics.json`` and ``metrics.md``.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        json_path, md_path = directory / "metrics.json", directory / "metrics.md"
        write_text_atomic(json_path, json.dumps(self.to_json(), indent=2) + "\n")
        write_text_atomic(md_path, self.to_markdown())
        return json_path, md_path


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
    gt_data, gt_source = _load_gt(gt)
    det_source = str(results) if isinstance(results, str | Path) else "results"
    dets = load_results(results, gt_data)
    iou_types = _resolve_iou_types(iou_types, gt_data, dets, gt_source, det_source)
    cats = sorted(gt_data["categories"], key=lambda c: c["id"])
    names = [c["name"] for c in cats]
    taxonomy = _match_taxonomy(names)
    split_of, split_source = _resolve_split(split, names, taxonomy)
    obj_part = [(c.object, c.part) for c in category_vocabulary(cats, name=gt_source)]
    for wanted in objects:
        if not any(
            part is not None and name_key(obj) == name_key(wanted) for obj, part in obj_part
        ):
            known = sorted({obj for obj, part in obj_part if part is not None})
            raise InputError(
                f"{gt_source}: no part categories of object {wanted!r} in the ground truth"
                + (f" (objects with parts: {', '.join(known)})" if known else "")
            )
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
    for iou_type in iou_types:
        ap[iou_type], ap50[iou_type], ap75[iou_type] = _per_category_ap(
            gt_data, dets, iou_type, lvis_style=lvis_style
        )

    rows = []
    for k, (cat, (obj, part)) in enumerate(zip(cats, obj_part, strict=True)):
        rows.append(
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
        )
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


def proposal_recall(
    gt: str | Path | Mapping[str, Any],
    proposals: Mapping[int, torch.Tensor | np.ndarray],
    *,
    ks: Sequence[int] = PROPOSAL_KS,
    iou_thresh: float = PROPOSAL_IOU_THRESH,
    category_ids: Collection[int] | None = None,
) -> dict[int, float]:
    """Class-agnostic proposal recall AR@k (the paper's Table 2).

    A ground-truth box counts as recalled at ``k`` when at least one of the image's ``k``
    highest-scoring proposals overlaps it with IoU >= ``iou_thresh``. Matching is not one-to-one:
    one proposal may recall several ground-truth boxes. AR@k is the number of recalled boxes
    divided by the number of ground-truth boxes, pooled over all images (not a mean of per-image
    recalls). Crowd annotations are not counted.

    Args:
        gt: COCO ground truth (file or dict).
        proposals: image id -> ``[R, 4]`` proposal boxes, XYXY absolute pixels of the original
            image, rows ordered by descending score (as the RPN returns them). An image of the
            ground truth missing here has no proposals.
        ks: numbers of top proposals to evaluate.
        iou_thresh: IoU a proposal needs to recall a box.
        category_ids: count only ground truth of these categories (e.g. the novel parts);
            ``None`` counts all.

    Returns:
        ``{k: recall}`` with recall in [0, 1]; NaN for every k when there is no ground truth.

    Raises:
        ValueError: ``ks`` is empty or not positive, ``proposals`` names an image that is not in
            the ground truth, or a proposal array is not ``[R, 4]``.
    """
    if not ks or any(int(k) < 1 for k in ks):
        raise InputError(f"ks must be positive proposal counts, got {list(ks)}")
    gt_data, gt_source = _load_gt(gt)
    image_ids = [img["id"] for img in gt_data["images"]]
    unknown = set(proposals) - set(image_ids)
    if unknown:
        raise InputError(f"proposals for image ids not in {gt_source}: {sorted(unknown)[:5]}")
    gt_boxes: dict[int, list[list[float]]] = defaultdict(list)
    for ann in gt_data["annotations"]:
        if ann.get("iscrowd", 0) or (
            category_ids is not None and ann["category_id"] not in category_ids
        ):
            continue
        x, y, w, h = ann["bbox"]
        gt_boxes[ann["image_id"]].append([x, y, x + w, y + h])
    missing = [i for i in gt_boxes if i not in proposals]
    if missing:
        logger.warning(
            "%d images with ground truth have no proposals; their boxes count as missed",
            len(missing),
        )
    ks = sorted({int(k) for k in ks})
    recalled = dict.fromkeys(ks, 0)
    total = 0
    for image_id in tqdm(image_ids, desc="proposal recall", unit="img", disable=None):
        if not gt_boxes[image_id]:
            continue
        boxes = torch.tensor(gt_boxes[image_id], dtype=torch.float64)
        total += len(boxes)
        props = torch.as_tensor(proposals.get(image_id, np.zeros((0, 4))))
        props = props.detach().to("cpu", torch.float64)
        if props.ndim != 2 or props.shape[1] != 4:
            raise InputError(
                f"proposals of image {image_id}: expected [R, 4] XYXY boxes, got "
                f"shape {list(props.shape)}"
            )
        iou = box_iou(boxes, props[: ks[-1]])  # [N, min(R, max k)]
        hit = iou >= iou_thresh
        for k in ks:
            recalled[k] += int(hit[:, :k].any(dim=1).sum())
    if total == 0:
        logger.warning("%s: no ground-truth boxes to recall", gt_source)
        return dict.fromkeys(ks, math.nan)
    return {k: recalled[k] / total for k in ks}


def _per_category_ap(
    gt_data: Mapping[str, Any], dets: list[dict], iou_type: str, *, lvis_style: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AP@[.5:.95], AP@.5 and AP@.75 of each category, in id order; NaN without ground truth.

    Averages the interpolated precision over recall thresholds (and IoU thresholds) exactly as
    pycocotools' ``summarize`` does, for one category at a time (area "all", the largest
    maxDets). Returns three float64 arrays ``[C]``.
    """
    # The evaluator writes into the annotation dicts: give it its own copies.
    coco_gt = COCO(copy.deepcopy(dict(gt_data)))
    if iou_type == "segm":
        # As detectron2 does: without "bbox" the mask gives the detection's area.
        dets = [{k: v for k, v in d.items() if k != "bbox"} for d in dets]
    else:
        dets = [
            d if "bbox" in d else {**d, "bbox": segmentation_box(d["segmentation"])} for d in dets
        ]
    coco_dt = coco_gt.loadRes(copy.deepcopy(dets))
    evaluator = COCOeval_faster(
        coco_gt, coco_dt, iou_type, lvis_style=lvis_style, print_function=logger.debug
    )
    if lvis_style:
        evaluator.params.maxDets = [LVIS_MAX_DETS]
    evaluator.evaluate()
    evaluator.accumulate()
    params = evaluator.params
    area_all = params.areaRngLbl.index("all")
    precision = np.asarray(evaluator.eval["precision"])[:, :, :, area_all, -1]  # [T, R, C]
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


def _load_gt(gt: str | Path | Mapping[str, Any]) -> tuple[dict[str, Any], str]:
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


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _md_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"
