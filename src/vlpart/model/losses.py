"""Detector losses as pure functions, and the one table that says which data kind uses which.

Class logits are ``Tensor[R, C + 1]`` with the background in the last column; labels are
``Tensor[R]`` int64 in ``[0, C]`` where ``C`` means background. Every loss returns a scalar and,
for empty inputs, a zero that stays connected to the graph.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from vlpart.core.errors import InputError
from vlpart.core.kinds import DataKind

__all__ = [
    "FED_LOSS_NUM_CLASSES",
    "IMAGE_LABEL_TOPK",
    "LOSS_WEIGHTS",
    "box_regression_loss",
    "federated_class_mask",
    "federated_class_weights",
    "image_label_loss",
    "mask_loss",
    "sigmoid_classification_loss",
]

# Detic/VLPart federated loss: 50 sampled classes, sampling weight image_count ** 0.5.
FED_LOSS_NUM_CLASSES = 50
FED_LOSS_FREQ_POWER = 0.5
# Detic image-label loss: the largest box among the 128 top-scoring proposals.
IMAGE_LABEL_TOPK = 128
# Loss weights of the paper's joint training (image labels 0.1; parsed parts cls × 0.1).
IMAGE_LOSS_WEIGHT = 0.1
PARSED_CLS_WEIGHT = 0.1


_FULL = {
    "loss_objectness": 1.0,
    "loss_rpn_box_reg": 1.0,
    "loss_cls": 1.0,
    "loss_box_reg": 1.0,
    "loss_mask": 1.0,
}
LOSS_WEIGHTS: Mapping[DataKind, Mapping[str, float]] = MappingProxyType(
    {
        DataKind.PART: MappingProxyType(dict(_FULL)),
        DataKind.OBJECT: MappingProxyType(dict(_FULL)),
        DataKind.IMAGE: MappingProxyType({"loss_image": IMAGE_LOSS_WEIGHT}),
        DataKind.PARSED: MappingProxyType({"loss_cls": PARSED_CLS_WEIGHT}),
    }
)
"""The losses each data kind turns on, with their weights; losses not listed are not computed."""


def sigmoid_classification_loss(
    class_logits: Tensor, labels: Tensor, *, class_mask: Tensor | None = None
) -> Tensor:
    """Sigmoid BCE over the C classes; a background proposal has an all-zero target.

    Args:
        class_logits (Tensor[R, C + 1]): logits, background last (its column is not used).
        labels (Tensor[R], int64): class index in ``[0, C]``, ``C`` = background.
        class_mask (Tensor[C] | None): 1 for classes that take part (federated loss), else all.

    Returns:
        ``sum(BCE · mask) / R`` (0 connected to the graph when R = 0).
    """
    num_rois, num_classes = class_logits.shape[0], class_logits.shape[1] - 1
    if num_rois == 0:
        return class_logits.sum() * 0
    target = F.one_hot(labels, num_classes + 1)[:, :num_classes].to(class_logits.dtype)
    loss = F.binary_cross_entropy_with_logits(
        class_logits[:, :num_classes], target, reduction="none"
    )
    if class_mask is not None:
        loss = loss * class_mask.to(loss.dtype)[None, :]
    return loss.sum() / num_rois


def federated_class_weights(image_counts: Tensor) -> Tensor:
    """Sampling weights ``image_count ** 0.5`` of the federated loss (Tensor[C], float)."""
    return image_counts.to(torch.float32).clamp(min=0) ** FED_LOSS_FREQ_POWER


def federated_class_mask(
    labels: Tensor,
    class_weights: Tensor,
    *,
    num_sampled: int = FED_LOSS_NUM_CLASSES,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Classes the federated loss is computed on: every ground-truth class of the batch plus
    random others drawn without replacement with probability ∝ ``class_weights``, up to
    ``num_sampled`` in all.

    Args:
        labels (Tensor[R], int64): labels in ``[0, C]`` (``C`` = background, ignored).
        class_weights (Tensor[C], float): see :func:`federated_class_weights`.
        num_sampled: total number of classes to use.

    Returns:
        Tensor[C], float: 1 for the chosen classes, 0 elsewhere.
    """
    num_classes = class_weights.shape[0]
    mask = class_weights.new_zeros(num_classes)
    present = labels[labels < num_classes].unique()
    mask[present] = 1.0
    prob = class_weights.to(torch.float32).clone()
    prob[present] = 0.0
    num_more = min(num_sampled - len(present), int((prob > 0).sum()))
    if num_more > 0:
        extra = torch.multinomial(prob, num_more, replacement=False, generator=generator)
        mask[extra.to(mask.device)] = 1.0
    return mask


def box_regression_loss(pred_deltas: Tensor, target_deltas: Tensor, foreground: Tensor) -> Tensor:
    """L1 loss of class-agnostic box deltas on foreground proposals, normalised by all R.

    Args:
        pred_deltas (Tensor[R, 4]): predicted (dx, dy, dw, dh), already weighted.
        target_deltas (Tensor[R, 4]): encoded ground-truth deltas (ignored for background).
        foreground (Tensor[R], bool): proposals matched to an object.

    Returns:
        ``sum |pred - target| over foreground / R``.
    """
    num_rois = pred_deltas.shape[0]
    if num_rois == 0 or not bool(foreground.any()):
        return pred_deltas.sum() * 0
    loss = F.l1_loss(pred_deltas[foreground], target_deltas[foreground], reduction="sum")
    return loss / num_rois


def mask_loss(mask_logits: Tensor, targets: Tensor) -> Tensor:
    """Mean per-pixel BCE of class-agnostic mask logits.

    Args:
        mask_logits (Tensor[P, 1, M, M]): logits of the positive proposals.
        targets (Tensor[P, M, M], float): binary targets.
    """
    if mask_logits.shape[0] == 0:
        return mask_logits.sum() * 0
    return F.binary_cross_entropy_with_logits(mask_logits[:, 0], targets.to(mask_logits.dtype))


def image_label_loss(
    class_logits: Tensor,
    proposal_boxes: Tensor,
    image_labels: Tensor,
    *,
    mode: Literal["max_size", "max_score"] = "max_size",
) -> Tensor:
    """Weak supervision from image labels (Detic): for each label, one proposal is chosen and
    its C-way sigmoid BCE against that label (one-hot) is summed over classes.

    Args:
        class_logits (Tensor[R, C + 1]): logits of one image's top proposals.
        proposal_boxes (Tensor[R, 4]): their boxes, XYXY.
        image_labels (Tensor[K], int64): classes present in the image.
        mode: ``"max_size"`` picks the largest proposal (the paper's choice), ``"max_score"``
            the proposal with the highest logit for the label.

    Returns:
        Mean over the K labels (0 connected to the graph when K = 0 or R = 0).
    """
    num_classes = class_logits.shape[1] - 1
    if len(image_labels) == 0 or class_logits.shape[0] == 0:
        return class_logits.sum() * 0
    if mode == "max_size":
        areas = (proposal_boxes[:, 2] - proposal_boxes[:, 0]) * (
            proposal_boxes[:, 3] - proposal_boxes[:, 1]
        )
        chosen = areas.argmax().expand(len(image_labels))
    elif mode == "max_score":
        chosen = class_logits[:, image_labels].argmax(dim=0)
    else:
        raise InputError(f"unknown image-label mode '{mode}'; use 'max_size' or 'max_score'")
    target = F.one_hot(image_labels, num_classes).to(class_logits.dtype)
    loss = F.binary_cross_entropy_with_logits(
        class_logits[chosen, :num_classes], target, reduction="sum"
    )
    return loss / len(image_labels)
