"""What every refinement backend shares: the protocol, mask cleaning, the best-IoU choice, the
box-prompt pipeline (:class:`BoxRefiner`) and weight-file handling."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor, nn

from vlpart.core.distributed import parse_device
from vlpart.core.errors import InputError, MissingFileError
from vlpart.core.weights import load_torch_file
from vlpart.inference.prediction import Prediction

__all__ = [
    "MASK_PROMPT_LOGIT",
    "MIN_REGION_AREA",
    "PROMPT_BATCH",
    "SAM_CACHE_SUBDIR",
    "BoxRefiner",
    "Refiner",
    "clean_mask",
    "select_by_iou",
]

# Connected regions (8-connected) of a refined mask, or holes in it, smaller than this many pixels
# of the original image are removed / filled. SAM's own examples clean automatic masks at 100 px.
MIN_REGION_AREA = 100
# Box prompts decoded per mask-decoder call: the decoder copies the image embedding once per
# prompt (256×64×64 floats, 4 MB), so the chunk bounds memory; the embedding is computed once.
PROMPT_BATCH = 32
# A binary detector mask becomes a dense prompt of ±this logit (SAM's mask input is the logit
# map of an earlier prediction; ±10 is a confident mask, sigmoid(10) ≈ 1 - 5e-5).
MASK_PROMPT_LOGIT = 10.0
SAM_CACHE_SUBDIR = "sam"
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


class Refiner(Protocol):
    """Anything that turns one image's prediction into one with better masks."""

    def refine(self, image: np.ndarray, prediction: Prediction) -> Prediction:
        """``image``: ``np.ndarray[H, W, 3]`` uint8 RGB; ``prediction``: its detections."""
        ...


def clean_mask(mask: np.ndarray, min_area: int) -> np.ndarray:
    """Fill holes and drop specks smaller than ``min_area`` pixels (8-connected).

    A hole is a background region enclosed by the mask (not reaching the border of the mask's
    bounding box). When every region of the mask is smaller than ``min_area``, the largest is
    kept, so a small part is never erased.

    Args:
        mask (np.ndarray[H, W], bool): one instance mask.
        min_area: area threshold in pixels; 0 returns the mask unchanged.

    Returns:
        np.ndarray[H, W], bool: a new mask.
    """
    if min_area <= 0 or not mask.any():
        return mask.copy()
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    crop = np.pad(mask[y0:y1, x0:x1], 1)  # the pad ring joins all outside background
    regions, num = ndimage.label(crop, structure=_EIGHT_CONNECTED)
    sizes = np.bincount(regions.ravel(), minlength=num + 1)[1:]
    keep = sizes >= min_area
    if not keep.any():
        keep[np.argmax(sizes)] = True
    cleaned = keep[regions - 1] & (regions > 0)
    holes, num_holes = ndimage.label(~cleaned, structure=_EIGHT_CONNECTED)
    hole_sizes = np.bincount(holes.ravel(), minlength=num_holes + 1)
    fill = hole_sizes < min_area
    fill[0] = False  # label 0 is the mask itself
    fill[holes[0, 0]] = False  # the outside, reached through the pad ring
    cleaned |= fill[holes]
    out = np.zeros_like(mask)
    out[y0:y1, x0:x1] = cleaned[1:-1, 1:-1]
    return out


def select_by_iou(mask_logits: Tensor, iou_predictions: Tensor) -> Tensor:
    """The candidate mask with the highest predicted IoU, per prompt.

    Args:
        mask_logits (Tensor[N, K, h, w]): SAM's K candidate masks per prompt.
        iou_predictions (Tensor[N, K]): their predicted IoUs.

    Returns:
        Tensor[N, 1, h, w]: the chosen logits.
    """
    best = iou_predictions.argmax(dim=1)
    return mask_logits[torch.arange(len(best), device=best.device), best][:, None]


class BoxRefiner:
    """The steps every backend shares: box prompts → best masks (``_segment``) → cleaning,
    fallback to the detector's mask, parent cut (see the module docstring).

    Args:
        model: the backend's model (moved to ``device``, eval mode).
        mask_prompt: also prompt with the detector's mask (a dense prompt), which keeps the
            refined mask closer to the detector's; default box prompts only.
        clip_to_parent: cut each part's mask to its parent object's refined mask (default); set
            False to let parts leak outside their objects.
        min_region_area: holes and specks below this many pixels are cleaned (0: off).
        device: where the model runs.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        mask_prompt: bool = False,
        clip_to_parent: bool = True,
        min_region_area: int = MIN_REGION_AREA,
        device: str | torch.device = "cpu",
    ) -> None:
        if min_region_area < 0:
            raise InputError(f"min_region_area must be >= 0, got {min_region_area}")
        self.device = parse_device(device)
        self.mask_prompt = mask_prompt
        self.clip_to_parent = clip_to_parent
        self.min_region_area = min_region_area
        self.model = model.eval().to(self.device)

    def _segment(
        self, image: np.ndarray, boxes: np.ndarray, masks: np.ndarray | None
    ) -> np.ndarray:
        """``np.ndarray[N, H, W]`` bool: the backend's best mask per box (XYXY, original px),
        prompted also with the detector's ``masks`` when given."""
        raise NotImplementedError

    def refine(self, image: np.ndarray, prediction: Prediction) -> Prediction:
        """``prediction`` with refined masks; everything else unchanged.

        Args:
            image (np.ndarray[H, W, 3], uint8): the RGB image ``prediction`` was made on.
            prediction: its detections (masks of shape ``[N, H, W]``).

        Returns:
            A new :class:`~vlpart.inference.prediction.Prediction`.
        """
        if len(prediction) == 0:
            return prediction
        size = tuple(image.shape[:2])
        if prediction.image_size != size:
            raise InputError(f"image is {size}, prediction is for {prediction.image_size}")
        refined = self._segment(
            image, prediction.boxes, prediction.masks if self.mask_prompt else None
        )
        for i in range(len(refined)):
            refined[i] = clean_mask(refined[i], self.min_region_area)
            if not refined[i].any():
                refined[i] = prediction.masks[i]
        if self.clip_to_parent:
            for i, parent in enumerate(prediction.parent):
                if parent >= 0:
                    refined[i] &= refined[parent]
        return dataclasses.replace(prediction, masks=refined)

    def _options(self) -> str:
        return (
            f"mask_prompt={self.mask_prompt}, clip_to_parent={self.clip_to_parent}, "
            f"min_region_area={self.min_region_area}, device={str(self.device)!r}"
        )


def weights_file(weights: str | Path, urls: dict[str, str | None], what: str) -> Path:
    """A variant name (fetched into ``$VLPART_CACHE/sam``) or an existing local file (the rule:
    :func:`vlpart.core.weights.is_name`)."""
    from vlpart.core.weights import fetch, is_name

    if is_name(weights):
        if weights not in urls:
            raise InputError(
                f"unknown {what} variant {weights!r}; choose {', '.join(urls)} or a file"
            )
        url = urls[weights]
        if url is None:
            raise InputError(f"{what} variant {weights!r} has no download URL; pass a local file")
        return fetch(url, subdir=SAM_CACHE_SUBDIR)
    path = Path(weights)
    if not path.is_file():
        raise MissingFileError(f"{path}: {what} weights file not found")
    return path


@contextlib.contextmanager
def discard_bad_download(weights: str | Path, path: Path) -> Iterator[None]:
    """Reading ``path`` inside: when ``weights`` is a variant name (``path`` was downloaded)
    and the file proves unreadable or foreign (:class:`InputError`), it is deleted from the
    cache, so that the next run fetches it anew instead of failing the same way."""
    from vlpart.core.weights import is_name

    try:
        yield
    except InputError as err:
        if not is_name(weights):
            raise
        path.unlink(missing_ok=True)
        raise InputError(f"{err}; removed the download, run again to fetch it anew") from None


def load_state(path: Path, what: str) -> dict[str, Tensor]:
    state = load_torch_file(path, what=f"{what} checkpoint")
    if not isinstance(state, dict):
        raise InputError(f"{path}: not a {what} checkpoint (a {type(state).__name__})")
    return state
