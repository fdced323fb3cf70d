"""``precision="int8"``: a PyTorch detector exported to ONNX, quantized to int8 by onnxruntime's
post-training static quantization (:func:`vlpart.export.quantize.quantize_export`) calibrated
on images, and run by :class:`~vlpart.inference.onnx_backend.OnnxBackend`, behind the contract
of :mod:`vlpart.inference.backends`.

The graph is built on first use (export, calibration, quantization: tens of seconds for a
ResNet-50), with a dynamic vocabulary, so one int8 model serves every vocabulary. Calibration
runs the float graph on the calibration images with the vocabulary of that first call; without
calibration images it uses the images of that first call. To pay the cost once, write the int8
file with ``vlpart export --precision int8`` and run it as an ``.onnx`` model.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from vlpart.export.onnx import capture_graph, set_metadata
from vlpart.export.quantize import quantize_export
from vlpart.inference.onnx_backend import OnnxBackend, graph_images
from vlpart.model import VLPartDetector
from vlpart.model.transform import DetectorTransform

__all__ = ["DEFAULT_CALIBRATION_IMAGES", "Int8Backend", "write_int8"]

logger = logging.getLogger(__name__)

# How many of its inputs `vlpart predict --precision int8` calibrates on without --calibration.
DEFAULT_CALIBRATION_IMAGES = 8


def write_int8(
    model: VLPartDetector,
    path: str | Path,
    calibration: Sequence[Tensor],
    text_embeddings: Tensor,
    *,
    text_encoder: str = "",
    template: str = "",
) -> Path:
    """Export ``model`` with a dynamic vocabulary and write its int8 quantization to ``path``.

    Args:
        model: the detector (on the CPU).
        path: the ``.onnx`` file to write.
        calibration: ``Tensor[3, H, W]`` uint8 RGB images whose activation ranges set the
            quantization scales.
        text_embeddings: ``Tensor[C, D]``, the vocabulary the calibration runs with.
        text_encoder, template: recorded in the file's metadata.
    """
    import onnx

    model = model.eval()
    embeddings = text_embeddings.detach().float().cpu()
    with tempfile.TemporaryDirectory(prefix="vlpart-int8-") as tmp:
        source = Path(tmp) / "fp32.onnx"
        start = time.perf_counter()
        proto = capture_graph(model, embeddings, name=str(path))
        meta = {"text_encoder": text_encoder, "template": template}
        set_metadata(proto, model, **meta, vocabulary=None, prompts=None)
        onnx.save(proto, str(source))
        logger.info("int8: exported the graph in %.1f s", time.perf_counter() - start)
        start = time.perf_counter()
        feeds = (
            {"image": image, "text_embeddings": embeddings.numpy()}
            for picture in calibration
            for image in graph_images(model.transform([picture])[0])
        )
        out = quantize_export(source, path, feeds)
        logger.info("int8: calibrated and quantized in %.1f s", time.perf_counter() - start)
    return out


class Int8Backend:
    """A :class:`~vlpart.model.VLPartDetector` quantized to int8 and run by onnxruntime on the
    CPU (see the module docstring).

    Args:
        model: the detector (kept on the CPU for the export).
        calibration: ``Tensor[3, H, W]`` uint8 RGB calibration images, or None for the images
            of the first :meth:`detect` call.
        num_threads: onnxruntime intra-op threads (default ``torch.get_num_threads()``).
    """

    device = torch.device("cpu")

    def __init__(
        self,
        model: VLPartDetector,
        *,
        calibration: Sequence[Tensor] | None = None,
        num_threads: int | None = None,
    ) -> None:
        self.source = model.eval().cpu()
        self.calibration = None if calibration is None else list(calibration)
        self.num_threads = num_threads
        self._onnx: OnnxBackend | None = None
        self._lock = threading.Lock()

    @property
    def transform(self) -> DetectorTransform:
        return self.source.transform

    @property
    def text_dim(self) -> int:
        return self.source.text_dim

    def quantized(self, images: Sequence[Tensor], text_embeddings: Tensor) -> OnnxBackend:
        """The int8 graph's runner, built on the first call (calibrated on ``images`` when the
        backend has no calibration images)."""
        with self._lock:
            if self._onnx is None:
                calibration = self.calibration if self.calibration is not None else images
                with tempfile.TemporaryDirectory(prefix="vlpart-int8-") as tmp:
                    path = write_int8(
                        self.source, Path(tmp) / "int8.onnx", calibration, text_embeddings
                    )
                    self._onnx = OnnxBackend(path, num_threads=self.num_threads)
            return self._onnx

    def detect(
        self,
        images: Sequence[Tensor],
        text_embeddings: Tensor,
        *,
        score_threshold: float,
        output_sizes: Sequence[tuple[int, int]],
    ) -> list[dict[str, Tensor]]:
        return self.quantized(images, text_embeddings).detect(
            images, text_embeddings, score_threshold=score_threshold, output_sizes=output_sizes
        )
