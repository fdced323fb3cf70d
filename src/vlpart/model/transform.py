"""Model-side preprocessing (resize, normalise, pad) and the mapping of outputs back to the
original image.

Which resize runs (:func:`resize_image`):

* ``uint8`` images — every model at inference (``PartSegmenter`` feeds uint8): PIL's bilinear
  resize of the uint8 HWC array, byte for byte what detectron2's ``ResizeTransform`` gives the
  released VLPart models (tested against PIL directly). Tensors on an accelerator make a round
  trip through host memory for it.
* float images — tensors from a training pipeline or a caller's own preprocessing: torchvision's
  antialiased bilinear resize, on the tensor's device (differentiable; not bit-exact with PIL).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn
from torchvision.models.detection.image_list import ImageList
from torchvision.transforms.v2 import functional as TF

from vlpart.core.errors import InputError
from vlpart.model.ops import paste_masks

__all__ = ["PIXEL_MEAN", "PIXEL_STD", "DetectorTransform", "resize_image", "resized_shape"]

# ImageNet statistics in 0–255 units (RGB), as the released models use.
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)
SIZE_DIVISIBILITY = 32


def resized_shape(height: int, width: int, *, min_size: int, max_size: int) -> tuple[int, int]:
    """Short side to ``min_size``, long side capped at ``max_size``, rounded half up (the
    arithmetic of detectron2's ``ResizeShortestEdge``)."""
    scale = min_size / min(height, width)
    if height < width:
        new_h, new_w = float(min_size), scale * width
    else:
        new_h, new_w = scale * height, float(min_size)
    if max(new_h, new_w) > max_size:
        scale = max_size / max(new_h, new_w)
        new_h, new_w = new_h * scale, new_w * scale
    # An extreme aspect ratio (a 1 x 3000 strip) keeps at least one pixel per side.
    return max(1, int(new_h + 0.5)), max(1, int(new_w + 0.5))


def resize_image(image: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize of ``image`` (Tensor[3, H, W]) to ``size`` = (h, w).

    Returns:
        uint8 input: Tensor[3, h, w] uint8, exactly
        ``Image.fromarray(hwc).resize((w, h), Image.BILINEAR)``, on the input's device.
        float input: Tensor[3, h, w] of the same dtype, torchvision's antialiased bilinear.
        The input itself when it already has that size.
    """
    height, width = size
    if tuple(image.shape[-2:]) == (height, width):
        return image
    if image.dtype != torch.uint8:
        return TF.resize(image, [height, width], antialias=True)
    hwc = np.ascontiguousarray(image.permute(1, 2, 0).cpu().numpy())
    resized = np.array(Image.fromarray(hwc).resize((width, height), Image.BILINEAR))
    return torch.from_numpy(resized).permute(2, 0, 1).to(image.device)


class DetectorTransform(nn.Module):
    """Resize → normalise → zero-pad (after normalising) to a multiple of 32.

    Inference resizes to ``min_size`` / ``max_size``. Training batches (with targets) keep the
    size their data pipeline gave them, so that every source can train at its own scales.

    Images are ``Tensor[3, H, W]`` RGB, either uint8 in 0–255 (resized bit-exactly as PIL's
    bilinear, the released models' preprocessing) or float in 0–1 (torchvision's bilinear); see
    :func:`resize_image`.

    Args:
        min_size: target short side.
        max_size: cap on the long side.
        pixel_mean: per-channel mean in 0–255 units.
        pixel_std: per-channel std in 0–255 units.
        size_divisible: padded sides are multiples of this.
    """

    def __init__(
        self,
        *,
        min_size: int = 800,
        max_size: int = 1333,
        pixel_mean: Sequence[float] = PIXEL_MEAN,
        pixel_std: Sequence[float] = PIXEL_STD,
        size_divisible: int = SIZE_DIVISIBILITY,
    ) -> None:
        super().__init__()
        self.min_size = min_size
        self.max_size = max_size
        self.size_divisible = size_divisible
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(3, 1, 1), persistent=False)

    def forward(
        self, images: Sequence[Tensor], targets: Sequence[dict[str, Tensor]] | None = None
    ) -> tuple[ImageList, list[dict[str, Tensor]] | None]:
        """Prepare a batch.

        Args:
            images: ``Tensor[3, H_i, W_i]`` uint8 (0–255) or float (0–1).
            targets: per image ``boxes`` (XYXY pixels of the input image) and optionally
                ``masks`` (Tensor[N, H_i, W_i], uint8); other keys are passed through.

        Returns:
            The padded batch ``Tensor[B, 3, H, W]`` with the resized sizes, and the targets
            rescaled to the resized images.
        """
        resized, out_targets = [], [] if targets is not None else None
        for i, image in enumerate(images):
            if image.ndim != 3 or image.shape[0] != 3:
                raise InputError(
                    f"image {i}: expected a [3, H, W] RGB tensor, got {list(image.shape)}"
                )
            height, width = image.shape[-2:]
            if targets is None:
                size = resized_shape(height, width, min_size=self.min_size, max_size=self.max_size)
            else:  # training: the data pipeline chose the size (per-source, multi-scale)
                size = (int(height), int(width))
            if image.dtype == torch.uint8:
                pixels = resize_image(image, size).to(self.pixel_mean.dtype)
            else:
                pixels = resize_image(image * 255.0, size)
            resized.append((pixels - self.pixel_mean) / self.pixel_std)
            if targets is not None:
                out_targets.append(_resize_target(targets[i], (height, width), size))
        batch = self.pad(resized)
        return ImageList(batch, [tuple(r.shape[-2:]) for r in resized]), out_targets

    def pad(self, images: Sequence[Tensor]) -> Tensor:
        """Zero-pad normalised ``Tensor[3, h_i, w_i]`` images into one ``Tensor[B, 3, H, W]``
        whose sides are the largest ``h_i``, ``w_i`` rounded up to ``size_divisible``."""
        div = self.size_divisible
        # Round up with non-negative operands only: ONNX integer division truncates, so the
        # ``-(-x // d)`` idiom would round down in an exported graph.
        height = (max(im.shape[1] for im in images) + div - 1) // div * div
        width = (max(im.shape[2] for im in images) + div - 1) // div * div
        return torch.stack(
            [F.pad(im, (0, width - im.shape[2], 0, height - im.shape[1])) for im in images]
        )

    def postprocess(
        self,
        detections: list[dict[str, Tensor]],
        image_sizes: Sequence[tuple[int, int]],
        original_sizes: Sequence[tuple[int, int]],
    ) -> list[dict[str, Tensor]]:
        """Map detections from resized to original pixels.

        Boxes are scaled, clipped and empty ones dropped; masks ``Tensor[N, 1, M, M]`` are pasted
        into ``Tensor[N, 1, H, W]`` probabilities at the original size.
        """
        results = self.rescale(detections, image_sizes, original_sizes)
        for out, size in zip(results, original_sizes, strict=True):
            if "masks" in out:
                out["masks"] = paste_masks(out["masks"], out["boxes"], size)
        return results

    def rescale(
        self,
        detections: list[dict[str, Tensor]],
        image_sizes: Sequence[tuple[int, int]],
        original_sizes: Sequence[tuple[int, int]],
    ) -> list[dict[str, Tensor]]:
        """Boxes scaled from resized to original pixels, clipped, empty ones dropped; masks stay
        ``Tensor[N, 1, M, M]`` in box coordinates."""
        results = []
        for det, (h, w), (oh, ow) in zip(detections, image_sizes, original_sizes, strict=True):
            boxes = det["boxes"] * det["boxes"].new_tensor([ow / w, oh / h, ow / w, oh / h])
            boxes[:, 0::2] = boxes[:, 0::2].clamp(0, ow)
            boxes[:, 1::2] = boxes[:, 1::2].clamp(0, oh)
            keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
            out = {key: value[keep] for key, value in det.items() if key != "boxes"}
            out["boxes"] = boxes[keep]
            results.append(out)
        return results


def _resize_target(
    target: dict[str, Tensor], size: tuple[int, int], new_size: tuple[int, int]
) -> dict[str, Tensor]:
    out = dict(target)
    (h, w), (nh, nw) = size, new_size
    if "boxes" in target:
        boxes = target["boxes"]
        out["boxes"] = boxes * boxes.new_tensor([nw / w, nh / h, nw / w, nh / h])
    if "masks" in target:
        masks = target["masks"]
        if len(masks) == 0:
            out["masks"] = masks.new_zeros((0, nh, nw))
        else:
            out["masks"] = F.interpolate(masks[None].float(), size=new_size, mode="nearest")[0].to(
                masks.dtype
            )
    return out
