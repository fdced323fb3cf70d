"""Sharper masks: refine detected objects and parts with Segment Anything (SAM).

Mask R-CNN predicts each mask on a 28×28 grid inside its box, so thin parts (legs, tails,
handles) come out blobby. :class:`SamRefiner` re-segments every kept detection with SAM, using
the detection's box as the prompt:

1. the SAM image embedding is computed **once per image**;
2. all boxes of the image are decoded together (in chunks of :data:`PROMPT_BATCH` prompts), each
   optionally with the detector's mask as a dense prompt (``mask_prompt=True``);
3. of SAM's three candidate masks per box, the one with the highest predicted IoU is kept;
4. holes and specks smaller than ``min_region_area`` pixels are cleaned (:func:`clean_mask`);
   a mask that comes out empty keeps the detector's mask;
5. a part's mask is cut to its parent object's refined mask (``clip_to_parent=True``), so the
   object → part hierarchy stays consistent.

Labels, scores, parent links and **boxes** are the detector's: the box is what the detector
scored and suppressed duplicates with, so box results do not change with refinement (a refined
mask may extend slightly past its box).

Two backends: :class:`SamRefiner` (SAM, ``segment-anything``) and :class:`Sam2Refiner` (SAM 2.1,
``sam2``); the ``sam`` extra installs both, and each is imported only when its refiner is built.
Weights come by variant name (SAM: ``vit_b``, ``vit_l``, ``vit_h``; SAM 2.1: ``tiny``, ``small``,
``base_plus``, ``large``) through :func:`vlpart.core.weights.fetch` (cache, mirror, download) or
from a local file; they are loaded with :func:`vlpart.core.weights.load_torch_file`
(``weights_only=True``) and strictly.

Modules: :mod:`~vlpart.inference.refine.base` (the shared pipeline, cleaning, weight files),
:mod:`~vlpart.inference.refine.sam`, :mod:`~vlpart.inference.refine.sam2` (one backend each).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vlpart.core.errors import InputError
from vlpart.inference.refine.base import (
    MASK_PROMPT_LOGIT,
    MIN_REGION_AREA,
    PROMPT_BATCH,
    Refiner,
    clean_mask,
    select_by_iou,
)
from vlpart.inference.refine.sam import (
    DEFAULT_SAM_VARIANT,
    SAM_VARIANTS,
    SamRefiner,
    SamVariant,
    build_sam,
    load_sam,
)
from vlpart.inference.refine.sam2 import (
    DEFAULT_SAM2_VARIANT,
    SAM2_VARIANTS,
    Sam2Refiner,
    Sam2Variant,
    build_sam2,
    load_sam2,
)

__all__ = [
    "DEFAULT_SAM2_VARIANT",
    "DEFAULT_SAM_VARIANT",
    "MASK_PROMPT_LOGIT",
    "MIN_REGION_AREA",
    "PROMPT_BATCH",
    "SAM2_VARIANTS",
    "SAM_VARIANTS",
    "Refiner",
    "RefinerSpec",
    "Sam2Refiner",
    "Sam2Variant",
    "SamRefiner",
    "SamVariant",
    "build_refiner",
    "build_sam",
    "build_sam2",
    "clean_mask",
    "load_sam",
    "load_sam2",
    "select_by_iou",
]


def build_refiner(
    spec: str, *, device: str | torch.device = "cpu", **options
) -> SamRefiner | Sam2Refiner:
    """A refiner from a spec: ``sam`` (= ``sam:vit_b``), ``sam:vit_l``, ``sam:vit_h``,
    ``sam:FILE.pth``; ``sam2`` (= ``sam2:tiny``), ``sam2:small``, ``sam2:base_plus``,
    ``sam2:large``, ``sam2:FILE.pt``.

    ``options`` are the refiner's keyword arguments.

    Raises:
        ValueError: an unknown refiner or variant; see :func:`load_sam` for the weights.
    """
    kind, _, weights = spec.partition(":")
    if kind == "sam":
        return SamRefiner.from_pretrained(weights or DEFAULT_SAM_VARIANT, device=device, **options)
    if kind == "sam2":
        return Sam2Refiner.from_pretrained(
            weights or DEFAULT_SAM2_VARIANT, device=device, **options
        )
    raise InputError(
        f"unknown refiner {spec!r}; use sam[:vit_b|vit_l|vit_h|FILE] or sam2[:tiny|...]"
    )


@dataclass(frozen=True)
class RefinerSpec:
    """How to build a refiner: the :func:`build_refiner` spec and the refiner's options.

    Attributes:
        name: ``sam``, ``sam:vit_l``, ``sam2:small``, ``sam:FILE.pth``, ... (see
            :func:`build_refiner`).
        mask_prompt: also prompt SAM with the detector's mask.
        clip_to_parent: cut each part's mask to its parent object's refined mask.
        min_region_area: fill holes and drop specks under this many pixels (0: off).
    """

    name: str
    mask_prompt: bool = False
    clip_to_parent: bool = True
    min_region_area: int = MIN_REGION_AREA

    def build(self, device: str | torch.device = "cpu") -> SamRefiner | Sam2Refiner:
        return build_refiner(
            self.name,
            device=device,
            mask_prompt=self.mask_prompt,
            clip_to_parent=self.clip_to_parent,
            min_region_area=self.min_region_area,
        )
