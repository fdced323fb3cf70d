"""An exported detector (:func:`vlpart.export.onnx.export_onnx`) run by onnxruntime, behind the
backend contract of :mod:`vlpart.inference.backends`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torchvision.models.detection.image_list import ImageList

from vlpart.core.errors import InputError
from vlpart.export.onnx import OUTPUT_NAMES, load_export
from vlpart.inference.backends import MASK_THRESH

__all__ = ["OnnxBackend", "graph_images"]

# A fixed-vocabulary graph accepts the embeddings it was exported with, up to re-normalisation.
BAKED_ATOL = 1e-5


def graph_images(batch: ImageList) -> list[np.ndarray]:
    """The graph's ``image`` inputs of a transformed batch: one float32 ``[1, 3, h, w]`` array
    per image (resized, normalised, without the batch padding)."""
    return [
        np.ascontiguousarray(batch.tensors[i : i + 1, :, :h, :w].numpy())
        for i, (h, w) in enumerate(batch.image_sizes)
    ]


class OnnxBackend:
    """Runs an ``.onnx`` export; ``detect`` follows :class:`~vlpart.inference.backends.Backend`.

    The graph takes one resized, normalised image and returns boxes in resized pixels and
    28×28 box-frame mask probabilities; this class resizes, runs one image at a time, and maps
    boxes and masks to the original pixels. It needs images decoded at their full size.

    Args:
        path: the ``.onnx`` file written by :func:`~vlpart.export.onnx.export_onnx`.
        providers: onnxruntime execution providers (default ``["CPUExecutionProvider"]``).
        num_threads: intra-op threads (default ``torch.get_num_threads()``).

    Attributes:
        export: the file's checked metadata (:class:`~vlpart.export.onnx.OnnxExport`): text
            encoder, template, and for a fixed vocabulary its names, prompts and embeddings.
        session: the ``onnxruntime.InferenceSession``.
    """

    device = torch.device("cpu")

    def __init__(
        self,
        path: str | Path,
        *,
        providers: Sequence[str] | None = None,
        num_threads: int | None = None,
    ) -> None:
        import onnxruntime as ort

        self.export = load_export(path)
        self.path = self.export.path
        options = ort.SessionOptions()
        options.intra_op_num_threads = num_threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(
                self.export.proto.SerializeToString(),
                options,
                providers=list(providers or ["CPUExecutionProvider"]),
            )
        except Exception as err:  # onnxruntime's Fail, InvalidGraph, ... share no base class
            raise InputError(
                f"{self.path}: onnxruntime cannot load it ({_first_line(err)})"
            ) from None

    @property
    def transform(self):
        return self.export.transform

    @property
    def text_dim(self) -> int:
        return self.export.text_dim

    @property
    def baked_embeddings(self) -> Tensor | None:
        return self.export.baked_embeddings

    def detect(
        self,
        images: Sequence[Tensor],
        text_embeddings: Tensor,
        *,
        score_threshold: float,
        output_sizes: Sequence[tuple[int, int]],
    ) -> list[dict[str, Tensor]]:
        if any(
            tuple(im.shape[-2:]) != tuple(s) for im, s in zip(images, output_sizes, strict=True)
        ):
            raise InputError(f"{self.path}: an ONNX model needs images decoded at their full size")
        feeds = self._vocabulary_feed(text_embeddings)
        batch, _ = self.transform(list(images))
        detections = []
        for image in graph_images(batch):
            try:
                outs = self.session.run(list(OUTPUT_NAMES), {"image": image, **feeds})
            except Exception as err:  # onnxruntime's errors share no base class
                raise InputError(
                    f"{self.path}: onnxruntime failed to run it ({_first_line(err)}); is it a "
                    "vlpart export?"
                ) from None
            det = {
                name: torch.from_numpy(out) for name, out in zip(OUTPUT_NAMES, outs, strict=True)
            }
            self._check_outputs(det)
            keep = det["scores"] >= score_threshold
            det = {key: value[keep] for key, value in det.items()}
            det["masks"] = det["masks"][:, None]
            detections.append(det)
        outputs = self.transform.postprocess(detections, batch.image_sizes, list(output_sizes))
        for out in outputs:
            out["masks"] = out["masks"][:, 0] >= MASK_THRESH
        return outputs

    def _check_outputs(self, det: dict[str, Tensor]) -> None:
        """boxes [N, 4], scores [N], labels [N], masks [N, M, M]: what an export returns."""
        n = det["scores"].shape[0] if det["scores"].dim() == 1 else -1
        shapes = {name: list(value.shape) for name, value in det.items()}
        if not (
            n >= 0
            and shapes["boxes"] == [n, 4]
            and shapes["labels"] == [n]
            and det["masks"].dim() == 3
            and shapes["masks"][0] == n
        ):
            raise InputError(
                f"{self.path}: the graph returned {shapes}, not the boxes [N, 4], scores [N], "
                "labels [N] and masks [N, M, M] of a vlpart export"
            )

    def _vocabulary_feed(self, text_embeddings: Tensor) -> dict[str, np.ndarray]:
        baked = self.baked_embeddings
        if baked is None:
            return {"text_embeddings": text_embeddings.detach().float().cpu().numpy()}
        if not (
            text_embeddings.shape == baked.shape
            and torch.allclose(text_embeddings.float().cpu(), baked, atol=BAKED_ATOL)
        ):
            raise InputError(
                f"{self.path}: exported for the fixed vocabulary "
                f"{', '.join(self.export.vocabulary or [])}; export with --dynamic-vocab to "
                "choose the vocabulary at run time"
            )
        return {}


def _first_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0][:200]
