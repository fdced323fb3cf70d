from __future__ import annotations

import numpy as np
import pytest
import torch

from vlpart.core.vocab import parse_vocabulary
from vlpart.parsing.transfer import (
    foreground_cells,
    largest_component,
    mask_box,
    match_patches,
    pixel_sources,
    rename_part,
    snap_to_proposals,
    transfer_masks,
)


def test_largest_component_uses_8_connectivity():
    mask = np.zeros((6, 8), bool)
    mask[0, 0] = mask[1, 1] = mask[2, 2] = True  # a diagonal: one component of 3 when 8-connected
    mask[4, 5:7] = True  # 2 pixels
    out = largest_component(mask)
    assert out.sum() == 3
    assert out[0, 0] and out[2, 2] and not out[4, 5]


def test_largest_component_picks_biggest_blob_and_keeps_empty():
    mask = np.zeros((10, 10), bool)
    mask[0:2, 0:2] = True  # 4
    mask[5:9, 5:8] = True  # 12
    out = largest_component(mask)
    np.testing.assert_array_equal(out, np.pad(np.ones((4, 3), bool), ((5, 1), (5, 2))))
    assert not largest_component(np.zeros((4, 4), bool)).any()


def test_mask_box_is_exclusive_xyxy():
    mask = np.zeros((10, 12), bool)
    mask[2:5, 3:9] = True
    assert mask_box(mask).tolist() == [3.0, 2.0, 9.0, 5.0]


def test_snap_replaces_with_best_proposal_above_thresh_and_drops_others():
    boxes = torch.tensor([[0.0, 0, 10, 10], [50, 50, 60, 60], [100, 100, 110, 110]])
    proposals = torch.tensor(
        [
            [1.0, 1, 11, 11],  # IoU 0.68 with box 0
            [0.0, 0, 10, 12],  # IoU 0.83 with box 0: the best
            [50.0, 50, 60, 53.1],  # IoU 0.31 with box 1: kept
            [100.0, 100, 110, 102.9],  # IoU 0.29 with box 2: dropped
        ]
    )
    scores = torch.tensor([0.9, 0.4, 0.7, 0.8])
    keep, snapped, snapped_scores = snap_to_proposals(boxes, proposals, scores)
    assert keep.tolist() == [True, True, False]
    torch.testing.assert_close(snapped, proposals[[1, 2]])
    torch.testing.assert_close(snapped_scores, torch.tensor([0.4, 0.7]))


def test_snap_threshold_is_configurable_and_empty_inputs_are_normal():
    boxes = torch.tensor([[0.0, 0, 10, 10]])
    proposals = torch.tensor([[0.0, 0, 10, 5]])  # IoU 0.5
    assert snap_to_proposals(boxes, proposals, torch.ones(1), iou_thresh=0.6)[0].tolist() == [False]
    keep, snapped, scores = snap_to_proposals(boxes, torch.zeros((0, 4)), torch.zeros(0))
    assert keep.tolist() == [False] and snapped.shape == (0, 4) and scores.shape == (0,)
    keep, snapped, scores = snap_to_proposals(torch.zeros((0, 4)), proposals, torch.ones(1))
    assert keep.shape == (0,) and snapped.shape == (0, 4)


def test_rename_part_direct_synonym_and_unnameable():
    vocab = parse_vocabulary("dog:head,body,foot;aeroplane:body,wing")
    assert rename_part("cat:head", "dog", vocab) == "dog:head"
    assert rename_part("cat:torso", "dog", vocab) == "dog:body"  # body <-> torso
    assert rename_part("cat:paw", "dog", vocab) == "dog:foot"  # paw <-> foot
    assert rename_part("cat:tail", "dog", vocab) is None  # the novel vocabulary cannot name it
    assert rename_part("cat:head", "aeroplane", vocab) is None
    assert rename_part("bird:Torso", "aeroplane", vocab) == "aeroplane:body"


def test_rename_part_prefers_the_own_name_over_a_synonym():
    vocab = parse_vocabulary("dog:body,torso")
    assert rename_part("cat:torso", "dog", vocab) == "dog:torso"
    with pytest.raises(ValueError, match="object:part"):
        rename_part("torso", "dog", vocab)


def test_pixel_sources_identity_reproduces_every_pixel():
    for stride, patch, size in ((8, 8, 32), (4, 8, 32)):
        grid = (size - patch) // stride + 1
        identity = torch.arange(grid * grid).view(grid, grid)
        src = pixel_sources(identity, size, stride=stride, patch_size=patch)
        assert torch.equal(src, torch.arange(size * size).view(size, size))


def test_pixel_sources_follow_a_shifted_match():
    size, stride, grid = 32, 8, 4
    rows, cols = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    shifted = rows * grid + (cols + 1).clamp(max=grid - 1)  # each cell matched one cell right
    src = pixel_sources(shifted, size, stride=stride, patch_size=stride)
    y, x = 5, 10  # cell (0, 1) -> (0, 2): x moves by one stride
    assert divmod(int(src[y, x]), size) == (5, 18)
    y, x = 20, 29  # last column maps onto itself
    assert divmod(int(src[y, x]), size) == (20, 29)


def test_match_patches_respects_foreground_and_chunking():
    torch.manual_seed(0)
    base = torch.randn(4, 4, 6)
    fg = torch.zeros(4, 4, dtype=torch.bool)
    fg[1:3, 1:3] = True
    novel = base.clone()
    index, sim = match_patches(novel, base, fg, chunk_size=3)
    for i in range(4):
        for j in range(4):
            k = int(index[i, j])
            assert fg.flatten()[k]
            if fg[i, j]:
                assert k == i * 4 + j
                assert sim[i, j] == pytest.approx(1.0, abs=1e-5)
    full_index, full_sim = match_patches(novel, base, fg, chunk_size=100)
    assert torch.equal(index, full_index) and torch.equal(sim, full_sim)
    with pytest.raises(ValueError, match="no foreground"):
        match_patches(novel, base, torch.zeros_like(fg))


def test_foreground_cells_counts_any_touching_pixel():
    mask = torch.zeros(16, 16, dtype=torch.bool)
    mask[7, 7] = True  # only cell (0, 0) at stride 8
    assert foreground_cells(mask, stride=8, patch_size=8).tolist() == [
        [True, False],
        [False, False],
    ]
    cells = foreground_cells(mask, stride=4, patch_size=8)  # overlapping patches: 3x3 grid
    # patches starting at rows/cols 0 and 4 contain (7, 7)
    assert cells.tolist() == [[True, True, False], [True, True, False], [False, False, False]]


def test_transfer_masks_identity_and_novel_foreground_cut():
    torch.manual_seed(0)
    dense = torch.randn(4, 4, 5)
    masks = torch.zeros(2, 32, 32, dtype=torch.bool)
    masks[0, :16] = True
    masks[1, 16:, 3:30] = True
    fg_cells = torch.ones(4, 4, dtype=torch.bool)
    out = transfer_masks(dense, dense, fg_cells, masks, stride=8, patch_size=8)
    assert torch.equal(out, masks)
    novel_fg = torch.zeros(32, 32, dtype=torch.bool)
    novel_fg[:, :10] = True
    cut = transfer_masks(
        dense, dense, fg_cells, masks, stride=8, patch_size=8, novel_foreground=novel_fg
    )
    assert torch.equal(cut, masks & novel_fg)
