"""Inference-only rewrites of a trained detector that keep its numerics to float rounding:
frozen BatchNorm folded into the preceding convolutions, ReLUs and residual sums fused into
them, channels-last layout for the convolutions.

They act on a copy (:func:`inference_copy`); saved weights and training never see them.
"""

from __future__ import annotations

import copy
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.resnet import Bottleneck
from torchvision.ops import FeaturePyramidNetwork, FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from vlpart.model.backbones import FPNBackbone

__all__ = ["fold_frozen_batchnorm", "fuse_relus", "inference_copy"]

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


def _fusable(x: Tensor) -> bool:
    """Whether oneDNN's fused convolution can run on ``x``: float32 on the CPU without autograd
    or autocast (autocast does not cast for the fused op; it has no gradient)."""
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and not torch.is_grad_enabled()
        and not torch.is_autocast_enabled("cpu")
        and not torch.compiler.is_compiling()
    )


def _conv_args(conv: nn.Conv2d) -> tuple:
    return conv.weight, conv.bias, conv.padding, conv.stride, conv.dilation, conv.groups


class _ConvReLU(nn.Module):
    """``relu(conv(x))`` as one oneDNN convolution with a ReLU post-op where
    :func:`_fusable` (the same sums, one pass over the output less), else as the two ops."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.conv = conv

    def forward(self, x: Tensor) -> Tensor:
        if _fusable(x):
            args = _conv_args(self.conv)
            return torch.ops.mkldnn._convolution_pointwise(x, *args, "relu", [None], "")
        return F.relu(self.conv(x))


class _FusedBottleneck(nn.Module):
    """A folded torchvision :class:`~torchvision.models.resnet.Bottleneck` whose ReLUs and
    residual sum run inside its convolutions: ``relu(conv3(...) + identity)`` is one oneDNN
    convolution with add and ReLU post-ops."""

    def __init__(self, block: Bottleneck) -> None:
        super().__init__()
        self.conv1 = _ConvReLU(block.conv1)
        self.conv2 = _ConvReLU(block.conv2)
        self.conv3 = block.conv3
        self.downsample = block.downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.conv2(self.conv1(x))
        if _fusable(out):
            args = _conv_args(self.conv3)
            fused = torch.ops.mkldnn._convolution_pointwise.binary
            return fused(out, identity, *args, "add", None, "relu", [], "")
        return F.relu(self.conv3(out) + identity)


def _plain_conv(module: nn.Module) -> bool:
    return (
        type(module) is nn.Conv2d
        and isinstance(module.padding, tuple)
        and module.padding_mode == "zeros"
    )


def _foldable_bottleneck(block: Bottleneck) -> bool:
    convs = (block.conv1, block.conv2, block.conv3)
    norms = (block.bn1, block.bn2, block.bn3)
    return all(map(_plain_conv, convs)) and all(isinstance(n, nn.Identity) for n in norms)


def fuse_relus(module: nn.Module) -> int:
    """Fuse, in place, each ReLU that follows a convolution into it (see :class:`_ConvReLU`):
    ``nn.Sequential`` pairs (the RPN and mask heads), the ResNet stem, and folded bottlenecks
    (see :class:`_FusedBottleneck`). Run after :func:`fold_frozen_batchnorm`: a convolution
    still followed by a norm is left alone.

    Returns:
        The number of ReLUs fused.
    """
    if not torch.backends.mkldnn.is_available():
        return 0
    fused = 0
    for sub in list(module.modules()):
        for name, child in list(sub.named_children()):
            if isinstance(child, Bottleneck) and _foldable_bottleneck(child):
                setattr(sub, name, _FusedBottleneck(child))
                fused += 3
        pairs = []
        if isinstance(sub, nn.Sequential):
            names = list(sub._modules)
            pairs = list(zip(names[:-1], names[1:], strict=True))
        elif isinstance(getattr(sub, "bn1", None), nn.Identity) and not hasattr(sub, "conv2"):
            pairs = [("conv1", "relu")]  # a ResNet stem: conv1, bn1 (folded), relu
        for conv_name, relu_name in pairs:
            conv, relu = getattr(sub, conv_name, None), getattr(sub, relu_name, None)
            if _plain_conv(conv) and type(relu) is nn.ReLU:
                setattr(sub, conv_name, _ConvReLU(conv))
                setattr(sub, relu_name, nn.Identity())
                fused += 1
    return fused


class _LeanFPNBackbone(nn.Module):
    """An :class:`~vlpart.model.backbones.FPNBackbone` (same modules, same sums) that frees
    each map once it is used: C5..C2 as soon as their lateral convolutions have read them, the
    upsampled top-down map before the 3×3 output convolution, and the lateral sum made in
    place. torchvision's FPN keeps all of them to the end, about 250 MB more at the stride-4
    level of an 800 px image (R50, 256 channels): the peak of a whole prediction."""

    def __init__(self, backbone: FPNBackbone) -> None:
        super().__init__()
        self.body = backbone.body
        self.fpn = backbone.fpn

    def forward(self, images: Tensor) -> OrderedDict[str, Tensor]:
        maps = list(self.body(images).values())  # C2..C5; the list is their only holder
        inner, layer = self.fpn.inner_blocks, self.fpn.layer_blocks
        last_inner = inner[-1](maps.pop())
        results = [layer[-1](last_inner)]
        for idx in range(len(maps) - 1, -1, -1):
            lateral = inner[idx](maps.pop())
            top_down = F.interpolate(last_inner, size=lateral.shape[-2:], mode="nearest")
            last_inner = lateral.add_(top_down)  # the sum torchvision makes, in place
            del top_down
            results.insert(0, layer[idx](last_inner))
        del last_inner
        results, _ = self.fpn.extra_blocks(results, [], [])
        return OrderedDict(
            (f"p{level}", feat) for level, feat in zip(range(2, 7), results, strict=True)
        )


def _lean_fpn_applies(backbone: nn.Module) -> bool:
    return (
        isinstance(backbone, FPNBackbone)
        and type(backbone.fpn) is FeaturePyramidNetwork
        and type(backbone.fpn.extra_blocks) is LastLevelMaxPool
    )


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
    convolutions, whose ReLUs are fused into the convolutions before them (:func:`fuse_relus`),
    whose FPN frees each map once used (:class:`_LeanFPNBackbone`), and whose backbone, RPN
    and mask head run in channels-last layout; every
    parameter and buffer outside the backbone is shared with ``model``, not copied.

    The copy computes what ``model`` computes up to float rounding (checked in
    ``tests/model/test_optimize.py`` and ``tests/inference/test_segmenter.py``); ``model`` is left
    untouched.
    """
    backbone_ids = {id(t) for t in (*model.backbone.parameters(), *model.backbone.buffers())}
    shared = {
        id(t): t for t in (*model.parameters(), *model.buffers()) if id(t) not in backbone_ids
    }
    fast = copy.deepcopy(model, memo=shared)
    fold_frozen_batchnorm(fast.backbone)
    fuse_relus(fast.backbone)
    fuse_relus(fast.rpn.head)
    fuse_relus(fast.roi_heads.mask_head)
    if _lean_fpn_applies(fast.backbone):
        fast.backbone = _LeanFPNBackbone(fast.backbone)
    fast.backbone = _ChannelsLastBackbone(fast.backbone)
    fast.roi_heads.mask_head = _ChannelsLastInput(fast.roi_heads.mask_head)
    return fast.eval()
