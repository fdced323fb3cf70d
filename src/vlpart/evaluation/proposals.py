"""Class-agnostic proposal recall of the paper's Table 2 (``vlpart eval --proposals``): AR@k at
IoU 0.5 of a model's RPN proposals against every ground-truth box."""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.ops import box_iou
from tqdm import tqdm

from vlpart.core.errors import InputError
from vlpart.evaluation.coco_eval import load_gt

__all__ = ["PROPOSAL_IOU_THRESH", "PROPOSAL_KS", "proposal_recall"]

logger = logging.getLogger(__name__)

# Proposal recall of the paper's Table 2: AR@k at IoU 0.5.
PROPOSAL_KS = (30, 100, 300, 1000)

PROPOSAL_IOU_THRESH = 0.5


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
    gt_data, gt_source = load_gt(gt)
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
