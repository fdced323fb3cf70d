"""The detector: transform → backbone → rpn → roi_heads, and ``build_model(config)``."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torchvision.models.detection.image_list import ImageList

from vlpart.core.config import Config, ModelConfig
from vlpart.core.errors import InputError
from vlpart.model.backbones import build_backbone
from vlpart.model.cascade import CascadeRoIHeads
from vlpart.model.losses import LOSS_WEIGHTS, DataKind
from vlpart.model.ops import contiguous_maps
from vlpart.model.roi_heads import TextRoIHeads
from vlpart.model.rpn import ProposalNetwork, build_rpn
from vlpart.model.transform import DetectorTransform

__all__ = ["VLPartDetector", "build_model"]

_REQUIRED_TARGET_KEYS = {
    DataKind.PART: ("boxes", "labels", "masks"),
    DataKind.OBJECT: ("boxes", "labels", "masks"),
    DataKind.IMAGE: ("image_labels",),
    DataKind.PARSED: ("boxes", "labels"),
}


class VLPartDetector(nn.Module):
    """Open-vocabulary Mask R-CNN composed of four swappable pieces.

    Args:
        transform: resize/normalise/pad and the mapping back to original pixels.
        backbone: images ``Tensor[B, 3, H, W]`` → pyramid ``{"p2": ..., "p6": ...}``.
        rpn: proposals with objectness probabilities.
        roi_heads: text-classifier box and mask heads.
    """

    def __init__(
        self,
        transform: DetectorTransform,
        backbone: nn.Module,
        rpn: ProposalNetwork,
        roi_heads: TextRoIHeads,
    ) -> None:
        super().__init__()
        self.transform = transform
        self.backbone = backbone
        self.rpn = rpn
        self.roi_heads = roi_heads

    @property
    def text_dim(self) -> int:
        """Width D of the text embeddings the classifier takes."""
        return self.roi_heads.classifiers()[0].text_dim

    def set_vocabulary(
        self, text_embeddings: Tensor, *, class_image_counts: Tensor | None = None
    ) -> None:
        """Replace the label space: ``text_embeddings`` is ``Tensor[C, D]`` (row i = category i);
        ``class_image_counts`` ``Tensor[C]`` feeds the federated loss. Nothing is retrained."""
        self.roi_heads.set_vocabulary(text_embeddings, class_image_counts=class_image_counts)

    def forward(
        self,
        images: Sequence[Tensor],
        targets: Sequence[dict[str, Tensor]] | None = None,
        *,
        kind: DataKind = DataKind.PART,
        text_embeddings: Tensor | None = None,
        class_image_counts: Tensor | None = None,
    ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        """Train on a batch of one data kind, or detect.

        Args:
            images: ``Tensor[3, H_i, W_i]`` RGB, uint8 0–255 or float 0–1.
            targets: training only; per image ``boxes`` (Tensor[N, 4] float, XYXY pixels),
                ``labels`` (Tensor[N] int64, indices into the vocabulary), ``masks``
                (Tensor[N, H_i, W_i] uint8; part/object kinds), ``image_labels`` (Tensor[K]
                int64; image kind).
            kind: which losses are on (see ``LOSS_WEIGHTS``).
            text_embeddings: vocabulary ``Tensor[C, D]`` of this batch (default: the one set).
            class_image_counts: ``Tensor[C]`` for the federated loss of this batch.

        Returns:
            Training: weighted losses ``{name: scalar}``. Inference: per image ``boxes``
            (Tensor[N, 4], original pixels), ``scores`` (Tensor[N]), ``labels`` (Tensor[N],
            int64 vocabulary indices), ``masks`` (Tensor[N, 1, H_i, W_i] float probabilities).
        """
        original_sizes = [tuple(im.shape[-2:]) for im in images]
        if self.training:
            _check_targets(targets, kind, len(images))
        batch, targets = self.transform(images, targets)
        if not self.training:
            detections = self.detect(batch, text_embeddings=text_embeddings)
            return self.transform.postprocess(detections, batch.image_sizes, original_sizes)
        # Training runs the backbone and the RPN in channels-last layout (oneDNN's fast one for
        # convolutions and their gradients) and gives RoIAlign standard contiguous maps.
        features = self.backbone(batch.tensors.contiguous(memory_format=torch.channels_last))
        weights = LOSS_WEIGHTS[kind]
        rpn_wanted = "loss_objectness" in weights
        proposals, scores, losses = self.rpn(
            batch, features, targets if rpn_wanted else None, compute_losses=rpn_wanted
        )
        _, roi_losses = self.roi_heads(
            OrderedDict((name, x.contiguous()) for name, x in features.items()),
            proposals,
            batch.image_sizes,
            targets,
            proposal_scores=scores,
            losses=tuple(weights),
            text_embeddings=text_embeddings,
            class_image_counts=class_image_counts,
        )
        losses.update(roi_losses)
        return {name: losses[name] * weight for name, weight in weights.items()}

    def detect(
        self,
        batch: ImageList,
        *,
        text_embeddings: Tensor | None = None,
        score_threshold: float | None = None,
    ) -> list[dict]:
        """Detect in a prepared batch (what :attr:`transform` returns); the part of inference
        that an exported ONNX graph holds.

        Args:
            batch: normalised images ``Tensor[B, 3, H, W]`` padded to a multiple of 32 and their
                resized ``(h_i, w_i)``.
            text_embeddings: vocabulary ``Tensor[C, D]`` (default: the one set).
            score_threshold: drop detections scoring below this before their masks are
                computed (None keeps all the model returns).

        Returns:
            Per image ``boxes`` (Tensor[N, 4], XYXY resized pixels), ``scores`` (Tensor[N]),
            ``labels`` (Tensor[N] int64) and ``masks`` (Tensor[N, 1, M, M] probabilities in box
            coordinates).
        """
        features = self.backbone(batch.tensors)
        proposals, scores, _ = self.rpn(batch, features, None, compute_losses=False)
        # A channels-last backbone's maps in RoIAlign's layout (rebinding frees the originals).
        features = contiguous_maps(features)
        detections, _ = self.roi_heads(
            features,
            proposals,
            batch.image_sizes,
            proposal_scores=scores,
            text_embeddings=text_embeddings,
            score_threshold=score_threshold,
        )
        return detections

    @torch.inference_mode()
    def propose(self, images: Sequence[Tensor]) -> list[dict[str, Tensor]]:
        """Region proposals alone (proposal recall, snapping parsed parts).

        Args:
            images: ``Tensor[3, H_i, W_i]`` RGB, uint8 0–255 or float 0–1.

        Returns:
            Per image ``boxes`` (Tensor[R, 4], XYXY original pixels, by descending score) and
            ``scores`` (Tensor[R], objectness probabilities).
        """
        original_sizes = [tuple(im.shape[-2:]) for im in images]
        batch, _ = self.transform(images)
        features = self.backbone(batch.tensors)
        proposals, scores, _ = self.rpn(batch, features, None, compute_losses=False)
        out = []
        for boxes, obj, (h, w), (oh, ow) in zip(
            proposals, scores, batch.image_sizes, original_sizes, strict=True
        ):
            scale = boxes.new_tensor([ow / w, oh / h, ow / w, oh / h])
            out.append({"boxes": boxes * scale, "scores": obj})
        return out


def _check_targets(
    targets: Sequence[dict[str, Tensor]] | None, kind: DataKind, num_images: int
) -> None:
    if targets is None or len(targets) != num_images:
        raise InputError(f"training needs one target dict per image ({num_images} images)")
    for i, target in enumerate(targets):
        missing = [k for k in _REQUIRED_TARGET_KEYS[kind] if k not in target]
        if missing:
            raise InputError(
                f"target {i}: a {kind.value} batch needs keys "
                f"{', '.join(_REQUIRED_TARGET_KEYS[kind])}; missing {', '.join(missing)}"
            )
        if "boxes" in target and (target["boxes"].ndim != 2 or target["boxes"].shape[1] != 4):
            raise InputError(f"target {i}: boxes must be [N, 4], got {list(target['boxes'].shape)}")
        if "labels" in target and target["labels"].dtype != torch.int64:
            raise InputError(f"target {i}: labels must be int64, got {target['labels'].dtype}")


def build_model(config: Config | ModelConfig) -> VLPartDetector:
    """Build the detector described by ``config`` (a :class:`Config` or its ``model`` part).

    The vocabulary is not part of the model: call :meth:`VLPartDetector.set_vocabulary` or pass
    ``text_embeddings`` to ``forward``.
    """
    cfg = config.model if isinstance(config, Config) else config
    backbone = build_backbone(
        cfg.backbone, weights=cfg.backbone_weights, out_channels=cfg.fpn_channels
    )
    transform = DetectorTransform(
        min_size=cfg.min_size,
        max_size=cfg.max_size,
        pixel_mean=cfg.pixel_mean,
        pixel_std=cfg.pixel_std,
    )
    rpn = build_rpn(
        cfg.fpn_channels,
        pre_nms_top_n=(cfg.rpn_pre_nms_top_n_train, cfg.rpn_pre_nms_top_n_test),
        post_nms_top_n=(cfg.rpn_post_nms_top_n_train, cfg.rpn_post_nms_top_n_test),
        nms_thresh=cfg.rpn_nms_thresh,
    )
    heads_cls = CascadeRoIHeads if cfg.cascade else TextRoIHeads
    roi_heads = heads_cls(
        cfg.fpn_channels,
        cfg.text_dim,
        batch_size_per_image=cfg.roi_batch_size_per_image,
        positive_fraction=cfg.roi_positive_fraction,
        score_thresh=cfg.score_thresh,
        nms_thresh=cfg.nms_thresh,
        detections_per_image=cfg.detections_per_image,
        mask_rois_per_image=cfg.mask_rois_per_image,
        mask_head_dim=cfg.mask_head_dim,
        federated_loss=cfg.federated_loss,
        image_label_mode=cfg.image_label_mode,
    )
    return VLPartDetector(transform, backbone, rpn, roi_heads)
