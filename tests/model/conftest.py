"""Batches and official-layout state dicts shared by the model tests (the tiny detectors are
``tiny_config`` / ``tiny_models`` in the root conftest)."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.models import resnet50


@pytest.fixture
def part_batch():
    """Two images (one with two objects, one with none) and their part-kind targets."""
    images = [torch.rand(3, 96, 128), torch.rand(3, 80, 100)]
    masks = torch.zeros(2, 96, 128, dtype=torch.uint8)
    masks[0, 10:70, 10:60] = 1
    masks[1, 20:80, 30:90] = 1
    targets = [
        {
            "boxes": torch.tensor([[10.0, 10, 60, 70], [30, 20, 90, 80]]),
            "labels": torch.tensor([1, 3]),
            "masks": masks,
        },
        {
            "boxes": torch.zeros(0, 4),
            "labels": torch.zeros(0, dtype=torch.int64),
            "masks": torch.zeros(0, 80, 100, dtype=torch.uint8),
        },
    ]
    return images, targets


NUM_TRAIN_CLASSES = 7
SWIN_B_DIMS, SWIN_B_DEPTHS, SWIN_B_HEADS = (128, 256, 512, 1024), (2, 2, 18, 2), (4, 8, 16, 32)


def _swin_trunk_state(rand) -> dict[str, torch.Tensor]:
    """Swin-B trunk keys as the released detectron2 Swin backbone names them."""
    bb = "backbone.bottom_up."
    state = {
        bb + "patch_embed.proj.weight": rand(128, 3, 4, 4),
        bb + "patch_embed.proj.bias": rand(128),
        bb + "patch_embed.norm.weight": torch.ones(128),
        bb + "patch_embed.norm.bias": torch.zeros(128),
    }
    for i, (c, depth, nh) in enumerate(zip(SWIN_B_DIMS, SWIN_B_DEPTHS, SWIN_B_HEADS, strict=True)):
        for j in range(depth):
            p = f"{bb}layers.{i}.blocks.{j}."
            index = torch.arange(49 * 49, dtype=torch.int64).remainder(169).view(49, 49)
            state |= {
                p + "norm1.weight": torch.ones(c),
                p + "norm1.bias": torch.zeros(c),
                p + "attn.relative_position_bias_table": rand(169, nh),
                p + "attn.relative_position_index": index,
                p + "attn.qkv.weight": rand(3 * c, c),
                p + "attn.qkv.bias": rand(3 * c),
                p + "attn.proj.weight": rand(c, c),
                p + "attn.proj.bias": rand(c),
                p + "norm2.weight": torch.ones(c),
                p + "norm2.bias": torch.zeros(c),
                p + "mlp.fc1.weight": rand(4 * c, c),
                p + "mlp.fc1.bias": rand(4 * c),
                p + "mlp.fc2.weight": rand(c, 4 * c),
                p + "mlp.fc2.bias": rand(c),
            }
        if i < 3:
            state |= {
                f"{bb}layers.{i}.downsample.reduction.weight": rand(2 * c, 4 * c),
                f"{bb}layers.{i}.downsample.norm.weight": torch.ones(4 * c),
                f"{bb}layers.{i}.downsample.norm.bias": torch.zeros(4 * c),
            }
        state |= {f"{bb}norm{i}.weight": torch.ones(c), f"{bb}norm{i}.bias": torch.zeros(c)}
    return state


def make_official_state(
    *,
    backbone: str = "resnet50",
    cascade: bool = False,
    trunk_only: bool = False,
    dtype: torch.dtype = torch.float32,
) -> dict[str, torch.Tensor]:
    """A seeded synthetic VLPart checkpoint in detectron2's key layout: R50-FPN Mask R-CNN or
    Swin-B FPN, plain or cascade (3 box stages), with the training text matrix ``zs_weight``
    of :data:`NUM_TRAIN_CLASSES` classes. Floating tensors are cast to ``dtype``."""
    gen = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=gen) / math.sqrt(max(1, math.prod(shape[1:])))

    if backbone == "resnet50":
        torch_state = torch.get_rng_state()
        torch.manual_seed(0)
        trunk = resnet50().state_dict()
        torch.set_rng_state(torch_state)
        state = {
            f"backbone.bottom_up.base.{k}": v for k, v in trunk.items() if not k.startswith("fc.")
        }
        in_channels = (256, 512, 1024, 2048)
    else:
        state = _swin_trunk_state(rand)
        in_channels = SWIN_B_DIMS
    if trunk_only:
        return state
    for lvl, cin in zip(range(2, 6), in_channels, strict=True):
        state[f"backbone.fpn_lateral{lvl}.weight"] = rand(256, cin, 1, 1)
        state[f"backbone.fpn_lateral{lvl}.bias"] = rand(256)
        state[f"backbone.fpn_output{lvl}.weight"] = rand(256, 256, 3, 3)
        state[f"backbone.fpn_output{lvl}.bias"] = rand(256)
    rpn = "proposal_generator.rpn_head."
    state |= {
        rpn + "conv.weight": rand(256, 256, 3, 3),
        rpn + "conv.bias": rand(256),
        rpn + "objectness_logits.weight": rand(3, 256, 1, 1),
        rpn + "objectness_logits.bias": rand(3),
        rpn + "anchor_deltas.weight": rand(12, 256, 1, 1),
        rpn + "anchor_deltas.bias": rand(12),
    }
    for stage in ("0.", "1.", "2.") if cascade else ("",):
        head, pred = f"roi_heads.box_head.{stage}", f"roi_heads.box_predictor.{stage}"
        state |= {
            head + "fc1.weight": rand(1024, 256 * 49),
            head + "fc1.bias": rand(1024),
            head + "fc2.weight": rand(1024, 1024),
            head + "fc2.bias": rand(1024),
            pred + "cls_score.linear.weight": rand(1024, 1024),
            pred + "cls_score.linear.bias": rand(1024),
            pred + "cls_score.zs_weight": rand(1024, NUM_TRAIN_CLASSES + 1),
            pred + "bbox_pred.0.weight": rand(1024, 1024),
            pred + "bbox_pred.0.bias": rand(1024),
            pred + "bbox_pred.2.weight": rand(4, 1024),
            pred + "bbox_pred.2.bias": rand(4),
        }
    mask = "roi_heads.mask_head."
    for i in range(1, 5):
        state |= {
            f"{mask}mask_fcn{i}.weight": rand(256, 256, 3, 3),
            f"{mask}mask_fcn{i}.bias": rand(256),
        }
    state |= {
        mask + "deconv.weight": rand(256, 256, 2, 2),
        mask + "deconv.bias": rand(256),
        mask + "predictor.weight": rand(1, 256, 1, 1),
        mask + "predictor.bias": rand(1),
        "pixel_mean": torch.tensor([123.675, 116.28, 103.53]).view(3, 1, 1),
        "pixel_std": torch.tensor([58.395, 57.12, 57.375]).view(3, 1, 1),
    }
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}


@pytest.fixture(scope="session")
def official_state():
    """``official_state(backbone=..., cascade=..., trunk_only=..., dtype=...)`` →
    :func:`make_official_state`."""
    return make_official_state
