"""Detector operations whose exact numerics the converted official checkpoints depend on:
RoIAlign over pyramid levels, mask targets, grid-sample mask pasting."""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import MutableMapping
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn
from torchvision.ops import roi_align

from vlpart.model.roi_align import roi_align as pool_rois

__all__ = [
    "MultiLevelRoIAlign",
    "assign_fpn_levels",
    "batched_nms",
    "contiguous_maps",
    "mask_targets",
    "paste_masks",
    "paste_masks_binary",
    "scale_gradient",
]

# FPN paper eq. (1): a 224-px box (ImageNet size) maps to level 4.
CANONICAL_BOX_SIZE = 224
CANONICAL_LEVEL = 4
LEVEL_EPS = 1e-8
# Pixels of margin around a box when pasting its mask (bilinear spill-over).
PASTE_MARGIN = 1
# Threaded RoIAlign pools at most about this many output values (float32: 4 MB) per call: each
# thread's result is freed into that thread's own allocator arena (glibc keeps one per thread
# and does not give it back), so small chunks keep what the arenas hold small.
ROI_CHUNK_ELEMENTS = 1 << 20


def assign_fpn_levels(
    boxes: Tensor,
    *,
    min_level: int = 2,
    max_level: int = 5,
    canonical_box_size: int = CANONICAL_BOX_SIZE,
    canonical_level: int = CANONICAL_LEVEL,
) -> Tensor:
    """Pyramid level of each box: ``floor(4 + log2(sqrt(area) / 224 + 1e-8))`` clamped.

    Args:
        boxes (Tensor[R, 4], float): XYXY, pixels of the network input.

    Returns:
        Tensor[R], int64: levels in ``[min_level, max_level]``.
    """
    sizes = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).sqrt()
    levels = torch.floor(canonical_level + torch.log2(sizes / canonical_box_size + LEVEL_EPS))
    return levels.clamp(min=min_level, max=max_level).to(torch.int64)


class MultiLevelRoIAlign(nn.Module):
    """RoIAlign that reads each box from its FPN level (see :func:`assign_fpn_levels`).

    Args:
        output_size: side of the pooled grid (7 for boxes, 14 for masks).
        min_level: level of the first feature map given to :meth:`forward` (stride
            ``2**min_level``).
        sampling_ratio: RoIAlign samples per bin; 0 = adaptive (detectron2's default).
        aligned: half-pixel alignment (detectron2's ROIAlignV2).
    """

    def __init__(
        self, output_size: int, *, min_level: int = 2, sampling_ratio: int = 0, aligned: bool = True
    ) -> None:
        super().__init__()
        self.output_size = output_size
        self.min_level = min_level
        self.sampling_ratio = sampling_ratio
        self.aligned = aligned

    def forward(self, features: list[Tensor], boxes: list[Tensor]) -> Tensor:
        """Pool ``boxes`` from ``features``.

        Without autograd the boxes are pooled on ``torch.get_num_threads()`` threads
        (torchvision's CPU RoIAlign is single-threaded), in chunks of about equal cost and of
        at most about :data:`ROI_CHUNK_ELEMENTS` output values; every box is pooled by the same
        kernel either way, so the result is the same.

        Args:
            features: maps ``Tensor[B, C, H_l, W_l]`` of levels ``min_level, min_level + 1, ...``.
            boxes: per image ``Tensor[R_i, 4]``, XYXY in network-input pixels.

        Returns:
            Tensor[sum R_i, C, S, S] in the order of the concatenated boxes.
        """
        first = features[0]
        rois = torch.cat(
            [torch.cat([b.new_full((b.shape[0], 1), i), b], dim=1) for i, b in enumerate(boxes)]
        )
        max_level = self.min_level + len(features) - 1
        levels = assign_fpn_levels(rois[:, 1:], min_level=self.min_level, max_level=max_level)
        out = first.new_zeros((rois.shape[0], first.shape[1], self.output_size, self.output_size))
        threads = torch.get_num_threads()
        parallel = (
            threads > 1
            and first.device.type == "cpu"
            and not torch.is_grad_enabled()
            and not torch.compiler.is_compiling()
        )
        jobs = []
        per_box = first.shape[1] * self.output_size**2
        for offset, feat in enumerate(features):
            scale = 1.0 / 2 ** (self.min_level + offset)
            idx = torch.nonzero(levels == self.min_level + offset).squeeze(1)
            if parallel:
                parts = max(threads, -(-len(idx) * per_box // ROI_CHUNK_ELEMENTS))
                chunks = idx.split(self._balanced_chunks(rois[idx], scale, parts))
                jobs += [(feat, part, scale) for part in chunks if len(part)]
            else:
                jobs.append((feat, idx, scale))

        def pool(job: tuple[Tensor, Tensor, float]) -> None:
            feat, idx, scale = job
            pooled = pool_rois(
                feat,
                rois[idx],
                self.output_size,
                spatial_scale=scale,
                sampling_ratio=self.sampling_ratio,
                aligned=self.aligned,
            )
            out.index_put_((idx,), pooled)

        if parallel and len(jobs) > 1:
            # Grad, inference and autocast modes are per thread: carry the caller's over.
            inference = torch.is_inference_mode_enabled()
            autocast = torch.is_autocast_enabled("cpu")
            autocast_dtype = torch.get_autocast_dtype("cpu")

            def pool_in_thread(job: tuple[Tensor, Tensor, float]) -> None:
                with (
                    torch.inference_mode(inference),
                    torch.no_grad(),
                    torch.autocast("cpu", autocast_dtype, enabled=autocast),
                ):
                    pool(job)

            with ThreadPoolExecutor(min(threads, len(jobs))) as executor:
                list(executor.map(pool_in_thread, jobs))
        else:
            for job in jobs:
                pool(job)
        if self.training and len(rois) == 0:
            # No boxes: keep the features in the graph so an empty batch still back-propagates.
            out = out + sum(f.sum() * 0 for f in features)
        return out

    def _balanced_chunks(self, rois: Tensor, scale: float, parts: int) -> list[int]:
        """Sizes of ``parts`` consecutive chunks of ``rois`` (Tensor[R, 5]) whose RoIAlign costs
        (sampling points, which grow with the box area when ``sampling_ratio`` is adaptive) are
        about equal."""
        if self.sampling_ratio > 0:
            cost = rois.new_ones(len(rois))
        else:
            sides = ((rois[:, 3:5] - rois[:, 1:3]) * scale / self.output_size).ceil().clamp(min=1)
            cost = sides.prod(dim=1)
        bounds = torch.searchsorted(
            cost.cumsum(0),
            cost.sum() * torch.arange(1, parts, dtype=cost.dtype) / parts,
            right=True,
        )
        edges = [0, *bounds.tolist(), len(rois)]
        return [b - a for a, b in zip(edges[:-1], edges[1:], strict=True)]


def contiguous_maps(features: MutableMapping[str, Tensor]) -> OrderedDict[str, Tensor]:
    """``features`` as RoIAlign reads them: in the standard contiguous layout, and in float32
    under autocast (what torchvision's autocast rule for RoIAlign casts them to, here once for
    all the poolings of an image). Maps already so are returned as they are.

    The maps are taken out of ``features`` (left empty) as they are rewritten, so that each
    original can be freed once its copy exists, not only after the whole pyramid is copied.
    A channels-last map ``Tensor[B, C, H, W]`` is rewritten one image at a time as the transpose
    of its ``[H * W, C]`` matrix, for which PyTorch has a blocked copy about twice as fast as
    ``Tensor.contiguous()``.
    """
    out = OrderedDict()
    for name in list(features):
        x = features.pop(name)
        dtype = torch.float32 if torch.is_autocast_enabled(x.device.type) else x.dtype
        if x.is_contiguous() and x.dtype == dtype:
            out[name] = x
            continue
        n, c, h, w = x.shape
        dense = torch.empty((n, c, h, w), dtype=dtype, device=x.device)
        for src, dst in zip(x, dense, strict=True):
            dst.view(c, h * w).copy_(src.permute(1, 2, 0).reshape(h * w, c).t())
        out[name] = dense
    return out


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_thresh: float) -> Tensor:
    """NMS within each group of ``idxs``: torchvision's ``batched_nms``, in a form
    ``torch.export`` can trace (no branch on the number of boxes) while exporting.

    Args:
        boxes (Tensor[N, 4]): XYXY, non-negative coordinates.
        scores (Tensor[N]): higher is kept first.
        idxs (Tensor[N], int64): group of each box; boxes of different groups never suppress
            each other.
        iou_thresh: boxes overlapping a better one of their group by more than this are dropped.

    Returns:
        Tensor[K], int64: indices of the kept boxes by decreasing score.
    """
    if not torch.compiler.is_exporting():
        return torchvision.ops.batched_nms(boxes, scores, idxs, iou_thresh)
    # Shift each group by more than the largest coordinate so groups cannot overlap; the zero
    # appended keeps ``max`` defined when there are no boxes.
    max_coordinate = torch.cat([boxes.flatten(), boxes.new_zeros(1)]).max()
    offsets = idxs.to(boxes) * (max_coordinate + 1)
    return torchvision.ops.nms(boxes + offsets[:, None], scores, iou_thresh)


def mask_targets(gt_masks: Tensor, boxes: Tensor, matched_idxs: Tensor, size: int) -> Tensor:
    """Crop-and-resize ground-truth masks into the proposal boxes (aligned RoIAlign, >= 0.5).

    Args:
        gt_masks (Tensor[N, H, W], uint8): instance masks of one image.
        boxes (Tensor[P, 4], float): positive proposals, XYXY pixels of the same image.
        matched_idxs (Tensor[P], int64): ground-truth index of each proposal.
        size: output side M.

    Returns:
        Tensor[P, M, M], float32 in {0, 1}.
    """
    if len(boxes) == 0:
        return boxes.new_zeros((0, size, size))
    rois = torch.cat([matched_idxs.to(boxes.dtype)[:, None], boxes], dim=1)
    crops = roi_align(
        gt_masks[:, None].to(boxes.dtype),
        rois,
        size,
        spatial_scale=1.0,
        sampling_ratio=0,
        aligned=True,
    )
    return (crops[:, 0] >= 0.5).to(boxes.dtype)


def _paste_window(box: Tensor, image_size: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """The pixel window ``(top, bottom, left, right)`` a box's mask is pasted into (the box
    plus :data:`PASTE_MARGIN`, clipped), or None for an empty box or window."""
    height, width = image_size
    x0, y0, x1, y1 = box.tolist()
    if not (x1 > x0 and y1 > y0):
        return None
    left = max(math.floor(x0) - PASTE_MARGIN, 0)
    top = max(math.floor(y0) - PASTE_MARGIN, 0)
    right = min(math.ceil(x1) + PASTE_MARGIN, width)
    bottom = min(math.ceil(y1) + PASTE_MARGIN, height)
    if right <= left or bottom <= top:
        return None
    return top, bottom, left, right


def _paste_one(mask: Tensor, box: Tensor, window: tuple[int, int, int, int]) -> Tensor:
    """Grid-sample ``mask`` (Tensor[1, M, M]) at the pixel centres of ``window``:
    Tensor[bottom - top, right - left]."""
    top, bottom, left, right = window
    x0, y0, x1, y1 = box.tolist()
    xs = torch.arange(left, right, dtype=mask.dtype, device=mask.device) + 0.5 - x0
    ys = torch.arange(top, bottom, dtype=mask.dtype, device=mask.device) + 0.5 - y0
    xs = xs / (x1 - x0) * 2 - 1
    ys = ys / (y1 - y0) * 2 - 1
    grid = torch.stack([xs[None, :].expand(len(ys), -1), ys[:, None].expand(-1, len(xs))], dim=-1)
    return F.grid_sample(mask[None], grid[None], mode="bilinear", align_corners=False)[0, 0]


def paste_masks(masks: Tensor, boxes: Tensor, image_size: tuple[int, int]) -> Tensor:
    """Paste box-relative mask probabilities into the image by grid sampling.

    Each output pixel centre ``(x + 0.5, y + 0.5)`` is mapped into the box's normalised
    coordinates and sampled bilinearly (``align_corners=False``, zeros outside), which is how
    detectron2 pastes; torchvision's ``paste_masks_in_image`` resizes and differs at the edges.

    Args:
        masks (Tensor[N, 1, M, M], float): probabilities in box coordinates.
        boxes (Tensor[N, 4], float): XYXY, pixels of the target image.
        image_size: ``(H, W)`` of the target image.

    Returns:
        Tensor[N, 1, H, W], float: probabilities in image pixels.
    """
    out = masks.new_zeros((len(masks), 1, *image_size))
    for i, (mask, box) in enumerate(zip(masks, boxes, strict=True)):
        window = _paste_window(box, image_size)
        if window is not None:
            top, bottom, left, right = window
            out[i, 0, top:bottom, left:right] = _paste_one(mask, box, window)
    return out


def paste_masks_binary(
    masks: Tensor, boxes: Tensor, image_size: tuple[int, int], *, thresh: float
) -> Tensor:
    """:func:`paste_masks` followed by ``>= thresh``, without full-size float maps: each mask is
    sampled only inside its box (plus a pixel of margin) and written as bool.

    The output is allocated with ``numpy.zeros`` on the CPU, whose untouched pages the kernel
    maps lazily: the resident memory of N full-size masks is about that of their boxes.

    Args:
        masks (Tensor[N, 1, M, M], float): probabilities in box coordinates.
        boxes (Tensor[N, 4], float): XYXY, pixels of the target image.
        image_size: ``(H, W)`` of the target image.
        thresh: probability at which a pixel is inside.

    Returns:
        Tensor[N, H, W], bool, on the device of ``masks``.
    """
    shape = (len(masks), *image_size)
    on_cpu = masks.device.type == "cpu"
    if on_cpu:
        # Written through numpy: one thread copies each window, where torch's multi-threaded
        # copy makes both threads fault in fresh pages at once (2–3× slower, measured).
        array = np.zeros(shape, dtype=np.bool_)
        out = torch.from_numpy(array)
    else:
        out = torch.zeros(shape, dtype=torch.bool, device=masks.device)
    for i, (mask, box) in enumerate(zip(masks.float(), boxes.float(), strict=True)):
        window = _paste_window(box, image_size)
        if window is not None:
            top, bottom, left, right = window
            inside = _paste_one(mask, box, window) >= thresh
            if on_cpu:
                array[i, top:bottom, left:right] = inside.numpy()
            else:
                out[i, top:bottom, left:right] = inside
    return out


def scale_gradient(x: Tensor, scale: float) -> Tensor:
    """Identity in the forward pass; multiplies the gradient by ``scale`` in the backward pass.

    ``x * s + x.detach() * (1 - s)`` has value ``x`` and derivative ``s``.
    """
    return x * scale + x.detach() * (1.0 - scale)
