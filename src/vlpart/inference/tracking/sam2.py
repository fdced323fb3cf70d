"""SAM 2's video predictor (Ravi et al., 2024) as the :class:`MaskPropagator` of ``vlpart track
--tracker sam2``: the masks of a segmented frame are the prompts, and SAM 2's memory carries
them to the frames up to the next segmented one, so ``every=N`` still gives a mask per frame."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vlpart.inference.refine.sam2 import DEFAULT_SAM2_VARIANT, load_sam2

__all__ = ["Sam2Propagator"]

logger = logging.getLogger(__name__)
# SAM 2's video predictor reads a folder of JPEG frames named by their index.
_JPEG_QUALITY = 95


class Sam2Propagator:
    """Propagates masks with a ``sam2`` ``SAM2VideoPredictor``; each call starts a fresh
    inference state (one chunk: a segmented frame and those after it), so nothing is kept
    between calls.

    Args:
        predictor: a ``sam2.sam2_video_predictor.SAM2VideoPredictor``.
    """

    def __init__(self, predictor: torch.nn.Module) -> None:
        self.predictor = predictor

    @classmethod
    def from_pretrained(
        cls, weights: str | Path = DEFAULT_SAM2_VARIANT, *, device: str = "cpu"
    ) -> Sam2Propagator:
        """SAM 2.1 by variant name or local ``.pt`` (see
        :func:`vlpart.inference.refine.sam2.load_sam2`), as a video predictor on ``device``."""
        return cls(load_sam2(weights, video=True).to(device))

    @torch.inference_mode()
    def propagate(self, frames: Sequence[np.ndarray], masks: np.ndarray) -> np.ndarray:
        """Args:
            frames: ``np.ndarray[H, W, 3]`` uint8 RGB, the segmented frame first.
            masks (np.ndarray[N, H, W], bool): its instances' masks.

        Returns:
            np.ndarray[len(frames) - 1, N, H, W], bool: SAM 2's masks on the later frames.
        """
        height, width = frames[0].shape[:2]
        out = np.zeros((len(frames) - 1, len(masks), height, width), bool)
        if len(masks) == 0 or len(frames) < 2:
            return out
        with tempfile.TemporaryDirectory(prefix="vlpart-sam2-") as tmp:
            for k, array in enumerate(frames):
                Image.fromarray(array).save(Path(tmp) / f"{k:05d}.jpg", quality=_JPEG_QUALITY)
            state = self.predictor.init_state(tmp)
        for k, mask in enumerate(masks):
            self.predictor.add_new_mask(state, frame_idx=0, obj_id=k, mask=torch.as_tensor(mask))
        for index, obj_ids, logits in self.predictor.propagate_in_video(state):
            if index == 0:
                continue
            out[index - 1, list(obj_ids)] = (logits[:, 0] > 0).cpu().numpy()
        return out
