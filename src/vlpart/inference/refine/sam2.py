"""SAM 2.1 (Ravi et al., 2024) as a refinement backend, through the ``sam2`` package: the four
released Hiera variants, strict loading of their checkpoints, and :class:`Sam2Refiner`."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vlpart.core.errors import InputError, MissingDependencyError
from vlpart.inference.refine.base import (
    MASK_PROMPT_LOGIT,
    PROMPT_BATCH,
    BoxRefiner,
    discard_bad_download,
    load_state,
    select_by_iou,
    weights_file,
)

__all__ = [
    "DEFAULT_SAM2_VARIANT",
    "SAM2_VARIANTS",
    "Sam2Refiner",
    "Sam2Variant",
    "build_sam2",
    "load_sam2",
]


class _DropSam2Info(logging.Filter):
    """``SAM2ImagePredictor.set_image`` logs three INFO lines per image on the root logger
    (which ``vlpart``'s CLI prints); this drops INFO records of the sam2 package."""

    def __init__(self) -> None:
        super().__init__()
        import sam2

        self._package = str(Path(sam2.__file__).parent)

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.INFO or not record.pathname.startswith(self._package)


@dataclass(frozen=True)
class Sam2Variant:
    """A SAM 2.1 model: its config in the ``sam2`` package, the Hiera trunk's width and block
    count (to recognise local files) and its weights' URL."""

    config: str
    trunk_dim: int
    num_blocks: int
    url: str | None = None


_SAM2_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/092824/"
# The four released SAM 2.1 image+video models (Ravi et al., 2024).
SAM2_VARIANTS: dict[str, Sam2Variant] = {
    name: Sam2Variant(
        f"configs/sam2.1/sam2.1_hiera_{short}.yaml",
        dim,
        blocks,
        url=f"{_SAM2_URL}sam2.1_hiera_{name}.pt",
    )
    for name, short, dim, blocks in (
        ("tiny", "t", 96, 12),
        ("small", "s", 96, 16),
        ("base_plus", "b+", 112, 24),
        ("large", "l", 144, 48),
    )
}
DEFAULT_SAM2_VARIANT = "tiny"


def build_sam2(variant: Sam2Variant, *, video: bool = False) -> nn.Module:
    """A randomly initialised SAM 2 (``sam2.modeling.sam2_base.SAM2Base``; with ``video`` its
    subclass ``SAM2VideoPredictor``, same weights), in eval mode."""
    try:
        from sam2.build_sam import build_sam2 as build
        from sam2.build_sam import build_sam2_video_predictor
    except ImportError:
        raise MissingDependencyError(
            "SAM 2 needs the sam2 package: pip install 'vlpart[sam]'"
        ) from None
    if video:
        return build_sam2_video_predictor(variant.config, None, device="cpu").eval()
    return build(variant.config, None, device="cpu").eval()


def load_sam2(weights: str | Path = DEFAULT_SAM2_VARIANT, *, video: bool = False) -> nn.Module:
    """A SAM 2.1 model with its weights (a name of :data:`SAM2_VARIANTS` or a local ``.pt`` of
    the official format, ``{"model": state}``), on the CPU, in eval mode (``video``: as
    ``SAM2VideoPredictor``); raises as :func:`load_sam`."""

    path = weights_file(weights, {k: v.url for k, v in SAM2_VARIANTS.items()}, "SAM 2")
    with discard_bad_download(weights, path):
        return _sam2_from_state(load_state(path, "SAM 2").get("model"), path, video=video)


def _sam2_from_state(state: Any, path: Path, *, video: bool = False) -> nn.Module:
    from vlpart.model.checkpoint import load_state_dict_strict

    if not isinstance(state, dict) or "image_encoder.trunk.patch_embed.proj.weight" not in state:
        raise InputError(f"{path}: not a SAM 2 checkpoint (no model.image_encoder.trunk)")
    dim = state["image_encoder.trunk.patch_embed.proj.weight"].shape[0]
    blocks = len({k.split(".")[3] for k in state if k.startswith("image_encoder.trunk.blocks.")})
    match = [v for v in SAM2_VARIANTS.values() if (v.trunk_dim, v.num_blocks) == (dim, blocks)]
    if not match:
        raise InputError(
            f"{path}: a SAM 2 trunk of width {dim} with {blocks} blocks is none of "
            f"{', '.join(SAM2_VARIANTS)}"
        )
    model = build_sam2(match[0], video=video)
    load_state_dict_strict(model, state, source=str(path))
    return model


class Sam2Refiner(BoxRefiner):
    """Re-segment detections with SAM 2.1 box prompts; arguments as :class:`SamRefiner`, with
    ``model`` a ``sam2`` ``SAM2Base``.

    Each call wraps the model in a fresh ``SAM2ImagePredictor`` (it keeps the image's features),
    so the refiner itself holds no per-image state. SAM 2 resizes images to a square, so the
    dense prompt is the detector's mask resized to 256×256 without padding.
    """

    @classmethod
    def from_pretrained(cls, weights: str | Path = DEFAULT_SAM2_VARIANT, **options) -> Sam2Refiner:
        """A refiner with SAM 2.1 weights by variant name or local file (see
        :func:`load_sam2`); ``options`` are the constructor's keyword arguments."""
        return cls(load_sam2(weights), **options)

    @torch.inference_mode()
    def _segment(
        self, image: np.ndarray, boxes: np.ndarray, masks: np.ndarray | None
    ) -> np.ndarray:
        size = tuple(image.shape[:2])
        from sam2.sam2_image_predictor import SAM2ImagePredictor

        predictor = SAM2ImagePredictor(self.model)
        quiet = _DropSam2Info()
        logging.getLogger().addFilter(quiet)
        try:
            predictor.set_image(image)  # the one image embedding
        finally:
            logging.getLogger().removeFilter(quiet)
        all_boxes = predictor._transforms.transform_boxes(
            torch.as_tensor(boxes, dtype=torch.float32, device=self.device),
            normalize=True,
            orig_hw=size,
        )
        out = np.zeros((len(boxes), *size), dtype=bool)
        side = self.model.sam_prompt_encoder.mask_input_size
        features = predictor._features
        high_res = [level[-1:] for level in features["high_res_feats"]]
        dense_pe = self.model.sam_prompt_encoder.get_dense_pe()
        for start in range(0, len(boxes), PROMPT_BATCH):
            stop = start + PROMPT_BATCH
            mask_input = None
            if masks is not None:
                x = torch.as_tensor(masks[start:stop], device=self.device)[:, None].float()
                mask_input = (2 * F.interpolate(x, side, mode="area") - 1) * MASK_PROMPT_LOGIT
            # A box is SAM 2's two corner points with labels 2 and 3 (what its predictor does).
            corners = all_boxes[start:stop].reshape(-1, 2, 2)
            labels = corners.new_tensor([[2, 3]], dtype=torch.int).repeat(len(corners), 1)
            sparse, dense = self.model.sam_prompt_encoder(
                points=(corners, labels), boxes=None, masks=mask_input
            )
            logits, iou, _, _ = self.model.sam_mask_decoder(
                image_embeddings=features["image_embed"][-1:],
                image_pe=dense_pe,
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=True,
                repeat_image=len(corners) > 1,
                high_res_features=high_res,
            )
            # Only the chosen candidate is upsampled to the image (a third of the work of
            # the predictor's ``_predict``, which upsamples all three; same values).
            best = predictor._transforms.postprocess_masks(select_by_iou(logits, iou), size)
            out[start:stop] = (best[:, 0] > predictor.mask_threshold).cpu().numpy()
        return out

    def __repr__(self) -> str:
        trunk = self.model.image_encoder.trunk
        return (
            f"Sam2Refiner(trunk_dim={trunk.patch_embed.proj.out_channels}, "
            f"blocks={len(trunk.blocks)}, {self._options()})"
        )
