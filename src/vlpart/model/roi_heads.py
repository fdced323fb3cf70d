"""RoI heads with a text classifier, sigmoid/federated/image-level losses, class-agnostic box
regression and masks (the 3-stage cascade variant is :mod:`vlpart.model.cascade`).

torchvision's :class:`~torchvision.models.detection.roi_heads.RoIHeads` supplies matching,
sampling and box coding; ``forward`` is overridden because the stock one calls softmax
``fastrcnn_loss`` and class-specific post-processing inside it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal

import torch
from torch import Tensor, nn
from torchvision.models.detection._utils import BoxCoder
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.ops import clip_boxes_to_image

from vlpart.core.errors import InputError
from vlpart.model.losses import (
    IMAGE_LABEL_TOPK,
    box_regression_loss,
    federated_class_mask,
    federated_class_weights,
    image_label_loss,
    mask_loss,
    sigmoid_classification_loss,
)
from vlpart.model.ops import MultiLevelRoIAlign, batched_nms, mask_targets
from vlpart.model.text_classifier import TextBoxPredictor

__all__ = [
    "BOX_WEIGHTS",
    "TextRoIHeads",
    "build_box_head",
    "build_mask_branch",
    "decode_boxes",
    "detection_scores",
]

BOX_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
BOX_POOL_SIZE = 7
MASK_POOL_SIZE = 14
BOX_HEAD_DIM = 1024
MASK_HEAD_DIM = 256
MASK_HEAD_CONVS = 4
# A default-scale init starts the mask loss at 20–60 instead of 0.69 (DESIGN.md).
MASK_PREDICTOR_INIT_STD = 0.001
BOX_DELTA_CLIP = math.log(1000.0 / 16)


class _TwoFCHead(nn.Module):
    """flatten → fc6 → ReLU → fc7 → ReLU (detectron2's 2-fc box head)."""

    def __init__(self, in_features: int, dim: int = BOX_HEAD_DIM) -> None:
        super().__init__()
        self.fc6 = nn.Linear(in_features, dim)
        self.fc7 = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc7(self.fc6(x.flatten(1)).relu()).relu()


def build_box_head(in_channels: int) -> nn.Module:
    """The 2-fc box head over 7×7 pooled features: ``Tensor[R, C, 7, 7] → Tensor[R, 1024]``."""
    return _TwoFCHead(in_channels * BOX_POOL_SIZE**2)


def build_mask_branch(in_channels: int, dim: int = MASK_HEAD_DIM) -> tuple[nn.Module, nn.Module]:
    """Class-agnostic mask head (4 conv3×3+ReLU of width ``dim``) and predictor (deconv 2×2 s2 +
    ReLU, 1×1 conv to one channel, initialised with std 0.001 and zero bias)."""
    head = MaskRCNNHeads(in_channels, (dim,) * MASK_HEAD_CONVS, 1)
    predictor = MaskRCNNPredictor(dim, dim, 1)
    nn.init.normal_(predictor.mask_fcn_logits.weight, std=MASK_PREDICTOR_INIT_STD)
    nn.init.zeros_(predictor.mask_fcn_logits.bias)
    return head, predictor


class TextRoIHeads(RoIHeads):
    """Box and mask heads of the text-classifier Mask R-CNN.

    Args:
        in_channels: FPN channels.
        text_dim: width D of the text embeddings.
        batch_size_per_image: RoIs sampled per image for training.
        positive_fraction: fraction of positives among them.
        fg_iou_thresh: IoU for a proposal to count as foreground.
        score_thresh: keep detections scoring strictly above this.
        nms_thresh: per-class NMS IoU.
        detections_per_image: detections kept per image.
        mask_rois_per_image: cap on positive RoIs per image for the mask loss (None: all).
        mask_head_dim: channels of the mask head convs (256 in the paper; less is faster).
        federated_loss: use the federated sigmoid loss (needs ``class_image_counts``).
        image_label_mode: proposal choice of the image-level loss.
    """

    def __init__(
        self,
        in_channels: int,
        text_dim: int,
        *,
        batch_size_per_image: int = 512,
        positive_fraction: float = 0.25,
        fg_iou_thresh: float = 0.5,
        score_thresh: float = 0.05,
        nms_thresh: float = 0.5,
        detections_per_image: int = 100,
        mask_rois_per_image: int | None = None,
        mask_head_dim: int = MASK_HEAD_DIM,
        federated_loss: bool = False,
        image_label_mode: Literal["max_size", "max_score"] = "max_size",
    ) -> None:
        mask_head, mask_predictor = build_mask_branch(in_channels, mask_head_dim)
        super().__init__(
            box_roi_pool=MultiLevelRoIAlign(BOX_POOL_SIZE),
            box_head=self._make_box_heads(in_channels),
            box_predictor=self._make_box_predictors(text_dim),
            fg_iou_thresh=fg_iou_thresh,
            bg_iou_thresh=fg_iou_thresh,
            batch_size_per_image=batch_size_per_image,
            positive_fraction=positive_fraction,
            bbox_reg_weights=BOX_WEIGHTS,
            score_thresh=score_thresh,
            nms_thresh=nms_thresh,
            detections_per_img=detections_per_image,
            mask_roi_pool=MultiLevelRoIAlign(MASK_POOL_SIZE),
            mask_head=mask_head,
            mask_predictor=mask_predictor,
        )
        self.mask_rois_per_image = mask_rois_per_image
        self.federated_loss = federated_loss
        self.image_label_mode = image_label_mode
        self.register_buffer("class_weights", torch.zeros(0), persistent=False)

    def _make_box_heads(self, in_channels: int) -> nn.Module:
        return build_box_head(in_channels)

    def _make_box_predictors(self, text_dim: int) -> nn.Module:
        return TextBoxPredictor(BOX_HEAD_DIM, text_dim)

    def classifiers(self) -> list[nn.Module]:
        """The text classifiers (one per stage)."""
        return [self.box_predictor.cls_score]

    def set_vocabulary(
        self, text_embeddings: Tensor, *, class_image_counts: Tensor | None = None
    ) -> None:
        """Set the default vocabulary ``Tensor[C, D]`` and, for the federated loss, the number
        of training images of each class ``Tensor[C]``."""
        for classifier in self.classifiers():
            classifier.set_vocabulary(text_embeddings)
        if class_image_counts is not None:
            self.class_weights = federated_class_weights(class_image_counts).to(text_embeddings)
        else:
            self.class_weights = text_embeddings.new_zeros(0)

    # ------------------------------------------------------------------ training helpers
    def _sample(
        self, proposals: list[Tensor], targets: Sequence[Mapping[str, Tensor]]
    ) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """Add the ground truth to the proposals, match and subsample.

        Returns per image the sampled boxes ``Tensor[S_i, 4]``, the matched ground-truth index
        ``Tensor[S_i]`` (clamped to 0 for background) and labels ``Tensor[S_i]`` (vocabulary
        index, -1 for background).
        """
        gt_boxes = [t["boxes"].to(proposals[0].dtype) for t in targets]
        # torchvision's matching uses 0 for background: shift labels by one and back.
        gt_labels = [t["labels"] + 1 for t in targets]
        proposals = self.add_gt_proposals(proposals, gt_boxes)
        matched_idxs, labels = self.assign_targets_to_proposals(proposals, gt_boxes, gt_labels)
        sampled = self.subsample(labels)
        return (
            [p[s] for p, s in zip(proposals, sampled, strict=True)],
            [m[s] for m, s in zip(matched_idxs, sampled, strict=True)],
            [lab[s] - 1 for lab, s in zip(labels, sampled, strict=True)],
        )

    def _classification_loss(
        self, class_logits: Tensor, labels: Tensor, class_image_counts: Tensor | None
    ) -> Tensor:
        weights = self.class_weights
        if class_image_counts is not None:
            weights = federated_class_weights(class_image_counts).to(class_logits)
        mask = None
        if self.federated_loss:
            num_classes = class_logits.shape[1] - 1
            if weights.numel() != num_classes:
                raise InputError(
                    "the federated loss needs class_image_counts (Tensor[C]) for the "
                    f"{num_classes} classes of the vocabulary"
                )
            mask = federated_class_mask(labels, weights)
        return sigmoid_classification_loss(class_logits, labels, class_mask=mask)

    def _box_losses(
        self,
        class_logits: Tensor,
        deltas: Tensor,
        boxes: list[Tensor],
        matched_idxs: list[Tensor],
        labels: list[Tensor],
        targets: Sequence[Mapping[str, Tensor]],
        *,
        wanted: set[str],
        coder: BoxCoder,
        class_image_counts: Tensor | None,
    ) -> dict[str, Tensor]:
        """``loss_cls`` and ``loss_box_reg`` (those in ``wanted``) of one box stage.

        Args:
            class_logits (Tensor[S, C + 1]): of the sampled boxes of all images, concatenated.
            deltas (Tensor[S, 4]): their predicted box deltas (``coder``'s encoding).
            boxes, matched_idxs, labels: per image, as :meth:`_sample` returns them.
        """
        num_classes = class_logits.shape[1] - 1
        all_labels = _background_last(torch.cat(labels), num_classes)
        out: dict[str, Tensor] = {}
        if "loss_cls" in wanted:
            out["loss_cls"] = self._classification_loss(
                class_logits, all_labels, class_image_counts
            )
        if "loss_box_reg" in wanted:
            gt = [
                t["boxes"].to(b)[m] if len(t["boxes"]) else torch.zeros_like(b)
                for t, b, m in zip(targets, boxes, matched_idxs, strict=True)
            ]
            target_deltas = torch.cat(coder.encode(gt, boxes))
            out["loss_box_reg"] = box_regression_loss(
                deltas, target_deltas, all_labels < num_classes
            )
        return out

    def _mask_losses(
        self,
        features: list[Tensor],
        boxes: list[Tensor],
        matched_idxs: list[Tensor],
        labels: list[Tensor],
        targets: Sequence[Mapping[str, Tensor]],
        num_classes: int,
    ) -> Tensor:
        pos_boxes, pos_targets = [], []
        for b, m, lab, t in zip(boxes, matched_idxs, labels, targets, strict=True):
            pos = torch.nonzero((lab >= 0) & (lab < num_classes)).squeeze(1)
            if self.mask_rois_per_image is not None and len(pos) > self.mask_rois_per_image:
                pos = pos[torch.randperm(len(pos), device=pos.device)[: self.mask_rois_per_image]]
            pos_boxes.append(b[pos])
            pos_targets.append(mask_targets(t["masks"], b[pos], m[pos], 2 * MASK_POOL_SIZE))
        # The mask head's convolutions and deconvolution, forward and backward, are faster on
        # channels-last maps (as at inference, see vlpart.model.optimize); same values.
        pooled = self.mask_roi_pool(features, pos_boxes)
        mask_feats = self.mask_head(pooled.contiguous(memory_format=torch.channels_last))
        return mask_loss(self.mask_predictor(mask_feats), torch.cat(pos_targets))

    def _image_losses(
        self,
        classify,
        features: list[Tensor],
        proposals: list[Tensor],
        targets: Sequence[Mapping[str, Tensor]],
    ) -> Tensor:
        top = [p[:IMAGE_LABEL_TOPK] for p in proposals]
        logits = classify(self.box_roi_pool(features, top)).split([len(p) for p in top])
        losses = [
            image_label_loss(lg, p, t["image_labels"], mode=self.image_label_mode)
            for lg, p, t in zip(logits, top, targets, strict=True)
        ]
        return torch.stack(losses).mean()

    # ------------------------------------------------------------------ forward
    def forward(  # type: ignore[override]
        self,
        features: Mapping[str, Tensor],
        proposals: list[Tensor],
        image_sizes: list[tuple[int, int]],
        targets: Sequence[Mapping[str, Tensor]] | None = None,
        *,
        proposal_scores: list[Tensor] | None = None,
        losses: Sequence[str] = (),
        text_embeddings: Tensor | None = None,
        class_image_counts: Tensor | None = None,
        score_threshold: float | None = None,
    ) -> tuple[list[dict[str, Tensor]], dict[str, Tensor]]:
        """Train or detect.

        Args:
            features: pyramid maps; the first four (P2–P5) are pooled.
            proposals: per image ``Tensor[R_i, 4]``, XYXY input pixels, sorted by objectness.
            image_sizes: resized ``(H, W)`` per image.
            targets: training targets (``boxes``, ``labels``, ``masks``, ``image_labels`` as the
                requested losses need).
            proposal_scores: per image objectness probabilities ``Tensor[R_i]`` (inference).
            losses: names of the losses to compute in training (see ``LOSS_WEIGHTS``).
            text_embeddings: vocabulary ``Tensor[C, D]`` for this call (default: the one set).
            class_image_counts: ``Tensor[C]`` image counts for the federated loss.
            score_threshold: inference only: drop detections scoring below this after NMS and
                top-k, before their masks are computed (None keeps all).

        Returns:
            In training ``([], losses)``; otherwise per image ``boxes`` (Tensor[N, 4], input
            pixels), ``scores`` (Tensor[N]), ``labels`` (Tensor[N], int64 vocabulary indices),
            ``masks`` (Tensor[N, 1, 28, 28] probabilities in box coordinates), and ``{}``.
        """
        maps = list(features.values())[:4]
        if self.training:
            if targets is None:
                raise InputError("training needs targets")
            return [], self._forward_train(
                maps,
                proposals,
                image_sizes,
                targets,
                set(losses),
                text_embeddings,
                class_image_counts,
            )
        if proposal_scores is None:
            raise InputError("inference needs the proposals' objectness scores")
        boxes, scores = self._predict_boxes(
            maps, proposals, image_sizes, proposal_scores, text_embeddings
        )
        detections = [
            self._select(b, s, size) for b, s, size in zip(boxes, scores, image_sizes, strict=True)
        ]
        if score_threshold is not None:
            for det in detections:
                keep = det["scores"] >= score_threshold
                det.update((key, value[keep]) for key, value in det.items())
        det_boxes = [d["boxes"] for d in detections]
        masks = self._mask_probabilities(maps, det_boxes)
        for det, image_masks in zip(
            detections, masks.split([b.shape[0] for b in det_boxes]), strict=True
        ):
            det["masks"] = image_masks
        return detections, {}

    def _mask_probabilities(self, maps: list[Tensor], boxes: list[Tensor]) -> Tensor:
        """Mask probabilities ``Tensor[sum N_i, 1, M, M]`` of each image's ``Tensor[N_i, 4]``
        boxes. A box that repeats within an image (a proposal kept for several classes: boxes
        and masks are class-agnostic) goes through the mask head once."""
        if torch.compiler.is_exporting():  # the exported graph computes every box
            logits = self.mask_predictor(self.mask_head(self.mask_roi_pool(maps, boxes)))
            return logits.sigmoid()
        unique, inverse, offset = [], [], 0
        for image_boxes in boxes:
            distinct, index = torch.unique(image_boxes, dim=0, return_inverse=True)
            unique.append(distinct)
            inverse.append(index + offset)
            offset += len(distinct)
        logits = self.mask_predictor(self.mask_head(self.mask_roi_pool(maps, unique)))
        return logits.sigmoid()[torch.cat(inverse)]

    def _forward_train(
        self,
        maps: list[Tensor],
        proposals: list[Tensor],
        image_sizes: list[tuple[int, int]],
        targets: Sequence[Mapping[str, Tensor]],
        wanted: set[str],
        text_embeddings: Tensor | None,
        class_image_counts: Tensor | None,
    ) -> dict[str, Tensor]:
        """The ``wanted`` losses: image-level, then classification and box regression of the
        box stage(s) on the sampled proposals, then masks on the same samples."""
        out: dict[str, Tensor] = {}
        if "loss_image" in wanted:
            out["loss_image"] = self._image_loss(maps, proposals, targets, text_embeddings)
        if not wanted & {"loss_cls", "loss_box_reg", "loss_mask"}:
            return out
        sampled = self._sample(proposals, targets)
        box_losses, num_classes = self._stage_losses(
            maps,
            sampled,
            image_sizes,
            targets,
            wanted=wanted,
            text_embeddings=text_embeddings,
            class_image_counts=class_image_counts,
        )
        out.update(box_losses)
        if "loss_mask" in wanted:
            out["loss_mask"] = self._mask_losses(maps, *sampled, targets, num_classes)
        return out

    def _image_loss(
        self,
        maps: list[Tensor],
        proposals: list[Tensor],
        targets: Sequence[Mapping[str, Tensor]],
        text_embeddings: Tensor | None,
    ) -> Tensor:
        predictor = self.box_predictor
        return self._image_losses(
            lambda x: predictor.cls_score(self.box_head(x), text_embeddings),
            maps,
            proposals,
            targets,
        )

    def _stage_losses(
        self,
        maps: list[Tensor],
        sampled: tuple[list[Tensor], list[Tensor], list[Tensor]],
        image_sizes: list[tuple[int, int]],
        targets: Sequence[Mapping[str, Tensor]],
        *,
        wanted: set[str],
        text_embeddings: Tensor | None,
        class_image_counts: Tensor | None,
    ) -> tuple[dict[str, Tensor], int]:
        """``loss_cls`` and ``loss_box_reg`` of the box head on ``sampled`` (as :meth:`_sample`
        returns it), and the number C of classes."""
        boxes, matched_idxs, labels = sampled
        feats = self.box_head(self.box_roi_pool(maps, boxes))
        class_logits, deltas = self.box_predictor(feats, text_embeddings)
        losses = self._box_losses(
            class_logits,
            deltas,
            boxes,
            matched_idxs,
            labels,
            targets,
            wanted=wanted,
            coder=self.box_coder,
            class_image_counts=class_image_counts,
        )
        return losses, class_logits.shape[1] - 1

    def _predict_boxes(
        self,
        maps: list[Tensor],
        proposals: list[Tensor],
        image_sizes: list[tuple[int, int]],
        proposal_scores: list[Tensor],
        text_embeddings: Tensor | None,
    ) -> tuple[list[Tensor], list[Tensor]]:
        """Per image refined boxes ``Tensor[R_i, 4]`` (clipped) and scores
        ``sqrt(sigmoid(cls) · objectness)`` ``Tensor[R_i, C]``."""
        feats = self.box_head(self.box_roi_pool(maps, proposals))
        class_logits, deltas = self.box_predictor(feats, text_embeddings)
        boxes = decode_boxes(self.box_coder, deltas, proposals, image_sizes)
        probs = class_logits[:, :-1].sigmoid()
        return boxes, detection_scores(probs, proposal_scores)

    def _select(self, boxes: Tensor, scores: Tensor, image_size: tuple[int, int]) -> dict:
        """Score threshold (strict), per-class NMS and top-k over class-agnostic boxes.

        Args:
            boxes (Tensor[R, 4]): refined boxes, one per proposal.
            scores (Tensor[R, C]): per-class scores.
        """
        finite = torch.isfinite(boxes).all(dim=1) & torch.isfinite(scores).all(dim=1)
        boxes, scores = boxes[finite], scores[finite]
        rows, classes = torch.nonzero(scores > self.score_thresh, as_tuple=True)
        det_boxes, det_scores = boxes[rows], scores[rows, classes]
        keep = batched_nms(det_boxes, det_scores, classes, self.nms_thresh)
        keep = keep[: self.detections_per_img]
        return {"boxes": det_boxes[keep], "scores": det_scores[keep], "labels": classes[keep]}


def _background_last(labels: Tensor, num_classes: int) -> Tensor:
    """Map background ``-1`` to ``C`` (the loss functions' convention)."""
    return torch.where(labels < 0, torch.full_like(labels, num_classes), labels)


def decode_boxes(
    coder: BoxCoder, deltas: Tensor, boxes: list[Tensor], image_sizes: list[tuple[int, int]]
) -> list[Tensor]:
    """Apply ``deltas`` (Tensor[sum R_i, 4]) to each image's ``boxes`` (Tensor[R_i, 4]) and
    clip the results to its ``(H, W)``."""
    decoded = coder.decode_single(deltas, torch.cat(boxes))
    sizes = [b.shape[0] for b in boxes]
    return [
        clip_boxes_to_image(b, s) for b, s in zip(decoded.split(sizes), image_sizes, strict=True)
    ]


def detection_scores(probs: Tensor, proposal_scores: list[Tensor]) -> list[Tensor]:
    """Per image ``sqrt(class probability · objectness)`` (Tensor[R_i, C]) from the class
    probabilities of all images' proposals ``Tensor[sum R_i, C]`` and each image's
    objectness ``Tensor[R_i]``."""
    per_image = probs.split([o.shape[0] for o in proposal_scores])
    return [(p * o[:, None]).sqrt() for p, o in zip(per_image, proposal_scores, strict=True)]
