"""Reference numerics the converted official checkpoints depend on, checked by hand."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.ops import roi_align

from vlpart.model import ops
from vlpart.model.ops import MultiLevelRoIAlign, assign_fpn_levels, contiguous_maps, paste_masks
from vlpart.model.roi_heads import TextRoIHeads
from vlpart.model.rpn import AnchorGenerator, cell_anchors
from vlpart.model.transform import DetectorTransform, resized_shape


def test_roi_align_is_half_pixel_aligned_with_adaptive_sampling():
    # Feature value = x index, so bilinear sampling returns the sample's x coordinate.
    feat = torch.arange(16.0).repeat(16, 1)[None, None]
    pool = MultiLevelRoIAlign(2, min_level=2)
    # Image box [8, 24] at stride 4 → feature [2, 6], aligned shifts by -0.5 → [1.5, 5.5];
    # two bins of width 2 centred at 2.5 and 4.5.
    out = pool([feat], [torch.tensor([[8.0, 8.0, 24.0, 24.0]])])
    torch.testing.assert_close(out[0, 0], torch.tensor([[2.5, 4.5], [2.5, 4.5]]))
    unaligned = MultiLevelRoIAlign(2, min_level=2, aligned=False)(
        [feat], [torch.tensor([[8.0, 8.0, 24.0, 24.0]])]
    )
    torch.testing.assert_close(unaligned[0, 0], torch.tensor([[3.0, 5.0], [3.0, 5.0]]))


def test_level_assignment_formula():
    sides = torch.tensor([10.0, 111.9, 112.0, 223.9, 224.0, 447.0, 448.0, 2000.0])
    boxes = torch.stack([torch.zeros(8), torch.zeros(8), sides, sides], dim=1)
    expected = [min(max(math.floor(4 + math.log2(s / 224 + 1e-8)), 2), 5) for s in sides.tolist()]
    assert expected == [2, 2, 3, 3, 4, 4, 5, 5]
    assert assign_fpn_levels(boxes).tolist() == expected


def test_box_decoding_with_weights_and_clamp():
    heads = TextRoIHeads(8, 4)
    proposal = torch.tensor([[0.0, 0.0, 10.0, 20.0]])
    deltas = torch.tensor([[10.0, 20.0, 5 * math.log(2.0), 500.0]])  # weights (10, 10, 5, 5)
    box = heads.box_coder.decode(deltas, [proposal]).view(-1, 4)
    # centre (5 + 1·10, 10 + 2·20); width 10·2; height 20·exp(log(1000/16)) (clamped).
    torch.testing.assert_close(box, torch.tensor([[5.0, 50 - 625.0, 25.0, 50 + 625.0]]))


def test_cell_anchors_are_not_rounded_and_size_major():
    anchors = cell_anchors((32, 64), (0.5, 1.0, 2.0))
    w = math.sqrt(32**2 / 0.5)
    torch.testing.assert_close(anchors[0], torch.tensor([-w / 2, -w / 4, w / 2, w / 4]))
    torch.testing.assert_close(anchors[1], torch.tensor([-16.0, -16.0, 16.0, 16.0]))
    torch.testing.assert_close(anchors[4], torch.tensor([-32.0, -32.0, 32.0, 32.0]))
    assert anchors[0, 0] != torch.round(anchors[0, 0])
    grids = AnchorGenerator(sizes=((32,),), strides=(4,)).grid_anchors([(2, 3)], torch.zeros(1))
    first = grids[0].view(2, 3, 3, 4)  # rows, cols, anchors: offset 0, stride 4
    torch.testing.assert_close(first[1, 2, 1], torch.tensor([8 - 16.0, 4 - 16.0, 8 + 16, 4 + 16]))


def test_grid_sample_paste():
    mask = torch.tensor([[[[0.0, 1.0], [0.0, 1.0]]]])
    out = paste_masks(mask, torch.tensor([[0.0, 0.0, 4.0, 2.0]]), (2, 5))
    # Pixel centres 0.5..4.5 → texel coords -0.25, 0.25, 0.75, 1.25, 1.75, zero padding.
    torch.testing.assert_close(out[0, 0], torch.tensor([[0.0, 0.25, 0.75, 0.75, 0.25]] * 2))
    assert paste_masks(mask[:0], torch.zeros(0, 4), (3, 4)).shape == (0, 1, 3, 4)


def test_resize_rounding_and_pad_after_normalise():
    assert resized_shape(480, 640, min_size=800, max_size=1333) == (800, 1067)
    assert resized_shape(100, 2000, min_size=800, max_size=1333) == (67, 1333)
    transform = DetectorTransform(min_size=64, max_size=128)
    image = torch.full((3, 64, 90), 255, dtype=torch.uint8)
    batch, _ = transform([image])
    assert batch.tensors.shape == (1, 3, 64, 96) and batch.image_sizes == [(64, 90)]
    torch.testing.assert_close(batch.tensors[0, 0, 0, 0], torch.tensor((255 - 123.675) / 58.395))
    assert torch.count_nonzero(batch.tensors[..., 90:]) == 0


def _pyramid_and_boxes():
    gen = torch.Generator().manual_seed(3)
    features = [torch.randn(2, 8, 64 >> i, 96 >> i, generator=gen) for i in range(4)]
    # Boxes of every level (sides 8–400 px on a 256×384 input), some degenerate or outside.
    xy = torch.rand(300, 2, generator=gen) * torch.tensor([384.0, 256.0])
    wh = torch.rand(300, 1, generator=gen) ** 3 * 400 * (torch.rand(300, 2, generator=gen) + 0.5)
    boxes = torch.cat([xy, xy + wh], dim=1)
    boxes[:3] = torch.tensor([[10.0, 10.0, 10.0, 10.0], [-50, -50, -10, -10], [0, 0, 900, 900]])
    return features, [boxes[:180], boxes[180:]]


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("chunk_boxes", [None, 10])
def test_threaded_roi_align_equals_one_call_per_level(threads, chunk_boxes, monkeypatch):
    if chunk_boxes:  # chunks of at most about 10 boxes: dozens of calls
        monkeypatch.setattr(ops, "ROI_CHUNK_ELEMENTS", chunk_boxes * 8 * 7 * 7)
    features, boxes = _pyramid_and_boxes()
    pool = MultiLevelRoIAlign(7).eval()
    rois = torch.cat([torch.cat([b.new_full((len(b), 1), i), b], 1) for i, b in enumerate(boxes)])
    levels = assign_fpn_levels(rois[:, 1:])
    expected = torch.zeros(len(rois), 8, 7, 7)
    for level, feat in zip(range(2, 6), features, strict=True):
        idx = levels == level
        expected[idx] = roi_align(feat, rois[idx], 7, 1 / 2**level, 0, True)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        with torch.inference_mode():
            inference = pool(features, boxes)
        with torch.no_grad():
            no_grad = pool(features, boxes)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(inference, expected) and torch.equal(no_grad, expected)


def test_threaded_roi_align_keeps_autocast_and_autograd():
    features, boxes = _pyramid_and_boxes()
    pool = MultiLevelRoIAlign(7)
    with torch.inference_mode():
        expected = pool.eval()(features, boxes)
    # The threads run under the caller's autocast: RoIAlign gets float32 maps, as torchvision's
    # autocast rule casts them (its CPU kernel has no bfloat16).
    with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16):
        low = pool([f.bfloat16() for f in features], boxes)
    torch.testing.assert_close(low.float(), expected, rtol=0.02, atol=0.05)
    # With autograd the levels run in turn and gradients reach every map.
    features = [f.requires_grad_() for f in features]
    out = pool.train()(features, boxes)
    assert torch.equal(out.detach(), expected)
    out.sum().backward()
    assert all(f.grad is not None and f.grad.abs().sum() > 0 for f in features)


def test_balanced_chunks_split_the_sampling_cost():
    pool = MultiLevelRoIAlign(7)
    # One big box costs as much as the many small ones after it.
    rois = torch.tensor([[0, 0, 0, 56, 56]] + [[0, 0, 0, 7, 7]] * 16, dtype=torch.float32)
    assert pool._balanced_chunks(rois, 0.5, 2) == [1, 16]
    assert sum(pool._balanced_chunks(rois, 0.5, 5)) == len(rois)
    assert sum(pool._balanced_chunks(rois, 0.5, 40)) == len(rois)
    assert MultiLevelRoIAlign(7, sampling_ratio=2)._balanced_chunks(rois, 0.5, 2) == [8, 9]


def test_contiguous_maps_equals_contiguous():
    gen = torch.Generator().manual_seed(0)
    plain = torch.randn(2, 16, 12, 20, generator=gen)
    maps = {"p2": plain.contiguous(memory_format=torch.channels_last), "p3": plain[:, :, ::2, ::2]}
    maps["p4"] = plain
    given = dict(maps)
    out = contiguous_maps(given)
    assert given == {}  # taken out as they are copied: each original can go early
    assert list(out) == ["p2", "p3", "p4"]
    for name, x in maps.items():
        assert out[name].is_contiguous() and torch.equal(out[name], x)
    assert out["p4"] is plain  # already contiguous: no copy


def test_contiguous_maps_are_float32_under_autocast():
    low = torch.randn(1, 8, 6, 10).bfloat16().contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", torch.bfloat16):
        out = contiguous_maps({"p2": low})["p2"]
    assert out.dtype == torch.float32 and out.is_contiguous()
    assert torch.equal(out, low.float())
    assert contiguous_maps({"p2": low})["p2"].dtype == torch.bfloat16  # no autocast: kept
