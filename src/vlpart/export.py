"""ONNX export of a detector, and the onnxruntime detector behind
:meth:`vlpart.PartSegmenter.from_onnx`.

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
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn
from torchvision.models.detection.image_list import ImageList

from vlpart._io import atomic_write
from vlpart.model.backbones import SwinTrunk
from vlpart.model.transform import DetectorTransform
from vlpart.vocab import Vocabulary

if TYPE_CHECKING:
    from vlpart.predictor import PartSegmenter

__all__ = ["FORMAT_VERSION", "DetectorGraph", "OnnxDetector", "export_onnx"]

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


def export_onnx(
    segmenter: PartSegmenter,
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
    if not isinstance(model, nn.Module):
        raise ValueError("the segmenter already runs an exported model; export its weights")
    if segmenter.device.type != "cpu":
        raise ValueError(f"export runs on the CPU; the segmenter is on {segmenter.device}")
    if isinstance(getattr(model.backbone, "body", None), SwinTrunk):
        raise ValueError(
            "swin_b models cannot be exported: torch.export cannot keep the Swin trunk's "
            "input size dynamic; export a resnet50 or efficientnet_lite0 model"
        )
    embeddings = segmenter.text_embeddings(vocabulary).float().cpu()
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
            raise RuntimeError(f"{path}: ONNX export failed: {first}") from err
    proto = program.model_proto
    if not dynamic_vocab:
        _bake_input(proto, "text_embeddings", numpy_helper.from_array(embeddings.numpy()))
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
        "text_encoder": segmenter.text_encoder.identity,
        "template": segmenter.template,
        "vocabulary": None if dynamic_vocab else vocabulary.names,
        "prompts": None if dynamic_vocab else vocabulary.prompts(segmenter.template),
    }
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(meta)
    return atomic_write(path, lambda tmp: onnx.save(proto, str(tmp)))


def _bake_input(proto, name: str, value) -> None:
    """Turn graph input ``name`` into an initializer holding ``value`` (a TensorProto)."""
    graph = proto.graph
    [inp] = [i for i in graph.input if i.name == name]
    graph.input.remove(inp)
    value.name = name
    graph.initializer.append(value)


class OnnxDetector:
    """An exported detector run by onnxruntime, called like a
    :class:`~vlpart.model.VLPartDetector` in eval mode, so that
    :class:`~vlpart.PartSegmenter` drives it unchanged.

    Args:
        path: the ``.onnx`` file written by :func:`export_onnx`.
        providers: onnxruntime execution providers (default ``["CPUExecutionProvider"]``).
        num_threads: intra-op threads (default ``torch.get_num_threads()``).

    Attributes:
        transform: the model's resize/normalise/paste (from the file's metadata).
        text_dim: width D of the text embeddings.
        text_encoder: identity of the encoder the embeddings came from.
        template: the prompt template of the export.
        vocabulary, prompts: category names and prompts of a fixed-vocabulary export (None
            with a dynamic vocabulary).
        baked_embeddings: ``Tensor[C, D]`` of a fixed-vocabulary export, else None.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        providers: Sequence[str] | None = None,
        num_threads: int | None = None,
    ) -> None:
        import onnx
        import onnxruntime as ort
        from onnx import numpy_helper

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: ONNX file not found")
        try:
            proto = onnx.load(str(self.path))
        except Exception as err:  # protobuf's DecodeError and friends
            raise ValueError(f"{self.path}: not a readable ONNX file ({err})") from None
        raw = {p.key: p.value for p in proto.metadata_props}.get(METADATA_KEY)
        if raw is None:
            raise ValueError(f"{self.path}: not a vlpart export (no '{METADATA_KEY}' metadata)")
        meta = json.loads(raw)
        if meta.get("format") != FORMAT_VERSION:
            raise ValueError(
                f"{self.path}: export format {meta.get('format')!r}, this vlpart reads "
                f"{FORMAT_VERSION}; export the model again"
            )
        self.transform = DetectorTransform(**meta["transform"])
        self.text_dim = int(meta["text_dim"])
        self.text_encoder = meta["text_encoder"]
        self.template = meta["template"]
        self.vocabulary: list[str] | None = meta["vocabulary"]
        self.prompts: list[str] | None = meta["prompts"]
        baked = [i for i in proto.graph.initializer if i.name == "text_embeddings"]
        self.baked_embeddings = (
            torch.from_numpy(numpy_helper.to_array(baked[0]).copy()) if baked else None
        )
        options = ort.SessionOptions()
        options.intra_op_num_threads = num_threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            proto.SerializeToString(),
            options,
            providers=list(providers or ["CPUExecutionProvider"]),
        )

    def eval(self) -> OnnxDetector:
        return self

    def to(self, device: str | torch.device) -> OnnxDetector:
        """Inputs and outputs stay on the CPU (the providers decide where the graph runs)."""
        if torch.device(device).type != "cpu":
            raise ValueError(
                f"an ONNX model takes CPU tensors, got device {device}; choose the execution "
                "provider with providers="
            )
        return self

    def __call__(
        self, images: Sequence[Tensor], *, text_embeddings: Tensor | None = None
    ) -> list[dict[str, Tensor]]:
        """Detect in ``Tensor[3, H_i, W_i]`` images (uint8 0–255 or float 0–1).

        Returns:
            What :class:`~vlpart.model.VLPartDetector` returns in eval mode: per image
            ``boxes`` (Tensor[N, 4], original pixels), ``scores``, ``labels`` and ``masks``
            (Tensor[N, 1, H_i, W_i] probabilities).
        """
        feeds = self._vocabulary_feed(text_embeddings)
        original_sizes = [tuple(im.shape[-2:]) for im in images]
        batch, _ = self.transform(images)
        detections = []
        for i, (h, w) in enumerate(batch.image_sizes):
            image = np.ascontiguousarray(batch.tensors[i : i + 1, :, :h, :w].numpy())
            outs = self.session.run(list(OUTPUT_NAMES), {"image": image, **feeds})
            det = {
                name: torch.from_numpy(out) for name, out in zip(OUTPUT_NAMES, outs, strict=True)
            }
            det["masks"] = det["masks"][:, None]
            detections.append(det)
        return self.transform.postprocess(detections, batch.image_sizes, original_sizes)

    def _vocabulary_feed(self, text_embeddings: Tensor | None) -> dict[str, np.ndarray]:
        baked = self.baked_embeddings
        if baked is None:
            if text_embeddings is None:
                raise ValueError(f"{self.path}: this export takes the text embeddings as input")
            return {"text_embeddings": text_embeddings.detach().float().cpu().numpy()}
        if text_embeddings is not None and not (
            text_embeddings.shape == baked.shape
            and torch.allclose(text_embeddings.float().cpu(), baked, atol=BAKED_ATOL)
        ):
            raise ValueError(
                f"{self.path}: exported for the fixed vocabulary "
                f"{', '.join(self.vocabulary or [])}; export with --dynamic-vocab to choose the "
                "vocabulary at run time"
            )
        return {}
