"""Resize and flip move images, boxes and masks together, deterministically."""

from __future__ import annotations

import pytest
import torch

from vlpart.data.transforms import Compose, RandomHorizontalFlip, ResizeShortestEdge


def _case():
    """A 4x6 image whose object covers columns 1-2 of rows 0-1: box [1, 0, 3, 2]."""
    image = torch.arange(3 * 4 * 6, dtype=torch.uint8).reshape(3, 4, 6)
    masks = torch.zeros((1, 4, 6), dtype=torch.uint8)
    masks[0, 0:2, 1:3] = 1
    target = {
        "boxes": torch.tensor([[1.0, 0.0, 3.0, 2.0]]),
        "masks": masks,
        "labels": torch.tensor([5]),
    }
    return image, target


def test_flip_moves_boxes_and_masks_consistently():
    image, target = _case()
    out_image, out = RandomHorizontalFlip(p=1.0)(image, target, torch.Generator())
    torch.testing.assert_close(out["boxes"], torch.tensor([[3.0, 0.0, 5.0, 2.0]]))
    expected = torch.zeros((1, 4, 6), dtype=torch.uint8)
    expected[0, 0:2, 3:5] = 1
    assert torch.equal(out["masks"], expected)
    assert torch.equal(out_image, image.flip(-1))
    assert torch.equal(out["labels"], target["labels"])
    # the flipped mask's tight box is the flipped box
    ys, xs = torch.nonzero(out["masks"][0], as_tuple=True)
    assert [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1] == [
        3,
        0,
        5,
        2,
    ]
    again_image, again = RandomHorizontalFlip(p=1.0)(out_image, out, torch.Generator())
    assert torch.equal(again_image, image) and torch.equal(again["boxes"], target["boxes"])
    assert torch.equal(target["masks"], _case()[1]["masks"])  # input target untouched


def test_flip_probability_and_generator():
    image, target = _case()
    kept_image, kept = RandomHorizontalFlip(p=0.0)(image, target, torch.Generator())
    assert torch.equal(kept_image, image) and torch.equal(kept["boxes"], target["boxes"])
    flip = RandomHorizontalFlip(p=0.5)
    flips = [
        not torch.equal(flip(image, target, torch.Generator().manual_seed(s))[0], image)
        for s in range(200)
    ]
    again = [
        not torch.equal(flip(image, target, torch.Generator().manual_seed(s))[0], image)
        for s in range(200)
    ]
    assert flips == again
    assert 70 < sum(flips) < 130
    with pytest.raises(ValueError, match="probability"):
        RandomHorizontalFlip(p=1.5)


def test_resize_short_side_and_max_size():
    image = torch.zeros((3, 50, 100), dtype=torch.uint8)
    masks = torch.zeros((1, 50, 100), dtype=torch.uint8)
    masks[0, 10:20, 40:60] = 1
    target = {"boxes": torch.tensor([[40.0, 10.0, 60.0, 20.0]]), "masks": masks}
    out_image, out = ResizeShortestEdge(25, max_size=1000)(image, target, torch.Generator())
    assert out_image.shape == (3, 25, 50) and out["masks"].shape == (1, 25, 50)
    torch.testing.assert_close(out["boxes"], torch.tensor([[20.0, 5.0, 30.0, 10.0]]))
    assert out["masks"].dtype == torch.uint8 and int(out["masks"].sum()) == 50  # 10x5 px
    capped_image, capped = ResizeShortestEdge(100, max_size=120)(image, target, torch.Generator())
    assert capped_image.shape == (3, 60, 120)  # 1.2x, limited by the long side
    torch.testing.assert_close(capped["boxes"], torch.tensor([[48.0, 12.0, 72.0, 24.0]]))


def test_resize_handles_no_instances_and_draws_sizes_from_generator():
    image = torch.zeros((3, 40, 40), dtype=torch.uint8)
    target = {"boxes": torch.zeros((0, 4)), "masks": torch.zeros((0, 40, 40), dtype=torch.uint8)}
    resize = ResizeShortestEdge([20, 30, 60], max_size=100)
    sizes = {
        resize(image, target, torch.Generator().manual_seed(s))[0].shape[-1] for s in range(30)
    }
    assert sizes == {20, 30, 60}
    _, out = resize(image, target, torch.Generator().manual_seed(3))
    assert out["boxes"].shape == (0, 4) and out["masks"].shape[0] == 0
    assert out["masks"].shape[1:] in {(20, 20), (30, 30), (60, 60)}
    with pytest.raises(ValueError, match="positive"):
        ResizeShortestEdge(0, max_size=10)


def test_compose_is_deterministic_per_seed():
    image, target = _case()
    pipeline = Compose([ResizeShortestEdge([4, 8], max_size=20), RandomHorizontalFlip(0.5)])
    a = pipeline(image, target, torch.Generator().manual_seed(7))
    b = pipeline(image, target, torch.Generator().manual_seed(7))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1]["boxes"], b[1]["boxes"])
    assert torch.equal(a[1]["masks"], b[1]["masks"])
