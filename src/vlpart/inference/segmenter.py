"""``PartSegmenter``: a detector backend plus a text encoder, segmenting what a vocabulary names.

Two layers, no per-image state (one segmenter can serve concurrent requests):

* :meth:`PartSegmenter.predict` takes paths, PIL images or ``np.ndarray[H, W, 3]`` uint8 RGB and
  returns :class:`~vlpart.inference.prediction.Prediction` records in original pixels;
* :meth:`PartSegmenter.predict_tensors` takes ``Tensor[3, H, W]`` images and a text-embedding
  matrix, for the engines.

How a segmenter is built is one record, :class:`SegmenterSpec` (weights, text options, device,
precision, refiner); :meth:`PartSegmenter.from_pretrained` is its keyword form. The detector runs
behind the contract of :mod:`vlpart.inference.backends` (PyTorch or onnxruntime), which also
applies the score threshold, once.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from vlpart.core.coco import category_ids
from vlpart.core.distributed import parse_device
from vlpart.core.errors import InputError, MissingFileError
from vlpart.core.fileio import ImageSource, read_image
from vlpart.core.vocab import DEFAULT_TEMPLATE, Vocabulary, parse_vocabulary
from vlpart.core.weights import is_name
from vlpart.inference.backends import MASK_THRESH, PRECISIONS, Backend, TorchBackend
from vlpart.inference.prediction import Prediction, assign_parents
from vlpart.model import VLPartDetector, load_checkpoint
from vlpart.model.checkpoint import CheckpointInfo
from vlpart.text import TextEncoder, TextOptions

if TYPE_CHECKING:
    from vlpart.inference.refine import Refiner, RefinerSpec

__all__ = [
    "MASK_THRESH",
    "PRECISIONS",
    "SCORE_THRESH",
    "PartSegmenter",
    "SegmenterSpec",
    "make_prediction",
]

logger = logging.getLogger(__name__)

# Vocabularies whose text embeddings a segmenter keeps (least recently used dropped first).
EMBEDDING_CACHE_SIZE = 64

# The score threshold of inference. The model's own ``ModelConfig.score_thresh`` (0.05, the
# paper's test threshold) only decides which candidates enter NMS; what a user gets is cut at
# SCORE_THRESH (``predict(score_threshold=...)``, ``vlpart predict --score-thresh``); evaluation
# keeps every detection the model returns (``score_threshold=0``). The backend applies it.
SCORE_THRESH = 0.3
OFFICIAL_SUFFIXES = (".pth", ".pt")
ONNX_SUFFIX = ".onnx"


@dataclass(frozen=True)
class SegmenterSpec:
    """Everything that decides how a :class:`PartSegmenter` is built, in one record: what the
    CLI, the demo, evaluation, video and export build their segmenter from.

    Attributes:
        weights: a model name of :data:`vlpart.model.zoo.MODELS` (downloaded and converted once),
            our ``.safetensors`` checkpoint, an official VLPart ``.pth`` or a ``vlpart export``
            ``.onnx`` file.
        text: the text encoder and its files (:class:`vlpart.text.TextOptions`; its encoder
            None means the one the weights record).
        device: where the model runs.
        precision: ``"fp32"`` (exact), ``"bf16"`` or ``"int8"`` (see :data:`PRECISIONS`;
            PyTorch weights only).
        calibration: int8: calibration image files (None: the first images predicted).
        refiner: SAM refinement of the masks (:class:`vlpart.inference.refine.RefinerSpec`), or
            None.
        onnx_providers: onnxruntime execution providers for an ``.onnx`` file (default: CPU).
        num_threads: onnxruntime intra-op threads (default ``torch.get_num_threads()``).
    """

    weights: str | Path
    text: TextOptions = field(default_factory=TextOptions)
    device: str = "cpu"
    precision: str = "fp32"
    calibration: tuple[str, ...] | None = None
    refiner: RefinerSpec | None = None
    onnx_providers: tuple[str, ...] | None = None
    num_threads: int | None = None

    def __post_init__(self) -> None:
        parse_device(self.device)  # "banana" or a CUDA device this machine lacks: InputError

    def build(self) -> PartSegmenter:
        """The segmenter this spec describes (:meth:`PartSegmenter.from_spec`)."""
        return PartSegmenter.from_spec(self)


class PartSegmenter:
    """Segment objects and parts named by any vocabulary.

    Args:
        model: a trained :class:`~vlpart.model.VLPartDetector` (run by a
            :class:`~vlpart.inference.backends.TorchBackend` on ``device`` at ``precision``), or
            a ready backend (e.g. :class:`~vlpart.inference.onnx_backend.OnnxBackend`, see
            :meth:`from_onnx`).
        text_encoder: turns the vocabulary's prompts into classifier rows; its dimension must
            equal the model's ``text_dim``.
        info: the checkpoint sidecar (training vocabulary, text encoder) when loaded from disk.
        template: part prompt template (see :data:`vlpart.core.vocab.PROMPT_TEMPLATES`).
        device: where a PyTorch model runs.
        precision: ``"fp32"``, ``"bf16"`` or ``"int8"`` (see :data:`PRECISIONS`; a PyTorch
            model only; int8 runs on the CPU, docs/int8.md).
        calibration: int8: the images (paths, PIL images or arrays) whose activation ranges
            set the quantization scales; None calibrates on the first images predicted.
        refiner: re-segments each image's detections after :meth:`predict` (e.g. a
            :class:`vlpart.inference.refine.SamRefiner`); None keeps the detector's masks.

    Attributes:
        backend: what runs the detector (:mod:`vlpart.inference.backends`).
        model: the PyTorch detector, or None for a backend without one (ONNX).
    """

    def __init__(
        self,
        model: VLPartDetector | Backend,
        text_encoder: TextEncoder,
        *,
        info: CheckpointInfo | None = None,
        template: str = DEFAULT_TEMPLATE,
        device: str | torch.device = "cpu",
        precision: str = "fp32",
        calibration: Sequence[ImageSource] | None = None,
        refiner: Refiner | None = None,
    ) -> None:
        if precision not in PRECISIONS:
            raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        if isinstance(model, VLPartDetector) and precision == "int8":
            self.backend: Backend = _int8_backend(model, device, calibration)
        elif isinstance(model, VLPartDetector):
            self.backend = TorchBackend(model, device=device, precision=precision)
        elif precision != "fp32":
            raise InputError(f"precision {precision!r} needs a PyTorch model")
        else:
            self.backend = model
        self.model: VLPartDetector | None = getattr(self.backend, "model", None)
        self.device = self.backend.device
        self.precision = precision
        self.refiner = refiner
        self.text_encoder = text_encoder
        self.info = info
        self.template = template
        text_dim = self.backend.text_dim
        if text_encoder.dim != text_dim:
            raise InputError(
                f"text encoder {text_encoder.identity} gives {text_encoder.dim}-d embeddings but "
                f"the model was trained with {text_dim}-d ones"
                + (f" ({info.text_encoder})" if info and info.text_encoder else "")
            )
        self._embeddings: OrderedDict[tuple[str, ...], Tensor] = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def from_spec(
        cls,
        spec: SegmenterSpec,
        *,
        text_encoder: TextEncoder | None = None,
        refiner: Refiner | None = None,
    ) -> PartSegmenter:
        """Build the segmenter ``spec`` describes; a ready ``text_encoder`` or ``refiner``
        replaces the spec's.

        Raises:
            MissingFileError: the weights file does not exist (or a name cannot be fetched).
            InputError: unreadable weights, an encoder of the wrong width, a bad option.
        """
        if refiner is None and spec.refiner is not None:
            refiner = spec.refiner.build(spec.device)
        path = Path(spec.weights)
        if path.suffix == ONNX_SUFFIX:
            return cls._from_onnx_spec(spec, text_encoder=text_encoder, refiner=refiner)
        path = _checkpoint_file(spec.weights)
        if path.suffix in OFFICIAL_SUFFIXES:
            from vlpart.model.convert import load_official_checkpoint

            model, info = load_official_checkpoint(path)
        else:
            model, info = load_checkpoint(path)
        text = spec.text
        if text.vocabulary is None and info.vocabulary:  # precomputed rows of the recorded one
            text = dataclasses.replace(
                text, vocabulary=Vocabulary.from_json(info.vocabulary, name="recorded")
            )
        encoder = text_encoder or text.build(recorded=info.text_encoder, device=spec.device)
        return cls(
            model,
            encoder,
            info=info,
            template=spec.text.template,
            device=spec.device,
            precision=spec.precision,
            calibration=spec.calibration,
            refiner=refiner,
        )

    @classmethod
    def _from_onnx_spec(
        cls, spec: SegmenterSpec, *, text_encoder: TextEncoder | None, refiner: Refiner | None
    ) -> PartSegmenter:
        from vlpart.inference.onnx_backend import OnnxBackend
        from vlpart.text.precomputed import PrecomputedTextEncoder

        if torch.device(spec.device).type != "cpu":
            raise InputError(
                f"an ONNX model takes CPU tensors, got device {spec.device}; choose the "
                "execution provider with providers="
            )
        backend = OnnxBackend(
            spec.weights, providers=spec.onnx_providers, num_threads=spec.num_threads
        )
        export = backend.export
        if export.baked_embeddings is not None:
            if text_encoder is not None or spec.text.encoder is not None:
                raise InputError(
                    f"{spec.weights}: exported for a fixed vocabulary, so it takes no text encoder"
                )
            encoder: TextEncoder = PrecomputedTextEncoder(
                export.baked_embeddings,
                export.prompts,
                identity=f"{export.text_encoder}+onnx:{export.path.name}",
            )
        else:
            text = dataclasses.replace(spec.text, template=export.template)
            encoder = text_encoder or text.build(recorded=export.text_encoder)
        return cls(backend, encoder, template=export.template, refiner=refiner)

    @classmethod
    def from_pretrained(
        cls,
        weights: str | Path,
        *,
        text_encoder: TextEncoder | str | None = None,
        embeddings: str | Path | None = None,
        vocabulary: str | Vocabulary | None = None,
        clip_weights: str | None = None,
        cache_dir: str | Path | None = None,
        template: str = DEFAULT_TEMPLATE,
        device: str | torch.device = "cpu",
        precision: str = "fp32",
        refiner: Refiner | str | None = None,
    ) -> PartSegmenter:
        """Load a released VLPart model by name, our ``.safetensors`` checkpoint, an official
        VLPart ``.pth`` (converted on the fly, in memory) or an ``.onnx`` export: the keyword
        form of :class:`SegmenterSpec` (see there for ``weights``).

        Args:
            text_encoder: an encoder, its name, or None for the one the checkpoint was trained
                with (``clip`` for official checkpoints and precomputed CLIP embeddings).
            embeddings: for ``text_encoder="precomputed"``: the ``.npy`` file.
            vocabulary: for ``text_encoder="precomputed"``: the vocabulary whose rows
                ``embeddings`` holds.
            clip_weights: local CLIP weights for the ``clip`` encoder.
            cache_dir: embedding cache of the encoder (default: ``$VLPART_CACHE/text``).
            precision: ``"fp32"`` (exact) or ``"bf16"`` (see :data:`PRECISIONS`).
            refiner: a refiner, or a spec for :func:`vlpart.inference.refine.build_refiner`
                (``"sam:vit_b"``) built on ``device``.
        """
        from vlpart.inference.refine import RefinerSpec

        text = TextOptions(
            encoder=text_encoder if isinstance(text_encoder, str) else None,
            template=template,
            embeddings=None if embeddings is None else str(embeddings),
            vocabulary=vocabulary,
            clip_weights=clip_weights,
            cache_dir=None if cache_dir is None else str(cache_dir),
        )
        spec = SegmenterSpec(
            weights,
            text=text,
            device=str(device),
            precision=precision,
            refiner=RefinerSpec(refiner) if isinstance(refiner, str) else None,
        )
        return cls.from_spec(
            spec,
            text_encoder=text_encoder if isinstance(text_encoder, TextEncoder) else None,
            refiner=None if isinstance(refiner, str) else refiner,
        )

    @classmethod
    def from_onnx(
        cls,
        path: str | Path,
        *,
        text_encoder: TextEncoder | str | None = None,
        embeddings: str | Path | None = None,
        vocabulary: str | Vocabulary | None = None,
        clip_weights: str | None = None,
        cache_dir: str | Path | None = None,
        providers: Sequence[str] | None = None,
        num_threads: int | None = None,
        device: str | torch.device = "cpu",
    ) -> PartSegmenter:
        """Run a file written by ``vlpart export`` (:func:`vlpart.export.onnx.export_onnx`) with
        onnxruntime; :meth:`predict` returns the same :class:`Prediction` records.

        A fixed-vocabulary export answers only its own vocabulary (its prompts and embeddings
        are in the file); a ``--dynamic-vocab`` export encodes any vocabulary with the text
        encoder it records (or ``text_encoder``; the other arguments as in
        :meth:`from_pretrained`).

        Args:
            path: the ``.onnx`` file.
            providers: onnxruntime execution providers (default: CPU).
            num_threads: onnxruntime intra-op threads (default ``torch.get_num_threads()``).
        """
        text = TextOptions(
            encoder=text_encoder if isinstance(text_encoder, str) else None,
            embeddings=None if embeddings is None else str(embeddings),
            vocabulary=vocabulary,
            clip_weights=clip_weights,
            cache_dir=None if cache_dir is None else str(cache_dir),
        )
        spec = SegmenterSpec(
            path,
            text=text,
            device=str(device),
            onnx_providers=None if providers is None else tuple(providers),
            num_threads=num_threads,
        )
        return cls._from_onnx_spec(
            spec,
            text_encoder=text_encoder if isinstance(text_encoder, TextEncoder) else None,
            refiner=None,
        )

    def recorded_vocabulary(self) -> Vocabulary:
        """The vocabulary the checkpoint was trained with (its sidecar records it), the default
        of :meth:`predict`.

        Raises:
            InputError: the weights record none (official and zoo checkpoints): name one.
        """
        records = self.info.vocabulary if self.info is not None else None
        if not records:
            raise InputError(
                "these weights record no training vocabulary; pass one (--vocab / vocabulary=)"
            )
        return Vocabulary.from_json(records, name="recorded")

    def text_embeddings(self, vocabulary: Vocabulary, *, template: str | None = None) -> Tensor:
        """``Tensor[C, D]`` of ``vocabulary`` under ``template`` (default: this segmenter's),
        cached per prompt tuple; the :data:`EMBEDDING_CACHE_SIZE` most recently used are kept
        (a demo server sees a new vocabulary with every request)."""
        prompts = tuple(vocabulary.prompts(template or self.template))
        with self._lock:
            cached = self._embeddings.get(prompts)
            if cached is not None:
                self._embeddings.move_to_end(prompts)
        if cached is None:
            cached = self.text_encoder.encode(list(prompts)).to(self.device)
            with self._lock:
                self._embeddings[prompts] = cached
                while len(self._embeddings) > EMBEDDING_CACHE_SIZE:
                    self._embeddings.popitem(last=False)
        return cached

    @torch.inference_mode()
    def predict_tensors(
        self,
        images: Sequence[Tensor],
        text_embeddings: Tensor,
        *,
        score_threshold: float | None = None,
        output_sizes: Sequence[tuple[int, int]] | None = None,
    ) -> list[dict[str, Tensor]]:
        """Detect in ``Tensor[3, H_i, W_i]`` uint8 RGB images with vocabulary ``Tensor[C, D]``.

        Args:
            images: the images.
            text_embeddings: the vocabulary's rows.
            score_threshold: keep only detections scoring at least this (only their masks are
                computed and pasted); None keeps all the model returns (scores above its
                ``score_thresh``).
            output_sizes: full ``(H, W)`` of each image when it is a reduced decode of a bigger
                original (outputs are then in the original's pixels); default: its own size.

        Returns:
            Per image, by descending score: ``boxes`` (Tensor[N, 4], original pixels),
            ``scores`` (Tensor[N]), ``labels`` (Tensor[N] int64 rows of the vocabulary) and
            ``masks`` (Tensor[N, H, W] bool); see :mod:`vlpart.inference.backends`.
        """
        images = [im.to(self.device) for im in images]
        sizes = list(output_sizes or [tuple(im.shape[-2:]) for im in images])
        return self.backend.detect(
            images,
            text_embeddings.to(self.device),
            score_threshold=0.0 if score_threshold is None else score_threshold,
            output_sizes=sizes,
        )

    def predict(
        self,
        images: ImageSource | Sequence[ImageSource],
        *,
        vocabulary: str | Vocabulary | None = None,
        score_threshold: float | None = None,
        template: str | None = None,
        image_sizes: Sequence[tuple[int, int]] | None = None,
    ) -> Prediction | list[Prediction]:
        """Segment the categories of ``vocabulary`` in one image or a list of images.

        Args:
            images: a path, PIL image or ``np.ndarray[H, W, 3]`` uint8 RGB, or a list of them
                (read by :func:`vlpart.core.fileio.read_image`: EXIF orientation, pixel limit,
                modes).
            vocabulary: a spec (``"dog:head,torso"``, ``"pascal_part"``) or a Vocabulary;
                None: the one the checkpoint was trained with (:meth:`recorded_vocabulary`).
            score_threshold: keep instances scoring at least this; ``None`` means
                :data:`SCORE_THRESH` (the model itself already drops scores below its
                configured ``score_thresh``). Only the kept instances' masks are pasted; the
                refiner, if any, sees only the kept instances.
            template: part prompt template for this call (default: the segmenter's).
            image_sizes: full ``(H, W)`` of each image when it is a reduced decode of a bigger
                original (:func:`vlpart.core.fileio.read_image` with ``min_side``); the
                predictions are then in the original's pixels.

        Returns:
            One :class:`Prediction` per image (a single one for a single image).

        Raises:
            MissingFileError: an image file does not exist.
            InputError: an image that cannot be read: not an image, truncated, above the pixel
                limit (:data:`vlpart.core.fileio.MAX_PIXELS`, ``$VLPART_MAX_PIXELS``; e.g. a
                20000×20000 PNG), or an array of the wrong shape or dtype.
            InputTypeError: an image of none of the accepted types.
        """
        single = not isinstance(images, list | tuple)
        batch = [images] if single else list(images)
        vocab = self.recorded_vocabulary() if vocabulary is None else parse_vocabulary(vocabulary)
        template = template or self.template
        arrays = [read_image(im) for im in batch]
        # One copy into channels-first order (also makes a read-only array, such as
        # ``np.asarray(pil_image)``, writable for torch).
        tensors = [torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1))) for a in arrays]
        outputs = self.predict_tensors(
            tensors,
            self.text_embeddings(vocab, template=template),
            score_threshold=SCORE_THRESH if score_threshold is None else score_threshold,
            output_sizes=image_sizes,
        )
        preds = [make_prediction(out, vocab, template=template) for out in outputs]
        if self.refiner is not None:
            preds = [self.refiner.refine(a, p) for a, p in zip(arrays, preds, strict=True)]
        return preds[0] if single else preds

    def __repr__(self) -> str:
        cfg = dataclasses.asdict(self.info.config) if self.info else {}
        return (
            f"PartSegmenter(backbone={cfg.get('backbone')!r}, "
            f"text_encoder={self.text_encoder.identity!r}, device={str(self.device)!r})"
        )


def _checkpoint_file(weights: str | Path) -> Path:
    """A checkpoint file, or a zoo name (``r50_pascalpart``) turned into its converted file."""
    if is_name(weights):
        from vlpart.model.zoo import prepare

        return prepare(str(weights))
    path = Path(weights)
    if not path.is_file():
        raise MissingFileError(f"{path}: weights file not found")
    return path


def _int8_backend(
    model: VLPartDetector, device: str | torch.device, calibration: Sequence[ImageSource] | None
) -> Backend:
    """The :class:`~vlpart.inference.int8_backend.Int8Backend` of ``model`` (CPU only), with
    ``calibration`` decoded."""
    from vlpart.inference.int8_backend import Int8Backend

    if torch.device(device).type != "cpu":
        raise InputError(f"precision 'int8' runs on the CPU, got device {device}")
    images = None
    if calibration is not None:
        if len(calibration) == 0:
            raise InputError("int8 calibration needs at least one image, got none")
        images = [torch.from_numpy(read_image(image)).permute(2, 0, 1) for image in calibration]
    return Int8Backend(model, calibration=images)


def make_prediction(
    output: dict[str, Tensor], vocabulary: Vocabulary, *, template: str = DEFAULT_TEMPLATE
) -> Prediction:
    """Turn one image's :meth:`PartSegmenter.predict_tensors` output (already thresholded by the
    backend) into a :class:`Prediction`: sort by score, name labels and their prompts under
    ``template``, link parts to objects."""
    order = torch.argsort(output["scores"], descending=True, stable=True)
    if not torch.equal(order.cpu(), torch.arange(len(order))):
        output = {key: output[key][order] for key in ("boxes", "scores", "labels", "masks")}
    label_ids = output["labels"].cpu().numpy().astype(np.int64)
    masks = output["masks"].cpu().numpy()
    cats = [vocabulary[int(i)] for i in label_ids]
    prompts = vocabulary.prompts(template)
    ids = np.asarray(category_ids(vocabulary), dtype=np.int64)
    return Prediction(
        boxes=output["boxes"].cpu().numpy().astype(np.float32),
        scores=output["scores"].cpu().numpy().astype(np.float32),
        labels=[c.name for c in cats],
        label_ids=label_ids,
        category_ids=ids[label_ids],
        masks=masks,
        parent=assign_parents(masks, [c.object for c in cats], [c.part for c in cats]),
        is_part=np.array([c.is_part for c in cats], dtype=bool),
        prompts=[prompts[int(i)] for i in label_ids],
    )
