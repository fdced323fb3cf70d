"""Post-training static int8 quantization of an ONNX export (:mod:`vlpart.export.onnx`) with
onnxruntime, calibrated on images.

What is quantized: the weights of every convolution and of every matrix product with a weight
initializer (the backbone, FPN, RPN, box and mask heads) per output channel to int8, and their
input activations per tensor to uint8, with ranges observed on calibration images (min/max).
The ReLU / ReLU6 (``Relu``, ``Clip``) after a convolution or linear layer is folded into the
quantization of its output: that output is quantized over the activation's range (``[0, 6]``
for the ReLU6 of EfficientNet-Lite) rather than the raw pre-activation range, most of whose 256
levels would fall on the negative values the activation zeroes (docs/int8.md measures the
difference: 3.9 mask AP50 points lost on the quickstart model without it, about 0.9 with it).
What stays float: the text classifier (a product of two activations, the region embeddings and
the vocabulary's text rows), box decoding, NMS, RoIAlign and the outputs. The file keeps the
export's format and metadata (the ``precision`` entry says ``"int8"``), so
:func:`~vlpart.export.onnx.load_export` and the ONNX backend read it unchanged.

The graph is first optimised by onnxruntime (constant folding and the fusion of the frozen
BatchNorm scales into the convolutions, ``quant_pre_process``), so each convolution is
quantized once with its folded weights.
"""

from __future__ import annotations

import itertools
import json
import logging
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from vlpart.core.errors import InputError, RunError
from vlpart.core.fileio import atomic_write
from vlpart.export.onnx import METADATA_KEY

__all__ = ["QUANTIZED_OPS", "quantize_export"]

logger = logging.getLogger(__name__)

# Listing Relu and Clip lets onnxruntime remove each one that follows a quantized op and give
# that op's output the activation's range (QDQRemovableActivation); others stay float.
QUANTIZED_OPS = ("Conv", "MatMul", "Gemm", "Relu", "Clip")


class _Feeds:
    """An onnxruntime ``CalibrationDataReader`` over prepared graph inputs (``get_next`` returns
    one feed dict, then None when exhausted)."""

    def __init__(self, feeds: Iterator[dict[str, np.ndarray]]) -> None:
        self._feeds = feeds
        self.count = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        feed = next(self._feeds, None)
        self.count += feed is not None
        return feed


def quantize_export(
    source: str | Path,
    path: str | Path,
    feeds: Iterable[dict[str, np.ndarray]],
) -> Path:
    """Write an int8 copy of the export ``source`` to ``path`` (atomically).

    Args:
        source: a float ``.onnx`` file written by :func:`~vlpart.export.onnx.export_onnx`.
        path: the ``.onnx`` file to write.
        feeds: the calibration inputs, one dict per image: ``image`` float32 ``[1, 3, h, w]``
            (resized and normalised as the export's transform does) and, for a dynamic
            vocabulary, ``text_embeddings`` float32 ``[C, D]``.

    Raises:
        InputError: no calibration input.
        RuntimeError: onnxruntime failed to quantize the graph.
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    feeds = iter(feeds)
    first = next(feeds, None)
    if first is None:
        raise InputError(f"{source}: int8 calibration needs at least one image")
    reader = _Feeds(itertools.chain([first], feeds))
    with tempfile.TemporaryDirectory(prefix="vlpart-int8-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        quantized = Path(tmp) / "int8.onnx"
        try:
            quantize_static(
                str(prepared),
                str(quantized),
                reader,
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=list(QUANTIZED_OPS),
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
                extra_options={"MatMulConstBOnly": True},
            )
        except Exception as err:  # onnxruntime raises many kinds; report one line
            raise RunError(f"{source}: int8 quantization failed: {err}") from err
        proto = onnx.load(str(quantized))
    _copy_metadata(onnx.load(str(source), load_external_data=False), proto)
    logger.info("int8: calibrated on %d images", reader.count)
    return atomic_write(path, lambda tmp: onnx.save(proto, str(tmp)))


def _copy_metadata(source, proto) -> None:
    """Give ``proto`` the export metadata of ``source``, marked ``"precision": "int8"``."""
    meta = {p.key: p.value for p in source.metadata_props}
    if METADATA_KEY not in meta:
        raise InputError("not a vlpart export (no metadata); export the model first")
    entry = json.loads(meta[METADATA_KEY])
    entry["precision"] = "int8"
    del proto.metadata_props[:]
    item = proto.metadata_props.add()
    item.key, item.value = METADATA_KEY, json.dumps(entry)
