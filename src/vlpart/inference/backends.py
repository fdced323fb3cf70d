"""The one contract between :class:`~vlpart.inference.segmenter.PartSegmenter` and what runs
the detector: PyTorch (:class:`TorchBackend`, here) or onnxruntime
(:class:`~vlpart.inference.onnx_backend.OnnxBackend`).

What goes in and what comes out, the same for every backend:

* in: ``images`` — ``Tensor[3, H_i, W_i]`` uint8 RGB, each the decoded image (possibly a
  reduced decode of a bigger original); ``text_embeddings`` — ``Tensor[C, D]`` float, one row
  per vocabulary category; ``score_threshold`` — keep detections scoring at least this (the one
  place the user's threshold is applied); ``output_sizes`` — ``(H, W)`` of each original;
* out, per image, by descending score: ``boxes`` (``Tensor[N, 4]`` float32, XYXY in the
  original's pixels), ``scores`` (``Tensor[N]`` float32), ``labels`` (``Tensor[N]`` int64, rows
  of the vocabulary) and ``masks`` (``Tensor[N, H, W]`` bool, the original's size).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Protocol

import torch
from torch import Tensor

from vlpart.core.distributed import parse_device
from vlpart.core.errors import InputError
from vlpart.model import VLPartDetector
from vlpart.model.ops import paste_masks_binary
from vlpart.model.optimize import inference_copy
from vlpart.model.transform import DetectorTransform

__all__ = ["MASK_THRESH", "PRECISIONS", "Backend", "TorchBackend"]

# Mask probabilities become binary masks at MASK_THRESH (detectron2's paste threshold).
MASK_THRESH = 0.5
# "fp32": the exact path (vlpart.model.optimize.inference_copy; the model's detections to float
# rounding); "bf16": bfloat16 autocast (CPU with AVX-512 BF16 / AMX, CUDA), faster at a
# small accuracy cost (README, "Inference speed and memory"); "int8": post-training static
# quantization run by onnxruntime on the CPU (vlpart.inference.int8_backend, docs/int8.md).
PRECISIONS = ("fp32", "bf16", "int8")
# What TorchBackend runs; int8 is Int8Backend's.
TORCH_PRECISIONS = ("fp32", "bf16")


class Backend(Protocol):
    """What runs a detector for a :class:`~vlpart.inference.segmenter.PartSegmenter`.

    Attributes:
        transform: the model's resize / normalise settings (``min_size`` decides how small a
            reduced decode may be).
        text_dim: width ``D`` of the text embeddings the model takes.
        device: where inputs and text embeddings go.
    """

    transform: DetectorTransform
    text_dim: int
    device: torch.device

    def detect(
        self,
        images: Sequence[Tensor],
        text_embeddings: Tensor,
        *,
        score_threshold: float,
        output_sizes: Sequence[tuple[int, int]],
    ) -> list[dict[str, Tensor]]:
        """Detections of ``images`` (see the module docstring for the frames)."""
        ...


class TorchBackend:
    """A :class:`~vlpart.model.VLPartDetector` run by PyTorch.

    The model runs as a copy with frozen BatchNorm and ReLUs fused into the convolutions and a
    channels-last backbone, RPN and mask head (:func:`vlpart.model.optimize.inference_copy`),
    made on first use and again whenever the model's backbone weights change; ``model`` itself
    is only put in eval mode and moved to ``device``. Masks are computed only for detections
    above the threshold, then pasted at full size.

    Args:
        model: the detector.
        device: where it runs.
        precision: ``"fp32"`` or ``"bf16"`` (see :data:`PRECISIONS`; ``"int8"`` is
            :class:`~vlpart.inference.int8_backend.Int8Backend`).
    """

    def __init__(
        self, model: VLPartDetector, *, device: str | torch.device = "cpu", precision: str = "fp32"
    ) -> None:
        if precision not in TORCH_PRECISIONS:
            raise InputError(
                f"TorchBackend runs {' or '.join(TORCH_PRECISIONS)}, got {precision!r} "
                "(int8: vlpart.inference.int8_backend.Int8Backend)"
            )
        self.device = parse_device(device)
        self.precision = precision
        self.model = model.eval().to(self.device)
        self._fast: tuple[tuple[int, ...], VLPartDetector] | None = None
        self._lock = threading.Lock()

    @property
    def transform(self) -> DetectorTransform:
        return self.model.transform

    @property
    def text_dim(self) -> int:
        return self.model.text_dim

    def inference_model(self) -> VLPartDetector:
        """The optimised copy of ``self.model``, rebuilt when a backbone tensor changed (an
        optimizer step or ``load_state_dict`` bumps its version counter)."""
        tensors = (*self.model.backbone.parameters(), *self.model.backbone.buffers())
        key = (id(self.model), *(t._version for t in tensors))
        with self._lock:
            if self._fast is None or self._fast[0] != key:
                self._fast = (key, inference_copy(self.model))
            return self._fast[1]

    def detect(
        self,
        images: Sequence[Tensor],
        text_embeddings: Tensor,
        *,
        score_threshold: float,
        output_sizes: Sequence[tuple[int, int]],
    ) -> list[dict[str, Tensor]]:
        model = self.inference_model()
        with torch.autocast(self.device.type, torch.bfloat16, enabled=self.precision == "bf16"):
            batch, _ = model.transform(list(images))
            detections = model.detect(
                batch, text_embeddings=text_embeddings, score_threshold=score_threshold
            )
        outputs = model.transform.rescale(detections, batch.image_sizes, list(output_sizes))
        for out, size in zip(outputs, output_sizes, strict=True):
            out["boxes"], out["scores"] = out["boxes"].float(), out["scores"].float()
            out["masks"] = paste_masks_binary(out["masks"], out["boxes"], size, thresh=MASK_THRESH)
        return outputs
