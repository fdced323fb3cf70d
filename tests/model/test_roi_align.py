"""The vectorised RoIAlign gradient against torchvision's kernel and finite differences."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import roi_align as tv_roi_align

from vlpart.model.ops import MultiLevelRoIAlign, assign_fpn_levels
from vlpart.model.roi_align import roi_align, roi_align_input_grad


def _boxes(
    num: int, images: int, side: float, generator: torch.Generator, largest: float = 70.0
) -> torch.Tensor:
    """``Tensor[num, 5]`` boxes of 1 to ``largest`` px, some partly or wholly off a ``side``-px
    image, plus an empty, an inverted and a whole-image box."""
    xy = torch.rand(num, 2, generator=generator) * side * 1.4 - side * 0.2
    wh = torch.rand(num, 2, generator=generator) * (largest - 1) + 1
    boxes = torch.cat([xy, xy + wh], dim=1)
    boxes[:3] = torch.tensor([[9.0, 9.0, 9.0, 9.0], [30, 30, 20, 20], [0, 0, side, side]])
    image = torch.randint(0, images, (num, 1), generator=generator).to(boxes)
    return torch.cat([image, boxes], dim=1)


CASES = [
    # images, channels, height, width, boxes, output size, spatial scale
    (4, 16, 32, 32, 200, 7, 1 / 4),
    (2, 8, 17, 23, 60, 14, 1 / 2),
    (1, 4, 5, 4, 30, 7, 1 / 8),
]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("sampling_ratio", [0, 2])
@pytest.mark.parametrize("aligned", [True, False])
def test_gradient_equals_torchvision(case, sampling_ratio, aligned):
    images, channels, height, width, num, size, scale = case
    generator = torch.Generator().manual_seed(num + size)
    rois = _boxes(num, images, height / scale, generator).double()
    features = torch.randn(images, channels, height, width, generator=generator).double()
    grad = torch.randn(num, channels, size, size, generator=generator).double()
    features.requires_grad_()
    options = dict(spatial_scale=scale, sampling_ratio=sampling_ratio, aligned=aligned)
    expected_out = tv_roi_align(features, rois, size, **options)
    (expected,) = torch.autograd.grad(expected_out, features, grad)
    out = roi_align(features, rois, size, **options)
    (actual,) = torch.autograd.grad(out, features, grad)
    assert torch.equal(out, expected_out)
    # float64: equal to the last bits of the sums' other order.
    torch.testing.assert_close(actual, expected, rtol=1e-12, atol=1e-12)
    assert expected.abs().max() > 1


def test_gradcheck_on_a_small_map():
    generator = torch.Generator().manual_seed(0)
    rois = _boxes(6, 2, 24.0, generator).double()
    features = torch.randn(2, 3, 6, 5, generator=generator, dtype=torch.float64)
    features.requires_grad_()
    assert torch.autograd.gradcheck(
        lambda f: roi_align(f, rois, 3, spatial_scale=0.25, sampling_ratio=0, aligned=True),
        (features,),
    )


def test_float32_gradient_and_autocast_output_dtype():
    generator = torch.Generator().manual_seed(1)
    rois = _boxes(100, 2, 128.0, generator)
    features = torch.randn(2, 16, 32, 32, generator=generator, requires_grad=True)
    grad = torch.randn(100, 16, 7, 7, generator=generator)
    options = dict(spatial_scale=1 / 4, sampling_ratio=0, aligned=True)
    (expected,) = torch.autograd.grad(tv_roi_align(features, rois, 7, **options), features, grad)
    (actual,) = torch.autograd.grad(roi_align(features, rois, 7, **options), features, grad)
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)
    # Under autocast both pool in float32 and return the maps' dtype, with equal gradients.
    low = features.detach().bfloat16().requires_grad_()
    with torch.autocast("cpu", torch.bfloat16):
        expected_out = tv_roi_align(low, rois, 7, **options)
        out = roi_align(low, rois, 7, **options)
    assert out.dtype == expected_out.dtype == torch.bfloat16
    assert torch.equal(out, expected_out)
    (expected,) = torch.autograd.grad(expected_out, low, grad.bfloat16())
    (actual,) = torch.autograd.grad(out, low, grad.bfloat16())
    assert actual.dtype == torch.bfloat16
    torch.testing.assert_close(actual, expected, rtol=0.01, atol=0.01)


def test_no_boxes_gives_a_zero_gradient():
    grad = roi_align_input_grad(
        torch.zeros(0, 4, 7, 7),
        torch.zeros(0, 5),
        (2, 4, 8, 8),
        spatial_scale=1.0,
        sampling_ratio=0,
        aligned=True,
    )
    assert grad.shape == (2, 4, 8, 8) and not grad.any()


def test_multilevel_pooling_trains_with_it():
    # The detector's pooling reaches the vectorised gradient on every level it pools from.
    generator = torch.Generator().manual_seed(2)
    features = [
        torch.randn(2, 8, 128 // 2**i, 128 // 2**i, generator=generator, requires_grad=True)
        for i in range(4)
    ]
    boxes = [_boxes(100, 1, 512.0, generator, 600.0)[:, 1:].clamp(0, 512) for _ in range(2)]
    pool = MultiLevelRoIAlign(7).train()
    out = pool(features, boxes)
    grads = torch.autograd.grad(out.square().sum(), features)
    with torch.no_grad():
        assert torch.equal(pool.eval()(features, boxes), out.detach())
    reference = [f.detach().clone().requires_grad_() for f in features]
    tv_out = _torchvision_multilevel(reference, boxes)
    expected = torch.autograd.grad(tv_out.square().sum(), reference)
    for actual, wanted in zip(grads, expected, strict=True):
        assert wanted.abs().sum() > 0
        torch.testing.assert_close(actual, wanted, rtol=1e-5, atol=1e-5)


def _torchvision_multilevel(features, boxes):
    """:class:`MultiLevelRoIAlign` (box size 7) from torchvision's op and its gradient."""
    rois = torch.cat([torch.cat([b.new_full((len(b), 1), i), b], 1) for i, b in enumerate(boxes)])
    levels = assign_fpn_levels(rois[:, 1:])
    parts = []
    for level, feat in zip(range(2, 6), features, strict=True):
        idx = torch.nonzero(levels == level).squeeze(1)
        parts.append((idx, tv_roi_align(feat, rois[idx], 7, 1 / 2**level, 0, True)))
    out = features[0].new_zeros(len(rois), features[0].shape[1], 7, 7)
    for idx, pooled in parts:
        out = out.index_put((idx,), pooled)
    return out
