"""Inference-only rewrites of a trained detector that keep its numerics to float rounding:
frozen BatchNorm folded into the preceding convolutions, channels-last layout for the
convolutions.

They act on a copy (:func:`inference_copy`); saved weights and training never see them.
"""

from __future__ import annotations

import copy
from collections import OrderedDict

import torch
from torch import Tensor, nn
from torchvision.ops import FrozenBatchNorm2d

__all__ = ["fold_frozen_batchnorm", "inference_copy"]

# (convolution, BatchNorm) attribute pairs where the norm is applied directly to the
# convolution's output: torchvision's ResNet stem and bottlenecks, and EfficientNet-Lite's stem
# and MBConv blocks (efficientnet-lite-pytorch). ``nn.Sequential`` children are paired by order.
CONV_NORM_PAIRS = (
    ("conv1", "bn1"),
    ("conv2", "bn2"),
    ("conv3", "bn3"),
    ("conv_stem", "bn0"),
    ("_expand_conv", "_bn0"),
    ("_depthwise_conv", "_bn1"),
    ("_project_conv", "_bn2"),
)


def _fold(conv: nn.Conv2d, norm: FrozenBatchNorm2d) -> None:
    """``norm(conv(x)) == conv'(x)``: scale the filters and move the shift into the bias."""
    scale = norm.weight * (norm.running_var + norm.eps).rsqrt()
    shift = norm.bias - norm.running_mean * scale
    bias = conv.bias if conv.bias is not None else torch.zeros_like(shift)
    weight = conv.weight * scale.reshape(-1, *([1] * (conv.weight.ndim - 1)))
    conv.weight = nn.Parameter(weight.detach(), requires_grad=False)
    conv.bias = nn.Parameter((bias * scale + shift).detach(), requires_grad=False)


def fold_frozen_batchnorm(module: nn.Module) -> int:
    """Fold every :class:`~torchvision.ops.FrozenBatchNorm2d` that directly follows a
    convolution (see :data:`CONV_NORM_PAIRS`) into that convolution, in place; the norm becomes
    ``nn.Identity``. Only for inference copies: the folded weights are not the checkpoint's.

    Returns:
        The number of norms folded.
    """
    folded = 0
    for sub in list(module.modules()):
        pairs = [(c, n) for c, n in CONV_NORM_PAIRS if hasattr(sub, c) and hasattr(sub, n)]
        if isinstance(sub, nn.Sequential):
            names = list(sub._modules)
            pairs += list(zip(names[:-1], names[1:], strict=True))
        for conv_name, norm_name in pairs:
            conv, norm = getattr(sub, conv_name), getattr(sub, norm_name)
            if isinstance(conv, nn.Conv2d) and isinstance(norm, FrozenBatchNorm2d):
                _fold(conv, norm)
                setattr(sub, norm_name, nn.Identity())
                folded += 1
    return folded


class _ChannelsLastBackbone(nn.Module):
    """Runs a backbone in channels-last layout (oneDNN's fast convolution layout; weights in
    that layout make every convolution output follow it). The pyramid stays channels-last: the
    RPN's convolutions follow their input's layout, and
    :meth:`~vlpart.model.VLPartDetector.detect` hands RoIAlign a contiguous copy."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.body = backbone.to(memory_format=torch.channels_last)

    def forward(self, images: Tensor) -> OrderedDict[str, Tensor]:
        return self.body(images.contiguous(memory_format=torch.channels_last))


class _ChannelsLastInput(nn.Module):
    """Runs ``module`` on a channels-last copy of its input: the mask head's convolutions, and
    the deconvolution and 1×1 predictor after them, are 1.2–7× faster in that layout."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: Tensor) -> Tensor:
        return self.module(x.contiguous(memory_format=torch.channels_last))


def inference_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` for inference whose backbone has frozen BatchNorm folded into the
    convolutions, and whose backbone, RPN and mask head run in channels-last layout; every
    parameter and buffer outside the backbone is shared with ``model``, not copied.

    The copy computes what ``model`` computes up to float rounding (checked in
    ``tests/model/test_optimize.py`` and ``tests/test_predictor.py``); ``model`` is left
    untouched.
    """
    backbone_ids = {id(t) for t in (*model.backbone.parameters(), *model.backbone.buffers())}
    shared = {
        id(t): t for t in (*model.parameters(), *model.buffers()) if id(t) not in backbone_ids
    }
    fast = copy.deepcopy(model, memo=shared)
    fold_frozen_batchnorm(fast.backbone)
    fast.backbone = _ChannelsLastBackbone(fast.backbone)
    fast.roi_heads.mask_head = _ChannelsLastInput(fast.roi_heads.mask_head)
    return fast.eval()
