"""Inference-only rewrites of a trained detector that keep its numerics to float rounding:
frozen BatchNorm folded into the preceding convolutions, channels-last convolutions.

They act on a copy (:func:`inference_copy`); saved weights and training never see them.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
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


def inference_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` for inference: frozen BatchNorm folded into the convolutions and
    channels-last convolution weights (oneDNN's fast layout; a convolution with channels-last
    weights gives channels-last outputs, so the whole pyramid and the heads run in it). The
    fully connected layers' parameters are shared with ``model``, not copied.

    The copy computes what ``model`` computes up to float rounding (checked in
    ``tests/model/test_optimize.py``); ``model`` is left untouched.
    """
    shared = {
        id(t): t
        for module in model.modules()
        if isinstance(module, nn.Linear)
        for t in (*module.parameters(recurse=False), *module.buffers(recurse=False))
    }
    fast = copy.deepcopy(model, memo=shared)
    fold_frozen_batchnorm(fast)
    for module in fast.modules():
        if isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
            module.to(memory_format=torch.channels_last)
    return fast.eval()
