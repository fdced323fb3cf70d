"""The inference copy (folded BatchNorm, channels-last) computes what the model computes."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models.resnet import Bottleneck
from torchvision.ops import FrozenBatchNorm2d

from vlpart.model.optimize import fold_frozen_batchnorm, fuse_relus, inference_copy


def _randomise_norms(model: nn.Module) -> None:
    """Non-trivial frozen statistics, so that folding has something to get wrong."""
    gen = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, FrozenBatchNorm2d):
            n = m.weight.numel()
            m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
            m.bias.copy_(torch.randn(n, generator=gen) * 0.1)
            m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)


@pytest.mark.parametrize("backbone", ["resnet50", "efficientnet_lite0"])
def test_folded_copy_gives_the_same_pyramid(tiny_config, backbone):
    from vlpart.model import build_model

    model = build_model(tiny_config(backbone=backbone)).eval()
    _randomise_norms(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fast = inference_copy(model)
    num_norms = sum(isinstance(m, FrozenBatchNorm2d) for m in model.modules())
    assert num_norms > 0
    assert not any(isinstance(m, FrozenBatchNorm2d) for m in fast.modules())
    x = torch.randn(1, 3, 96, 128)
    with torch.inference_mode():
        ref, out = model.backbone(x), fast.backbone(x)
    for name in ref:
        assert out[name].is_contiguous(memory_format=torch.channels_last)  # the RPN's layout
        # Float noise relative to the map's scale (random-init activations grow with depth).
        scale = float(ref[name].abs().max())
        torch.testing.assert_close(out[name], ref[name], rtol=1e-4, atol=1e-5 * scale)
    # The model itself is unchanged (keys, values, layout) and shares all but its backbone.
    after = model.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], before[k]) and after[k].is_contiguous() for k in before)
    assert fast.roi_heads.box_head.fc6.weight is model.roi_heads.box_head.fc6.weight
    assert fast.rpn.head.conv[0][0].conv.weight is model.rpn.head.conv[0][0].weight  # fused ReLU
    conv = fast.backbone.body.fpn.inner_blocks[0][0].weight
    assert conv is not model.backbone.fpn.inner_blocks[0][0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last)


def test_fold_handles_sequential_and_bias():
    conv = nn.Conv2d(3, 4, 3, bias=True)
    norm = FrozenBatchNorm2d(4)
    norm.weight.copy_(torch.tensor([1.0, 2.0, 0.5, 3.0]))
    norm.running_mean.copy_(torch.tensor([0.1, -0.2, 0.3, 0.0]))
    norm.running_var.copy_(torch.tensor([1.0, 4.0, 0.25, 2.0]))
    norm.bias.copy_(torch.tensor([0.5, 0.0, -1.0, 2.0]))
    seq = nn.Sequential(conv, norm, nn.ReLU())
    x = torch.randn(2, 3, 8, 8)
    ref = seq(x)
    assert fold_frozen_batchnorm(seq) == 1
    assert isinstance(seq[1], nn.Identity)
    torch.testing.assert_close(seq(x), ref, rtol=1e-5, atol=1e-6)
    assert fold_frozen_batchnorm(seq) == 0


@pytest.mark.parametrize("channels_last", [False, True])
def test_fused_relus_give_the_same_values(channels_last):
    torch.manual_seed(0)
    downsample = nn.Sequential(nn.Conv2d(16, 32, 1, stride=2, bias=False), FrozenBatchNorm2d(32))
    block = Bottleneck(16, 8, stride=2, downsample=downsample, norm_layer=FrozenBatchNorm2d)
    head = nn.Sequential(nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 4, 1))
    model = nn.Sequential(block, head).eval()
    _randomise_norms(model)
    fold_frozen_batchnorm(model)
    x = torch.randn(2, 16, 20, 24)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        ref = model(x)
    assert fuse_relus(model) == 4  # the block's three and the head's one
    assert not any(type(m) is nn.ReLU for m in model.modules())
    # The same sums: identical bits in most of oneDNN's kernels, float rounding in the others
    # (e.g. one thread on NCHW input).
    with torch.inference_mode():
        torch.testing.assert_close(model(x), ref, rtol=1e-5, atol=1e-6 * float(ref.abs().max()))
    # With autograd (or under autocast) the fused modules run the plain ops.
    torch.testing.assert_close(model(x), ref)
    with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16):
        torch.testing.assert_close(model(x).float(), ref, rtol=0.05, atol=0.05 * ref.abs().max())


def test_fuse_leaves_unfolded_norms_alone():
    block = Bottleneck(16, 4, norm_layer=FrozenBatchNorm2d).eval()
    stem = nn.Sequential(nn.Conv2d(3, 8, 3), FrozenBatchNorm2d(8), nn.ReLU())
    assert fuse_relus(block) == 0 and fuse_relus(stem) == 0


def test_lean_fpn_gives_the_same_pyramid_bit_for_bit(tiny_config):
    from vlpart.model import build_model
    from vlpart.model.optimize import _lean_fpn_applies, _LeanFPNBackbone

    backbone = build_model(tiny_config()).eval().backbone
    assert _lean_fpn_applies(backbone)
    x = torch.randn(2, 3, 96, 128)
    with torch.inference_mode():
        ref, out = backbone(x), _LeanFPNBackbone(backbone)(x)
    assert list(out) == list(ref) == ["p2", "p3", "p4", "p5", "p6"]
    for name in ref:
        assert torch.equal(out[name], ref[name]), name
