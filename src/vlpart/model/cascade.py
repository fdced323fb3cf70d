"""The 3-stage cascade of box heads (Cai & Vasconcelos, 2018) over :class:`TextRoIHeads`:
its own class (STYLE.md rule 1), sharing the plain heads' sampling, losses, masks and scoring."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn
from torchvision.models.detection._utils import BoxCoder, Matcher
from torchvision.ops import box_iou

from vlpart.model.ops import scale_gradient
from vlpart.model.roi_heads import (
    BOX_DELTA_CLIP,
    BOX_HEAD_DIM,
    TextRoIHeads,
    build_box_head,
    decode_boxes,
    detection_scores,
)
from vlpart.model.text_classifier import TextBoxPredictor

__all__ = ["CASCADE_BOX_WEIGHTS", "CASCADE_IOUS", "CascadeRoIHeads"]

# IoU thresholds and box-coder weights per stage.
CASCADE_IOUS = (0.5, 0.6, 0.7)
CASCADE_BOX_WEIGHTS = ((10.0, 10.0, 5.0, 5.0), (20.0, 20.0, 10.0, 10.0), (30.0, 30.0, 15.0, 15.0))


class CascadeRoIHeads(TextRoIHeads):
    """Three box stages (IoU 0.5/0.6/0.7, box-coder weights (10,10,5,5), (20,20,10,10),
    (30,30,15,15)), each with its own box head and text classifier; each stage refines the
    previous stage's boxes, test scores are the mean of the stages' class probabilities.

    Takes the keyword arguments of :class:`TextRoIHeads`.
    """

    def __init__(self, in_channels: int, text_dim: int, **kwargs) -> None:
        super().__init__(in_channels, text_dim, **kwargs)
        self.stage_coders = [
            BoxCoder(w, bbox_xform_clip=BOX_DELTA_CLIP) for w in CASCADE_BOX_WEIGHTS
        ]
        self.stage_matchers = [
            Matcher(iou, iou, allow_low_quality_matches=False) for iou in CASCADE_IOUS
        ]

    def _make_box_heads(self, in_channels: int) -> nn.Module:
        return nn.ModuleList(build_box_head(in_channels) for _ in CASCADE_IOUS)

    def _make_box_predictors(self, text_dim: int) -> nn.Module:
        return nn.ModuleList(TextBoxPredictor(BOX_HEAD_DIM, text_dim) for _ in CASCADE_IOUS)

    def classifiers(self) -> list[nn.Module]:
        return [p.cls_score for p in self.box_predictor]

    def _run_stage(
        self, stage: int, maps: list[Tensor], boxes: list[Tensor], text_embeddings: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        pooled = self.box_roi_pool(maps, boxes)
        if self.training:
            # detectron2's cascade: each stage's loss reaches the shared features with weight
            # 1/3, so the pyramid sees the average of the stages' gradients.
            pooled = scale_gradient(pooled, 1.0 / len(CASCADE_IOUS))
        feats = self.box_head[stage](pooled)
        return self.box_predictor[stage](feats, text_embeddings)

    def _refine(
        self, stage: int, deltas: Tensor, boxes: list[Tensor], image_sizes: list[tuple[int, int]]
    ) -> list[Tensor]:
        """The next stage's boxes; no gradient flows back through them."""
        return decode_boxes(self.stage_coders[stage], deltas.detach(), boxes, image_sizes)

    def _match(
        self, stage: int, boxes: list[Tensor], targets: Sequence[Mapping[str, Tensor]]
    ) -> tuple[list[Tensor], list[Tensor]]:
        """Match refined boxes at the stage's IoU; labels are -1 for background."""
        matched, labels = [], []
        for b, t in zip(boxes, targets, strict=True):
            if len(t["boxes"]) == 0:
                matched.append(torch.zeros(len(b), dtype=torch.int64, device=b.device))
                labels.append(torch.full((len(b),), -1, dtype=torch.int64, device=b.device))
                continue
            idx = self.stage_matchers[stage](box_iou(t["boxes"].to(b), b))
            lab = t["labels"][idx.clamp(min=0)]
            matched.append(idx.clamp(min=0))
            labels.append(torch.where(idx < 0, torch.full_like(lab, -1), lab))
        return matched, labels

    def _image_loss(
        self,
        maps: list[Tensor],
        proposals: list[Tensor],
        targets: Sequence[Mapping[str, Tensor]],
        text_embeddings: Tensor | None,
    ) -> Tensor:
        """The mean of the stages' image-level losses."""
        return sum(
            self._image_losses(
                lambda x, k=k: self.box_predictor[k].cls_score(
                    self.box_head[k](x), text_embeddings
                ),
                maps,
                proposals,
                targets,
            )
            for k in range(len(CASCADE_IOUS))
        ) / len(CASCADE_IOUS)

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
        """The sums over the stages of ``loss_cls`` and ``loss_box_reg``: stage 1 on the
        sampled proposals, each later stage on the previous stage's boxes matched again at its
        own IoU."""
        boxes, matched_idxs, labels = sampled
        out: dict[str, Tensor] = {}
        for k in range(len(CASCADE_IOUS)):
            if k > 0:
                matched_idxs, labels = self._match(k, boxes, targets)
            class_logits, deltas = self._run_stage(k, maps, boxes, text_embeddings)
            stage_losses = self._box_losses(
                class_logits,
                deltas,
                boxes,
                matched_idxs,
                labels,
                targets,
                wanted=wanted,
                coder=self.stage_coders[k],
                class_image_counts=class_image_counts,
            )
            for key, loss in stage_losses.items():
                out[key] = out.get(key, 0) + loss
            boxes = self._refine(k, deltas, boxes, image_sizes)
        return out, class_logits.shape[1] - 1

    def _predict_boxes(
        self,
        maps: list[Tensor],
        proposals: list[Tensor],
        image_sizes: list[tuple[int, int]],
        proposal_scores: list[Tensor],
        text_embeddings: Tensor | None,
    ) -> tuple[list[Tensor], list[Tensor]]:
        boxes, probs = proposals, []
        for k in range(len(CASCADE_IOUS)):
            class_logits, deltas = self._run_stage(k, maps, boxes, text_embeddings)
            probs.append(class_logits[:, :-1].sigmoid())
            boxes = self._refine(k, deltas, boxes, image_sizes)
        return boxes, detection_scores(sum(probs) / len(probs), proposal_scores)
