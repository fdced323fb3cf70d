"""torchvision's RoIAlign with a vectorised gradient on the CPU.

torchvision's CPU backward visits every (box, channel, bin, sample) on one thread and recomputes
the bilinear weights for each channel. RoIAlign is separable: with ``A_y[p, y]`` the weight of
feature row ``y`` in output row ``p`` (bilinear, averaged over the bin's samples, zero where a
sample falls outside the map) and ``A_x`` the same for columns, a box pools
``out[c] = A_y @ feature[c] @ A_x.T``. Here both factors are computed once per box, only over
the few pixels each bin touches, and the gradient of the whole map is one sparse matrix product
of their outer products with the output gradient. The forward pass is torchvision's own.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import roi_align as tv_roi_align

__all__ = ["roi_align", "roi_align_input_grad"]


def roi_align(
    features: Tensor,
    rois: Tensor,
    output_size: int,
    *,
    spatial_scale: float,
    sampling_ratio: int,
    aligned: bool,
) -> Tensor:
    """``torchvision.ops.roi_align`` whose gradient on the CPU is :func:`roi_align_input_grad`.

    The output is torchvision's, bit for bit; the gradient of ``features`` equals torchvision's
    to float rounding (the sums run in another order). Under autocast the features and boxes are
    pooled in float32 and the output is given the features' dtype, as torchvision's autocast
    rule does.

    Args:
        features (Tensor[B, C, H, W]): one pyramid level.
        rois (Tensor[R, 5]): ``(image index, x1, y1, x2, y2)`` in input pixels.
        output_size: side ``S`` of the pooled grid.
        spatial_scale: level pixels per input pixel.
        sampling_ratio: samples per bin side; 0 = ``ceil(box side / S)`` per box.
        aligned: shift boxes by half a pixel (detectron2's ROIAlignV2).

    Returns:
        Tensor[R, C, S, S].
    """
    if features.device.type != "cpu" or not (torch.is_grad_enabled() and features.requires_grad):
        return tv_roi_align(features, rois, output_size, spatial_scale, sampling_ratio, aligned)
    dtype = features.dtype
    if torch.is_autocast_enabled("cpu"):
        features, rois = features.float(), rois.float()
    with torch.autocast("cpu", enabled=False):
        out = _RoIAlign.apply(features, rois, output_size, spatial_scale, sampling_ratio, aligned)
    return out.to(dtype)


class _RoIAlign(torch.autograd.Function):
    @staticmethod
    def forward(ctx, features, rois, output_size, spatial_scale, sampling_ratio, aligned):
        ctx.save_for_backward(rois)
        ctx.setup = (features.shape, output_size, spatial_scale, sampling_ratio, aligned)
        return tv_roi_align(features, rois, output_size, spatial_scale, sampling_ratio, aligned)

    @staticmethod
    def backward(ctx, grad):
        (rois,) = ctx.saved_tensors
        shape, output_size, spatial_scale, sampling_ratio, aligned = ctx.setup
        grad_features = roi_align_input_grad(
            grad,
            rois,
            shape,
            spatial_scale=spatial_scale,
            sampling_ratio=sampling_ratio,
            aligned=aligned,
        )
        return grad_features, None, None, None, None, None


def roi_align_input_grad(
    grad: Tensor,
    rois: Tensor,
    shape: torch.Size | tuple[int, int, int, int],
    *,
    spatial_scale: float,
    sampling_ratio: int,
    aligned: bool,
) -> Tensor:
    """Gradient of RoIAlign's feature map from the gradient of its output.

    Each output value is a weighted sum of a few feature pixels, the weights being the product
    of one row weight and one column weight (see the module docstring). The gradient of the
    map is that weight matrix, transposed, times the output gradient: one sparse matrix product
    ``[B * H * W, R * S * S] @ [R * S * S, C]`` with ``K_y * K_x`` entries per output value,
    where ``K`` is the most pixels one bin touches along an axis.

    Args:
        grad (Tensor[R, C, S, S]): gradient of the pooled boxes.
        rois (Tensor[R, 5]): the boxes, as pooled.
        shape: ``(B, C, H, W)`` of the feature map.
        spatial_scale, sampling_ratio, aligned: as pooled.

    Returns:
        Tensor[B, C, H, W] in channels-last memory, the dtype of ``grad``.
    """
    batch, channels, height, width = shape
    num_rois, _, size, _ = grad.shape
    if not num_rois:
        return grad.new_zeros((batch, height, width, channels)).permute(0, 3, 1, 2)
    coords = rois[:, 1:].to(grad.dtype) * spatial_scale - (0.5 if aligned else 0.0)
    start = coords[:, :2]
    extent = coords[:, 2:] - start
    if not aligned:
        extent = extent.clamp(min=1.0)
    if sampling_ratio > 0:
        grid = torch.full_like(extent, sampling_ratio, dtype=torch.int64)
    else:
        grid = (extent / size).ceil().to(torch.int64)
    col, col_weight = _axis_weights(start[:, 0], extent[:, 0], grid[:, 0], size, width)
    row, row_weight = _axis_weights(start[:, 1], extent[:, 1], grid[:, 1], size, height)
    # Entry (r, p, q, a, b): pixel (row[r, p, a], col[r, q, b]) of box r's image, output (p, q).
    map_row = (rois[:, 0].to(torch.int64) * height)[:, None, None] + row
    pixel = map_row[:, :, None, :, None] * width + col[:, None, :, None, :]
    weight = row_weight[:, :, None, :, None] * col_weight[:, None, :, None, :]
    output = torch.arange(num_rois * size * size, device=grad.device)
    output = output.view(num_rois, size, size, 1, 1).expand_as(pixel)
    matrix = torch.sparse_coo_tensor(
        torch.stack([pixel.reshape(-1), output.reshape(-1)]),
        weight.reshape(-1),
        (batch * height * width, num_rois * size * size),
        check_invariants=False,
    )
    values = grad.permute(0, 2, 3, 1).reshape(-1, channels)
    out = torch.sparse.mm(matrix, values)
    return out.view(batch, height, width, channels).permute(0, 3, 1, 2)


def _axis_weights(
    start: Tensor, extent: Tensor, grid: Tensor, size: int, length: int
) -> tuple[Tensor, Tensor]:
    """One axis of RoIAlign: the pixels each bin reads along it and their weights.

    Args:
        start, extent (Tensor[R], float): first coordinate and length of each box in level
            pixels (after the alignment shift).
        grid (Tensor[R], int64): samples per bin along this axis.
        size: bins along the axis.
        length: pixels along the axis of the feature map.

    Returns:
        ``pixels`` (Tensor[R, size, K], int64) and ``weights`` (Tensor[R, size, K]): bin ``p``
        of box ``r`` reads pixel ``pixels[r, p, k]`` with weight ``weights[r, p, k]`` (the
        bilinear weights of its samples, averaged; 0 where a sample is off the map), ``K``
        consecutive pixels, as many as the widest bin of any box touches.
    """
    dtype = start.dtype
    samples = max(int(grid.max()), 1)
    bin_size = (extent / size)[:, None, None]
    per_bin = grid.clamp(min=1).to(dtype)[:, None, None]
    sample = torch.arange(samples, device=start.device)
    # The sample coordinates in torchvision's order of operations.
    pos = (
        start[:, None, None]
        + torch.arange(size, device=start.device, dtype=dtype)[:, None] * bin_size
        + (sample + 0.5).to(dtype) * bin_size / per_bin
    )
    inside = (sample < grid[:, None, None]) & (pos >= -1.0) & (pos <= length)
    pos = pos.clamp(min=0.0)
    low = pos.to(torch.int64)
    at_end = low >= length - 1
    low = low.clamp(max=length - 1)
    high = torch.where(at_end, low, low + 1)
    frac = torch.where(at_end, 0.0, pos - low)
    share = inside / per_bin
    first = torch.where(inside, low, length - 1).amin(dim=2, keepdim=True)
    last = torch.where(inside, high, 0).amax(dim=2, keepdim=True)
    width = int((last - first).max().clamp(min=0)) + 1
    weights = start.new_zeros((len(start), size, width))
    weights.scatter_add_(2, (low - first).clamp(0, width - 1), (1 - frac) * share)
    weights.scatter_add_(2, (high - first).clamp(0, width - 1), frac * share)
    pixels = (first + torch.arange(width, device=start.device)).clamp(max=length - 1)
    return pixels, weights
