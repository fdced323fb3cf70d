"""Region proposal network with detectron2's anchor and proposal-selection numerics."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.rpn import (
    RegionProposalNetwork,
    RPNHead,
    concat_box_prediction_layers,
)
from torchvision.ops import clip_boxes_to_image

from vlpart.core.errors import InputError
from vlpart.model.ops import batched_nms

__all__ = ["AnchorGenerator", "ProposalNetwork", "build_rpn"]

ANCHOR_SIZES = (32, 64, 128, 256, 512)  # one per level P2–P6
ANCHOR_RATIOS = (0.5, 1.0, 2.0)  # height / width
ANCHOR_STRIDES = (4, 8, 16, 32, 64)


class AnchorGenerator(nn.Module):
    """Anchors at every feature-map cell, in detectron2's layout.

    Cell anchors are centred at 0 and **not rounded** (torchvision's generator rounds them);
    per level they are ordered size-major then ratio; cells are row-major with offset 0.

    Args:
        sizes: anchor sizes (sqrt of area) per level.
        aspect_ratios: height/width ratios, shared by all levels.
        strides: feature strides per level (fixed, not inferred from padded sizes).
    """

    def __init__(
        self,
        sizes: Sequence[Sequence[float]] = tuple((s,) for s in ANCHOR_SIZES),
        aspect_ratios: Sequence[float] = ANCHOR_RATIOS,
        strides: Sequence[int] = ANCHOR_STRIDES,
    ) -> None:
        super().__init__()
        self.strides = tuple(strides)
        self.cell_anchors = [cell_anchors(s, aspect_ratios) for s in sizes]

    def num_anchors_per_location(self) -> list[int]:
        return [len(c) for c in self.cell_anchors]

    def grid_anchors(self, grid_sizes: Sequence[tuple[int, int]], like: Tensor) -> list[Tensor]:
        """Anchors of each level: ``Tensor[H_l * W_l * A, 4]``, XYXY input pixels."""
        out = []
        for (h, w), stride, cell in zip(grid_sizes, self.strides, self.cell_anchors, strict=True):
            kw = {"dtype": like.dtype, "device": like.device}
            xs = torch.arange(w, **kw) * stride
            ys = torch.arange(h, **kw) * stride
            yy, xx = torch.meshgrid(ys, xs, indexing="ij")
            shifts = torch.stack([xx, yy, xx, yy], dim=-1).reshape(-1, 1, 4)
            out.append((shifts + cell.to(**kw)[None]).reshape(-1, 4))
        return out

    def forward(self, images: ImageList, features: list[Tensor]) -> list[Tensor]:
        """Returns per image ``Tensor[sum_l H_l * W_l * A, 4]`` (levels concatenated)."""
        levels = self.grid_anchors([f.shape[-2:] for f in features], features[0])
        return [torch.cat(levels)] * len(images.image_sizes)


def cell_anchors(sizes: Sequence[float], aspect_ratios: Sequence[float]) -> Tensor:
    """Anchors centred at the origin: for each size then each ratio ``r = h / w``,
    ``w = sqrt(size² / r)``, ``h = r · w``. Returns ``Tensor[len(sizes) * len(ratios), 4]``."""
    rows = []
    for size in sizes:
        area = float(size) ** 2
        for ratio in aspect_ratios:
            w = math.sqrt(area / ratio)
            h = ratio * w
            rows.append([-w / 2, -h / 2, w / 2, h / 2])
    return torch.tensor(rows, dtype=torch.float32)


class ProposalNetwork(RegionProposalNetwork):
    """torchvision's RPN (head, matching, sampling, losses) with detectron2's test-time
    selection, also returning each proposal's objectness probability.

    Selection per image: top ``pre_nms_top_n`` logits per level, clip, drop empty boxes, NMS per
    level, keep the best ``post_nms_top_n`` — no score threshold, no minimum size.
    """

    def forward(  # type: ignore[override]
        self,
        images: ImageList,
        features: dict[str, Tensor],
        targets: list[dict[str, Tensor]] | None = None,
        *,
        compute_losses: bool = True,
    ) -> tuple[list[Tensor], list[Tensor], dict[str, Tensor]]:
        """Propose boxes.

        Args:
            images: the padded batch and resized sizes.
            features: pyramid maps P2–P6.
            targets: per image ``boxes`` (Tensor[N, 4]); needed for the losses.
            compute_losses: compute the RPN losses (training only).

        Returns:
            Per image proposals ``Tensor[R_i, 4]`` (XYXY input pixels, sorted by score) and their
            objectness probabilities ``Tensor[R_i]``, and the losses ``loss_objectness``,
            ``loss_rpn_box_reg`` (empty when not computed).
        """
        maps = list(features.values())
        objectness, deltas = self.head(maps)
        anchors = self.anchor_generator(images, maps)
        num_per_level = [o[0].numel() for o in objectness]
        objectness, deltas = concat_box_prediction_layers(objectness, deltas)
        proposals = self.box_coder.decode(deltas.detach(), anchors).view(len(anchors), -1, 4)
        boxes, scores = self.filter_proposals(
            proposals, objectness, images.image_sizes, num_per_level
        )
        losses: dict[str, Tensor] = {}
        if self.training and compute_losses:
            if targets is None:
                raise InputError("the RPN losses need targets with 'boxes'")
            labels, matched_gt = self.assign_targets_to_anchors(anchors, targets)
            regression_targets = self.box_coder.encode(matched_gt, anchors)
            loss_obj, loss_reg = self.compute_loss(objectness, deltas, labels, regression_targets)
            losses = {"loss_objectness": loss_obj, "loss_rpn_box_reg": loss_reg}
        return boxes, scores, losses

    def filter_proposals(  # type: ignore[override]
        self,
        proposals: Tensor,
        objectness: Tensor,
        image_shapes: list[tuple[int, int]],
        num_anchors_per_level: list[int],
    ) -> tuple[list[Tensor], list[Tensor]]:
        num_images = proposals.shape[0]
        logits = objectness.detach().reshape(num_images, -1)
        pre_nms, post_nms = self.pre_nms_top_n(), self.post_nms_top_n()
        top_logits, top_boxes, top_levels = [], [], []
        for level, (lvl_logits, lvl_boxes) in enumerate(
            zip(
                logits.split(num_anchors_per_level, 1),
                proposals.split(num_anchors_per_level, 1),
                strict=True,
            )
        ):
            k = torch.sym_min(pre_nms, lvl_logits.shape[1])
            vals, idx = lvl_logits.topk(k, dim=1)
            top_logits.append(vals)
            top_boxes.append(torch.gather(lvl_boxes, 1, idx[..., None].expand(-1, -1, 4)))
            top_levels.append(vals.new_full((k,), level, dtype=torch.int64))
        logits, boxes_all = torch.cat(top_logits, 1), torch.cat(top_boxes, 1)
        levels = torch.cat(top_levels)
        out_boxes, out_scores = [], []
        for boxes, scores, shape in zip(boxes_all, logits, image_shapes, strict=True):
            keep = torch.isfinite(boxes).all(dim=1) & torch.isfinite(scores)
            boxes, scores, lvl = boxes[keep], scores[keep], levels[keep]
            boxes = clip_boxes_to_image(boxes, shape)
            keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
            boxes, scores, lvl = boxes[keep], scores[keep], lvl[keep]
            keep = batched_nms(boxes, scores, lvl, self.nms_thresh)[:post_nms]
            out_boxes.append(boxes[keep])
            out_scores.append(scores[keep].sigmoid())
        return out_boxes, out_scores


def build_rpn(
    in_channels: int,
    *,
    pre_nms_top_n: tuple[int, int] = (2000, 1000),
    post_nms_top_n: tuple[int, int] = (1000, 1000),
    nms_thresh: float = 0.7,
) -> ProposalNetwork:
    """RPN with detectron2's defaults: IoU 0.7/0.3 matching, 256 anchors per image with half
    positives, deltas weights (1, 1, 1, 1).

    Args:
        in_channels: FPN channels.
        pre_nms_top_n: per-level candidates (training, testing).
        post_nms_top_n: proposals kept per image (training, testing).
        nms_thresh: IoU threshold of the per-level NMS.
    """
    anchors = AnchorGenerator()
    head = RPNHead(in_channels, anchors.num_anchors_per_location()[0])
    return ProposalNetwork(
        anchors,
        head,
        fg_iou_thresh=0.7,
        bg_iou_thresh=0.3,
        batch_size_per_image=256,
        positive_fraction=0.5,
        pre_nms_top_n={"training": pre_nms_top_n[0], "testing": pre_nms_top_n[1]},
        post_nms_top_n={"training": post_nms_top_n[0], "testing": post_nms_top_n[1]},
        nms_thresh=nms_thresh,
    )
