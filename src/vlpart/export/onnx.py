"""ONNX export of a detector, and the file format it writes (read back by
:func:`load_export`; :class:`vlpart.inference.onnx_backend.OnnxBackend` runs it).

Where the exported graph starts and ends (one image per run)::

    Python   DetectorTransform.forward: resize, normalise      uint8 [3, H, W] -> float [1, 3, h, w]
    ONNX     pad to 32 -> backbone + FPN -> RPN (TopK, NMS) -> RoI heads (RoIAlign, text
             classifier, NMS, top-k) -> mask head
               inputs   image            float32 [1, 3, h, w]   resized and normalised, unpadded
                        text_embeddings  float32 [C, D]         only with ``dynamic_vocab``
               outputs  boxes   float32 [N, 4]    XYXY in resized pixels
                        scores  float32 [N]
                        labels  int64   [N]       rows of the vocabulary
                        masks   float32 [N, M, M] probabilities in box coordinates (M = 28)
    Python   DetectorTransform.postprocess: boxes to original pixels, masks pasted at full size

Without ``dynamic_vocab`` the vocabulary's text embeddings are an initializer named
``text_embeddings`` (the graph serves that label space only). The file's metadata entry
``vlpart`` (JSON) holds what the Python ends need: the transform settings, the text encoder
identity, the prompt template and, for a fixed vocabulary, its category names and prompts.

The graph is captured with ``torch.export`` (``torch.onnx.export(..., dynamo=True)``), which
refuses data-dependent Python branches instead of freezing the branch taken while tracing.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn
from torchvision.models.detection.image_list import ImageList

from vlpart.core.config import MAX_CHANNELS, MAX_IMAGE_SIDE
from vlpart.core.errors import InputError, MissingFileError, RunError
from vlpart.core.fileio import atomic_write
from vlpart.core.vocab import Vocabulary
from vlpart.model.backbones import SwinTrunk
from vlpart.model.transform import DetectorTransform

__all__ = [
    "FORMAT_VERSION",
    "DetectorGraph",
    "OnnxExport",
    "capture_graph",
    "export_onnx",
    "load_export",
    "set_metadata",
]

FORMAT_VERSION = 1
METADATA_KEY = "vlpart"
INPUT_NAMES = ("image", "text_embeddings")
OUTPUT_NAMES = ("boxes", "scores", "labels", "masks")
# Smallest resized side the graph accepts (the FPN needs a P6 cell).
MIN_SIDE = 32
# Example input of the capture; its values do not matter (shapes are symbolic).
EXAMPLE_SIZE = (224, 288)
# A fixed-vocabulary graph accepts the embeddings it was exported with, up to re-normalisation.
BAKED_ATOL = 1e-5


class DetectorGraph(nn.Module):
    """What the ONNX graph computes: :meth:`~vlpart.model.VLPartDetector.detect` on one image.

    Args:
        model: the detector (eval mode).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: Tensor, text_embeddings: Tensor) -> tuple[Tensor, ...]:
        """``image`` ``Tensor[1, 3, h, w]`` (resized, normalised, unpadded) and the vocabulary
        ``Tensor[C, D]`` → ``boxes`` [N, 4], ``scores`` [N], ``labels`` [N], ``masks`` [N, M, M]
        (see the module docstring)."""
        batch = ImageList(self.model.transform.pad([image[0]]), [(image.shape[2], image.shape[3])])
        det = self.model.detect(batch, text_embeddings=text_embeddings)[0]
        return det["boxes"], det["scores"], det["labels"], det["masks"][:, 0]


class _Segmenter(Protocol):
    """What :func:`export_onnx` reads of a segmenter (a
    :class:`vlpart.inference.segmenter.PartSegmenter`, which this module does not import)."""

    model: nn.Module | None
    device: torch.device
    template: str
    text_encoder: Any

    def text_embeddings(self, vocabulary: Vocabulary) -> Tensor: ...


def export_onnx(
    segmenter: _Segmenter,
    vocabulary: Vocabulary,
    path: str | Path,
    *,
    dynamic_vocab: bool = False,
) -> Path:
    """Export ``segmenter``'s detector to an ONNX file (written atomically).

    Args:
        segmenter: a PyTorch segmenter on the CPU.
        vocabulary: the label space baked into the graph; with ``dynamic_vocab`` only the
            example the graph is captured with.
        path: the ``.onnx`` file to write (weights inside it, so below protobuf's 2 GB).
        dynamic_vocab: take the text embeddings ``Tensor[C, D]`` as a second input.

    Raises:
        ValueError: a segmenter that is not a PyTorch model on the CPU.
        RuntimeError: the exporter failed.
    """
    import onnx
    from onnx import numpy_helper

    model = segmenter.model
    if model is None:
        raise InputError("the segmenter already runs an exported model; export its weights")
    if segmenter.device.type != "cpu":
        raise InputError(f"export runs on the CPU; the segmenter is on {segmenter.device}")
    embeddings = segmenter.text_embeddings(vocabulary).float().cpu()
    proto = capture_graph(model, embeddings, name=str(path))
    if not dynamic_vocab:
        _bake_input(proto, "text_embeddings", numpy_helper.from_array(embeddings.numpy()))
    set_metadata(
        proto,
        model,
        text_encoder=segmenter.text_encoder.identity,
        template=segmenter.template,
        vocabulary=None if dynamic_vocab else vocabulary.names,
        prompts=None if dynamic_vocab else vocabulary.prompts(segmenter.template),
    )
    return atomic_write(path, lambda tmp: onnx.save(proto, str(tmp)))


def capture_graph(model: nn.Module, embeddings: Tensor, *, name: str):
    """The ``onnx.ModelProto`` of :class:`DetectorGraph` over ``model`` (CPU, eval mode), with
    the text embeddings ``Tensor[C, D]`` as an input (``embeddings`` is the capture example) and
    no metadata (:func:`set_metadata`).

    Raises:
        InputError: a Swin model (its trunk cannot keep the input size dynamic).
        RuntimeError: the exporter failed (the message starts with ``name``).
    """
    if isinstance(getattr(model.backbone, "body", None), SwinTrunk):
        raise InputError(
            "swin_b models cannot be exported: torch.export cannot keep the Swin trunk's "
            "input size dynamic; export a resnet50 or efficientnet_lite0 model"
        )
    example = torch.zeros((1, 3, *EXAMPLE_SIZE))
    dim = torch.export.Dim
    dims = {
        "image": {2: dim("height", min=MIN_SIDE), 3: dim("width", min=MIN_SIDE)},
        "text_embeddings": {0: dim("num_classes", min=1)},
    }
    with warnings.catch_warnings():
        # torchvision's NMS shape function calls a deprecated torch.export helper.
        warnings.simplefilter("ignore", FutureWarning)
        try:
            program = torch.onnx.export(
                DetectorGraph(model).eval(),
                (example, embeddings),
                dynamo=True,
                dynamic_shapes=dims,
                input_names=list(INPUT_NAMES),
                output_names=list(OUTPUT_NAMES),
                external_data=False,
                verbose=False,
            )
        except Exception as err:  # the exporter raises many kinds; report one line
            text = re.sub(r"\x1b\[[0-9;]*m", "", str(err)).strip() or type(err).__name__
            first = text.splitlines()[0]
            raise RunError(f"{name}: ONNX export failed: {first}") from err
    return program.model_proto


def set_metadata(
    proto,
    model: nn.Module,
    *,
    text_encoder: str,
    template: str,
    vocabulary: list[str] | None,
    prompts: list[str] | None,
) -> None:
    """Write the ``vlpart`` metadata entry of ``proto`` (see the module docstring): ``model``'s
    transform settings and text width, the text encoder identity and prompt template, and for a
    fixed vocabulary its names and prompts."""
    transform = model.transform
    meta = {
        "format": FORMAT_VERSION,
        "transform": {
            "min_size": transform.min_size,
            "max_size": transform.max_size,
            "pixel_mean": transform.pixel_mean.flatten().tolist(),
            "pixel_std": transform.pixel_std.flatten().tolist(),
            "size_divisible": transform.size_divisible,
        },
        "text_dim": model.text_dim,
        "text_encoder": text_encoder,
        "template": template,
        "vocabulary": vocabulary,
        "prompts": prompts,
    }
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(meta)


def _bake_input(proto, name: str, value) -> None:
    """Turn graph input ``name`` into an initializer holding ``value`` (a TensorProto)."""
    graph = proto.graph
    [inp] = [i for i in graph.input if i.name == name]
    graph.input.remove(inp)
    value.name = name
    graph.initializer.append(value)


@dataclass(frozen=True)
class OnnxExport:
    """A file written by :func:`export_onnx`, read and checked.

    Attributes:
        path: the ``.onnx`` file.
        proto: its ``onnx.ModelProto``.
        transform: the model's resize/normalise settings.
        text_dim: width D of the text embeddings.
        text_encoder: identity of the encoder the embeddings came from.
        template: the prompt template of the export.
        vocabulary, prompts: category names and prompts of a fixed-vocabulary export (None with
            a dynamic vocabulary).
        baked_embeddings: ``Tensor[C, D]`` of a fixed-vocabulary export, else None.
    """

    path: Path
    proto: Any
    transform: DetectorTransform
    text_dim: int
    text_encoder: str
    template: str
    vocabulary: list[str] | None
    prompts: list[str] | None
    baked_embeddings: Tensor | None


def load_export(path: str | Path) -> OnnxExport:
    """Read an ONNX file written by :func:`export_onnx` and check its metadata.

    Raises:
        MissingFileError: no such file.
        InputError: not an ONNX file, not a vlpart export of this format (its graph's inputs
            and outputs differ), or metadata of the wrong type or out of range.
    """
    import onnx
    from onnx import numpy_helper

    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: ONNX file not found")
    try:
        proto = onnx.load(str(path))
    except Exception as err:  # protobuf's DecodeError and friends
        raise InputError(f"{path}: not a readable ONNX file ({err})") from None
    raw = {p.key: p.value for p in proto.metadata_props}.get(METADATA_KEY)
    if raw is None:
        raise InputError(f"{path}: not a vlpart export (no '{METADATA_KEY}' metadata)")
    meta = _check_metadata(raw, path)
    _check_graph(proto, path, dynamic_vocab=meta["vocabulary"] is None)
    baked = [i for i in proto.graph.initializer if i.name == "text_embeddings"]
    embeddings = None
    if meta["vocabulary"] is not None:
        shape = [list(b.dims) for b in baked]
        if shape != [[len(meta["vocabulary"]), meta["text_dim"]]]:
            raise InputError(
                f"{path}: the baked text embeddings have shape {shape or 'none'}, expected "
                f"[{len(meta['vocabulary'])}, {meta['text_dim']}]; export the model again"
            )
        embeddings = torch.from_numpy(numpy_helper.to_array(baked[0]).copy())
    return OnnxExport(
        path=path,
        proto=proto,
        transform=DetectorTransform(**meta["transform"]),
        text_dim=int(meta["text_dim"]),
        text_encoder=meta["text_encoder"],
        template=meta["template"],
        vocabulary=meta["vocabulary"],
        prompts=meta["prompts"],
        baked_embeddings=embeddings,
    )


def _check_metadata(raw: str, path: Path) -> dict[str, Any]:
    """The ``vlpart`` metadata entry of an export, every field checked (types, and sizes within
    the bounds a config accepts): a damaged or hand-made file fails here, in one line."""
    where = f"{path}: metadata '{METADATA_KEY}'"
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as err:
        raise InputError(f"{where}: not valid JSON ({err.msg}); export the model again") from None
    if not isinstance(meta, dict):
        raise InputError(f"{where}: expected a JSON object, got {type(meta).__name__}")
    if meta.get("format") != FORMAT_VERSION:
        raise InputError(
            f"{path}: export format {meta.get('format')!r:.40}, this vlpart reads "
            f"{FORMAT_VERSION}; export the model again"
        )
    transform = meta.get("transform")
    if not isinstance(transform, dict) or set(transform) != set(_TRANSFORM_FIELDS):
        raise InputError(
            f"{where}: transform: expected an object with {', '.join(_TRANSFORM_FIELDS)}, got "
            f"{transform!r:.80}"
        )
    for key in ("min_size", "max_size"):
        _check_int(transform[key], f"{where}: transform.{key}", 1, MAX_IMAGE_SIDE)
    _check_int(transform["size_divisible"], f"{where}: transform.size_divisible", 1, 1024)
    for key in ("pixel_mean", "pixel_std"):
        values = transform[key]
        if not (
            isinstance(values, list)
            and len(values) == 3
            and all(_is_real(v) and (key == "pixel_mean" or v > 0) for v in values)
        ):
            raise InputError(
                f"{where}: transform.{key}: expected 3 finite numbers, got {values!r:.80}"
            )
    _check_int(meta.get("text_dim"), f"{where}: text_dim", 1, MAX_CHANNELS)
    for key in ("text_encoder", "template"):
        if not isinstance(meta.get(key), str):
            raise InputError(f"{where}: {key}: expected a string, got {meta.get(key)!r:.60}")
    names, prompts = meta.get("vocabulary"), meta.get("prompts")
    for key, value in (("vocabulary", names), ("prompts", prompts)):
        if value is not None and not (
            isinstance(value, list) and value and all(isinstance(v, str) for v in value)
        ):
            raise InputError(f"{where}: {key}: expected a list of strings, got {value!r:.60}")
    if (names is None) != (prompts is None) or (names and len(names) != len(prompts)):
        raise InputError(f"{where}: vocabulary and prompts do not match; export the model again")
    return meta


_TRANSFORM_FIELDS = ("min_size", "max_size", "pixel_mean", "pixel_std", "size_divisible")


def _check_int(value: Any, where: str, low: int, high: int) -> None:
    if not (isinstance(value, int) and not isinstance(value, bool) and low <= value <= high):
        raise InputError(f"{where}: expected an integer from {low} to {high}, got {value!r:.40}")


def _is_real(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_graph(proto: Any, path: Path, *, dynamic_vocab: bool) -> None:
    """The graph has the inputs and outputs of an export: a foreign model that carries our
    metadata is refused here rather than failing inside onnxruntime."""
    inputs = [i.name for i in proto.graph.input]
    outputs = [o.name for o in proto.graph.output]
    wanted = list(INPUT_NAMES if dynamic_vocab else INPUT_NAMES[:1])
    if inputs != wanted or outputs != list(OUTPUT_NAMES):
        raise InputError(
            f"{path}: not a vlpart export: the graph takes {inputs} and returns {outputs}, "
            f"expected {wanted} and {list(OUTPUT_NAMES)}"
        )
