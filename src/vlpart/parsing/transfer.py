"""Dense correspondence and label transfer: the geometric core of parsing (pure tensor functions).

A base image and a novel image are both resized to S×S and described on the same h×w cell grid
(:class:`~vlpart.parsing.features.Features`). Every novel cell is matched to its most similar
base foreground cell (cosine of dense features); every novel *pixel* then takes the base pixel at
the same offset inside the matched cell, so part masks are carried over at full S×S resolution
(an image matched with itself reproduces its masks exactly). The transferred masks are cut to the
novel foreground, reduced to their largest connected component, boxed, snapped to a detector
proposal and renamed to the novel object.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import Tensor
from torchvision.ops import box_iou, masks_to_boxes

from vlpart.core.errors import InputError
from vlpart.core.vocab import Vocabulary, split_category_name

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "PART_SYNONYMS",
    "SNAP_IOU_THRESH",
    "cells_to_pixels",
    "foreground_cells",
    "largest_component",
    "mask_box",
    "match_patches",
    "pixel_sources",
    "rename_part",
    "snap_to_proposals",
    "transfer_masks",
]

# Paper (Sec. 3.3): a parsed part box is replaced by the detector's best-overlapping proposal
# when their IoU exceeds 0.3, and dropped otherwise.
SNAP_IOU_THRESH = 0.3
# Novel cells matched per matrix product: bounds the similarity block to chunk × (h·w) floats.
DEFAULT_CHUNK_SIZE = 4096
# Groups of part names that may stand in for each other when the novel object's vocabulary lacks
# the base part's own name (``cat:torso`` -> ``aeroplane:body``).
PART_SYNONYMS: tuple[frozenset[str], ...] = (
    frozenset({"torso", "body"}),
    frozenset({"paw", "foot", "hand", "hoof"}),
    frozenset({"muzzle", "snout", "beak"}),
    frozenset({"headlight", "light"}),
    frozenset({"license plate", "plate"}),
)


def foreground_cells(object_mask: Tensor, *, stride: int, patch_size: int) -> Tensor:
    """Cells of the feature grid that touch the object.

    Args:
        object_mask (Tensor[S, S], bool): object pixels of the resized image.
        stride, patch_size: cell geometry.

    Returns:
        Tensor[h, w] bool: cells whose patch contains at least one object pixel.
    """
    pooled = F.max_pool2d(object_mask[None, None].float(), kernel_size=patch_size, stride=stride)
    return pooled[0, 0] > 0


def match_patches(
    novel_dense: Tensor,
    base_dense: Tensor,
    base_foreground: Tensor,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> tuple[Tensor, Tensor]:
    """For every novel cell, the most similar base foreground cell (cosine of dense features).

    Args:
        novel_dense (Tensor[h, w, D]): novel image features.
        base_dense (Tensor[h2, w2, D]): base image features.
        base_foreground (Tensor[h2, w2], bool): base cells allowed as matches (at least one).
        chunk_size: novel cells per matrix product (bounds memory).

    Returns:
        ``(index, similarity)``: Tensor[h, w] int64 flat index into the base grid, and
        Tensor[h, w] float32 cosine similarity of each match.
    """
    fg_index = base_foreground.flatten().nonzero()[:, 0]
    if fg_index.numel() == 0:
        raise InputError("the base image has no foreground cell to match against")
    base = F.normalize(base_dense.flatten(0, 1)[fg_index].float(), dim=-1)
    novel = F.normalize(novel_dense.flatten(0, 1).float(), dim=-1)
    best_sim, best_idx = [], []
    for start in range(0, novel.shape[0], chunk_size):
        sim, idx = (novel[start : start + chunk_size] @ base.T).max(dim=1)
        best_sim.append(sim)
        best_idx.append(fg_index[idx])
    shape = novel_dense.shape[:2]
    return torch.cat(best_idx).view(shape), torch.cat(best_sim).view(shape)


def _pixel_cells(coords: Tensor, num_cells: int, *, stride: int, patch_size: int) -> Tensor:
    """Index of the cell whose centre is nearest to each pixel coordinate (Tensor[S] int64)."""
    border = (patch_size - stride) // 2
    return (coords - border).div(stride, rounding_mode="floor").clamp(0, num_cells - 1)


def cells_to_pixels(values: Tensor, size: int, *, stride: int, patch_size: int) -> Tensor:
    """Spread per-cell values (Tensor[h, w]) to the pixels of an S×S image (Tensor[S, S])."""
    coords = torch.arange(size, device=values.device)
    cell_y = _pixel_cells(coords, values.shape[0], stride=stride, patch_size=patch_size)
    cell_x = _pixel_cells(coords, values.shape[1], stride=stride, patch_size=patch_size)
    return values[cell_y[:, None], cell_x[None, :]]


def pixel_sources(match: Tensor, size: int, *, stride: int, patch_size: int) -> Tensor:
    """Base pixel carried to each novel pixel by a cell correspondence.

    A pixel belongs to the cell whose centre is nearest; it takes the base pixel at the same
    offset from the matched cell, clamped to the image.

    Args:
        match (Tensor[h, w], int64): flat index of the base cell matched to each novel cell.
        size: side S of the (square) images.
        stride, patch_size: cell geometry.

    Returns:
        Tensor[S, S] int64: flat index ``y * S + x`` of the source base pixel.
    """
    grid_h, grid_w = match.shape
    coords = torch.arange(size, device=match.device)
    cell_y = _pixel_cells(coords, grid_h, stride=stride, patch_size=patch_size)
    cell_x = _pixel_cells(coords, grid_w, stride=stride, patch_size=patch_size)
    matched = match[cell_y[:, None], cell_x[None, :]]
    src_y = coords[:, None] + (matched // grid_w - cell_y[:, None]) * stride
    src_x = coords[None, :] + (matched % grid_w - cell_x[None, :]) * stride
    return src_y.clamp(0, size - 1) * size + src_x.clamp(0, size - 1)


def transfer_masks(
    novel_dense: Tensor,
    base_dense: Tensor,
    base_foreground: Tensor,
    base_masks: Tensor,
    *,
    stride: int,
    patch_size: int,
    novel_foreground: Tensor | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> Tensor:
    """Carry base part masks onto a novel image through the dense correspondence.

    Args:
        novel_dense (Tensor[h, w, D]), base_dense (Tensor[h, w, D]): features of both images.
        base_foreground (Tensor[h, w], bool): base cells that may be matched.
        base_masks (Tensor[P, S, S], bool): part masks of the base image.
        stride, patch_size: cell geometry.
        novel_foreground (Tensor[S, S], bool): novel object pixels; masks are cut to them.
        chunk_size: see :func:`match_patches`.

    Returns:
        Tensor[P, S, S] bool: the transferred masks.
    """
    size = base_masks.shape[-1]
    match, _ = match_patches(novel_dense, base_dense, base_foreground, chunk_size=chunk_size)
    source = pixel_sources(match, size, stride=stride, patch_size=patch_size)
    out = base_masks.flatten(1)[:, source.flatten()].view(base_masks.shape)
    if novel_foreground is not None:
        out = out & novel_foreground
    return out


_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of a boolean mask (``[H, W]``); empty stays empty.

    Ties go to the component that starts first in row-major order.
    """
    labels, num = ndimage.label(mask, structure=_EIGHT_CONNECTED)
    if num <= 1:
        return labels > 0
    sizes = np.bincount(labels.ravel(), minlength=num + 1)[1:]
    return labels == (int(np.argmax(sizes)) + 1)


def snap_to_proposals(
    boxes: Tensor,
    proposal_boxes: Tensor,
    proposal_scores: Tensor,
    *,
    iou_thresh: float = SNAP_IOU_THRESH,
) -> tuple[Tensor, Tensor, Tensor]:
    """Replace each box by its best-overlapping proposal, or drop it.

    Args:
        boxes (Tensor[K, 4]): XYXY part boxes in image pixels.
        proposal_boxes (Tensor[R, 4]): XYXY proposals in the same frame.
        proposal_scores (Tensor[R]): their scores.
        iou_thresh: a box is kept only if its best IoU is strictly above this.

    Returns:
        ``(keep, snapped_boxes, scores)``: Tensor[K] bool, Tensor[K', 4] the chosen proposals'
        boxes and Tensor[K'] their scores for the K' kept boxes, in input order.
    """
    if boxes.shape[0] == 0 or proposal_boxes.shape[0] == 0:
        keep = boxes.new_zeros(boxes.shape[0], dtype=torch.bool)
        return keep, boxes.new_zeros((0, 4)), proposal_scores.new_zeros(0)
    best_iou, best = box_iou(boxes.float(), proposal_boxes.float()).max(dim=1)
    keep = best_iou > iou_thresh
    return keep, proposal_boxes[best[keep]], proposal_scores[best[keep]]


def rename_part(category: str, novel_object: str, vocabulary: Vocabulary) -> str | None:
    """Name a base part on a novel object, or ``None`` when the vocabulary cannot name it.

    ``cat:torso`` on a ``dog`` becomes ``dog:torso`` when the vocabulary has it; otherwise a
    synonym of the part from :data:`PART_SYNONYMS` that the vocabulary has (``dog:body``).

    Args:
        category: base part category, ``object:part``.
        novel_object: the object being parsed.
        vocabulary: the target vocabulary.

    Returns:
        The vocabulary's spelling of the novel part category, or ``None``.
    """
    _, part = split_category_name(category)
    if not part:
        raise InputError(f"base part category {category!r} is not of the form 'object:part'")
    part = part.lower()
    candidates = [part]
    for group in PART_SYNONYMS:
        if part in group:
            candidates += sorted(group - {part})
    for name in candidates:
        full = f"{novel_object}:{name}"
        if full in vocabulary:
            return vocabulary[vocabulary.index(full)].name
    return None


def mask_box(mask: np.ndarray) -> Tensor:
    """XYXY box (Tensor[4], float32; exclusive max corner) of a non-empty ``[H, W]`` mask."""
    box = masks_to_boxes(torch.from_numpy(mask)[None])[0]
    return box + box.new_tensor([0.0, 0.0, 1.0, 1.0])
