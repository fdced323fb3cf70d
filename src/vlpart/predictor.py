"""``PartSegmenter``: a trained detector plus a text encoder, segmenting what a vocabulary names.

Two layers, no per-image state (one segmenter can serve concurrent requests):

* :meth:`PartSegmenter.predict` takes paths, PIL images or ``np.ndarray[H, W, 3]`` uint8 RGB and
  returns :class:`~vlpart.prediction.Prediction` records in original pixels;
* :meth:`PartSegmenter.predict_tensors` takes ``Tensor[3, H, W]`` images and a text-embedding
  matrix, for the engines.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from vlpart._io import ImageSource, read_image
from vlpart.coco import category_ids
from vlpart.model import VLPartDetector, load_checkpoint
from vlpart.model.checkpoint import CheckpointInfo
from vlpart.model.ops import paste_masks_binary
from vlpart.model.optimize import inference_copy
from vlpart.prediction import Prediction, assign_parents
from vlpart.text import TextEncoder, build_text_encoder
from vlpart.vocab import DEFAULT_TEMPLATE, Vocabulary, parse_vocabulary

if TYPE_CHECKING:
    from vlpart.export import OnnxDetector
    from vlpart.refine import Refiner

__all__ = ["MASK_THRESH", "PRECISIONS", "SCORE_THRESH", "PartSegmenter", "make_prediction"]

logger = logging.getLogger(__name__)

# Vocabularies whose text embeddings a segmenter keeps (least recently used dropped first).
EMBEDDING_CACHE_SIZE = 64

# The thresholds of inference, all here. The model's own ``ModelConfig.score_thresh`` (0.05, the
# paper's test threshold) only decides which candidates enter NMS; what a user gets is cut at
# SCORE_THRESH (``predict(score_threshold=...)``, ``vlpart predict --score-thresh``); evaluation
# keeps every detection the model returns (``score_threshold=0``). Mask probabilities become
# binary masks at MASK_THRESH (detectron2's paste threshold).
SCORE_THRESH = 0.3
MASK_THRESH = 0.5
# "fp32": the exact path (vlpart.model.optimize.inference_copy; the model's detections to float
# rounding); "bf16": bfloat16 autocast (CPU with AVX-512 BF16 / AMX, CUDA), faster at a
# small accuracy cost (README, "Inference speed and memory").
PRECISIONS = ("fp32", "bf16")
OFFICIAL_SUFFIXES = (".pth", ".pt")
ONNX_SUFFIX = ".onnx"


def _checkpoint_file(weights: str | Path) -> Path:
    """A checkpoint file, or a zoo name (``r50_pascalpart``) turned into its converted file."""
    path = Path(weights)
    if path.is_file():
        return path
    if isinstance(weights, str) and path.suffix == "" and len(path.parts) == 1:
        from vlpart.model.zoo import prepare

        return prepare(weights)
    raise FileNotFoundError(f"{path}: weights file not found")


def _encoder_name(identity: str | None) -> str:
    """Which encoder rebuilds embeddings in the space a checkpoint was trained in."""
    if identity is None:
        raise ValueError("the checkpoint does not record its text encoder; pass text_encoder=")
    if identity.startswith("minilm"):
        return "minilm"
    # The released precomputed embeddings are CLIP RN50 prompts.
    if identity.startswith(("clip", "precomputed")):
        return "clip"
    raise ValueError(f"unknown text encoder {identity!r} in the checkpoint; pass text_encoder=")


def _build_refiner(refiner: Refiner | str | None, device: str | torch.device) -> Refiner | None:
    """A refiner spec (``"sam:vit_b"``) built on ``device``; a refiner or None as it is."""
    if not isinstance(refiner, str):
        return refiner
    from vlpart.refine import build_refiner

    return build_refiner(refiner, device=device)


class PartSegmenter:
    """Segment objects and parts named by any vocabulary.

    Args:
        model: a trained :class:`~vlpart.model.VLPartDetector` (put in eval mode here), or an
            exported one (:class:`~vlpart.export.OnnxDetector`, see :meth:`from_onnx`).
        text_encoder: turns the vocabulary's prompts into classifier rows; its dimension must
            equal the model's ``text_dim``.
        info: the checkpoint sidecar (training vocabulary, text encoder) when loaded from disk.
        template: part prompt template (see :data:`vlpart.vocab.PROMPT_TEMPLATES`).
        device: where the model runs.
        precision: ``"fp32"`` or ``"bf16"`` (see :data:`PRECISIONS`; a PyTorch model only).
        refiner: re-segments each image's detections after :meth:`predict` (e.g. a
            :class:`vlpart.refine.SamRefiner`); None keeps the detector's masks.

    A PyTorch model runs as a copy with frozen BatchNorm and ReLUs fused into the convolutions
    and a channels-last backbone, RPN and mask head (:func:`vlpart.model.optimize.inference_copy`),
    made on first use and again whenever the model's backbone weights change; ``model`` itself is
    not modified.
    """

    def __init__(
        self,
        model: VLPartDetector | OnnxDetector,
        text_encoder: TextEncoder,
        *,
        info: CheckpointInfo | None = None,
        template: str = DEFAULT_TEMPLATE,
        device: str | torch.device = "cpu",
        precision: str = "fp32",
        refiner: Refiner | None = None,
    ) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.precision = precision
        self.device = torch.device(device)
        self.refiner = refiner
        self.model = model.eval().to(self.device)
        self._fast: tuple[tuple[int, ...], VLPartDetector] | None = None
        self.text_encoder = text_encoder
        self.info = info
        self.template = template
        text_dim = model.text_dim
        if text_encoder.dim != text_dim:
            raise ValueError(
                f"text encoder {text_encoder.identity} gives {text_encoder.dim}-d embeddings but "
                f"the model was trained with {text_dim}-d ones"
                + (f" ({info.text_encoder})" if info and info.text_encoder else "")
            )
        self._embeddings: OrderedDict[tuple[str, ...], Tensor] = OrderedDict()
        self._lock = threading.Lock()

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
        """Load a released VLPart model by name, our ``.safetensors`` checkpoint, or an official
        VLPart ``.pth`` (converted on the fly, in memory); an ``.onnx`` export goes to
        :meth:`from_onnx`.

        Args:
            weights: a name of :data:`vlpart.model.zoo.MODELS` (``"r50_pascalpart"``:
                downloaded and converted once into ``$VLPART_CACHE/checkpoints``, see
                :func:`vlpart.model.zoo.prepare`) or a checkpoint file.
            text_encoder: an encoder, its name, or None for the one the checkpoint was trained
                with (``clip`` for official checkpoints and precomputed CLIP embeddings).
            embeddings, vocabulary: for ``text_encoder="precomputed"``: the ``.npy`` file and the
                vocabulary whose rows it holds.
            clip_weights: local CLIP weights for the ``clip`` encoder.
            cache_dir: embedding cache of the encoder (default: ``$VLPART_CACHE/text``).
            precision: ``"fp32"`` (exact) or ``"bf16"`` (see :data:`PRECISIONS`).
            refiner: a refiner, or a spec for :func:`vlpart.refine.build_refiner`
                (``"sam:vit_b"``) built on ``device``.
        """
        path = Path(weights)
        if path.suffix == ONNX_SUFFIX:
            segmenter = cls.from_onnx(
                path,
                text_encoder=text_encoder,
                embeddings=embeddings,
                vocabulary=vocabulary,
                clip_weights=clip_weights,
                cache_dir=cache_dir,
                device=device,
            )
            segmenter.refiner = _build_refiner(refiner, device)
            return segmenter
        path = _checkpoint_file(weights)
        if path.suffix in OFFICIAL_SUFFIXES:
            from vlpart.model.convert import load_official_checkpoint

            model, info = load_official_checkpoint(path)
        else:
            model, info = load_checkpoint(path)
        encoder = _resolve_encoder(
            text_encoder,
            info.text_encoder,
            vocabulary=vocabulary,
            template=template,
            embeddings=embeddings,
            clip_weights=clip_weights,
            cache_dir=cache_dir,
            device=device,
        )
        return cls(
            model,
            encoder,
            info=info,
            template=template,
            device=device,
            precision=precision,
            refiner=_build_refiner(refiner, device),
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
        """Run a file written by ``vlpart export`` (:func:`vlpart.export.export_onnx`) with
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
        from vlpart.export import OnnxDetector
        from vlpart.text.precomputed import PrecomputedTextEncoder

        detector = OnnxDetector(path, providers=providers, num_threads=num_threads)
        if detector.baked_embeddings is not None:
            if text_encoder is not None:
                raise ValueError(
                    f"{path}: exported for a fixed vocabulary, so it takes no text encoder"
                )
            encoder: TextEncoder = PrecomputedTextEncoder(
                detector.baked_embeddings,
                detector.prompts,
                identity=f"{detector.text_encoder}+onnx:{Path(path).name}",
            )
        else:
            encoder = _resolve_encoder(
                text_encoder,
                detector.text_encoder,
                vocabulary=vocabulary,
                template=detector.template,
                embeddings=embeddings,
                clip_weights=clip_weights,
                cache_dir=cache_dir,
                device="cpu",
            )
        return cls(detector, encoder, template=detector.template, device=device)

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

    def _inference_model(self) -> VLPartDetector:
        """The optimised copy of ``self.model``, rebuilt when a backbone tensor changed (an
        optimizer step or ``load_state_dict`` bumps its version counter)."""
        tensors = (*self.model.backbone.parameters(), *self.model.backbone.buffers())
        key = (id(self.model), *(t._version for t in tensors))
        with self._lock:
            if self._fast is None or self._fast[0] != key:
                self._fast = (key, inference_copy(self.model))
            return self._fast[1]

    def _detect(
        self,
        images: list[Tensor],
        text_embeddings: Tensor,
        sizes: list[tuple[int, int]],
        score_threshold: float | None,
    ) -> list[dict[str, Tensor]]:
        """Detections scoring at least ``score_threshold`` (None: all) in the ``sizes`` frames,
        masks ``Tensor[N, 1, M, M]`` in box coordinates (``Tensor[N, 1, H, W]`` already pasted
        for an ONNX model). A PyTorch model computes masks only for those detections."""
        if not isinstance(self.model, VLPartDetector):
            if any(tuple(im.shape[-2:]) != size for im, size in zip(images, sizes, strict=True)):
                raise ValueError("an ONNX model needs images decoded at their full size")
            outputs = self.model(images, text_embeddings=text_embeddings)
            if score_threshold is not None:
                for out in outputs:
                    keep = out["scores"] >= score_threshold
                    out.update((key, value[keep]) for key, value in out.items())
            return outputs
        model = self._inference_model()
        with torch.autocast(self.device.type, torch.bfloat16, enabled=self.precision == "bf16"):
            batch, _ = model.transform(images)
            detections = model.detect(
                batch, text_embeddings=text_embeddings, score_threshold=score_threshold
            )
        outputs = model.transform.rescale(detections, batch.image_sizes, sizes)
        for out in outputs:
            out["boxes"], out["scores"] = out["boxes"].float(), out["scores"].float()
        return outputs

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
            ``masks`` (Tensor[N, H, W] bool).
        """
        images = [im.to(self.device) for im in images]
        sizes = list(output_sizes or [tuple(im.shape[-2:]) for im in images])
        outputs = self._detect(images, text_embeddings.to(self.device), sizes, score_threshold)
        pasted = not isinstance(self.model, VLPartDetector)  # an ONNX graph pastes its masks
        for out, size in zip(outputs, sizes, strict=True):
            if pasted:
                out["masks"] = out["masks"][:, 0] >= MASK_THRESH
            else:
                out["masks"] = paste_masks_binary(
                    out["masks"], out["boxes"], size, thresh=MASK_THRESH
                )
        return outputs

    def predict(
        self,
        images: ImageSource | Sequence[ImageSource],
        *,
        vocabulary: str | Vocabulary,
        score_threshold: float | None = None,
        template: str | None = None,
        image_sizes: Sequence[tuple[int, int]] | None = None,
    ) -> Prediction | list[Prediction]:
        """Segment the categories of ``vocabulary`` in one image or a list of images.

        Args:
            images: a path, PIL image or ``np.ndarray[H, W, 3]`` uint8 RGB, or a list of them
                (read by :func:`vlpart._io.read_image`: EXIF orientation, pixel limit, modes).
            vocabulary: a spec (``"dog:head,torso"``, ``"pascal_part"``) or a Vocabulary.
            score_threshold: keep instances scoring at least this; ``None`` means
                :data:`SCORE_THRESH` (the model itself already drops scores below its
                configured ``score_thresh``). Only the kept instances' masks are pasted; the
                refiner, if any, sees only the kept instances.
            template: part prompt template for this call (default: the segmenter's).
            image_sizes: full ``(H, W)`` of each image when it is a reduced decode of a bigger
                original (:func:`vlpart._io.read_image` with ``min_side``); the predictions are
                then in the original's pixels.

        Returns:
            One :class:`Prediction` per image (a single one for a single image).
        """
        single = not isinstance(images, list | tuple)
        batch = [images] if single else list(images)
        vocab = parse_vocabulary(vocabulary)
        thresh = SCORE_THRESH if score_threshold is None else score_threshold
        arrays = [read_image(im) for im in batch]
        tensors = [torch.from_numpy(a).permute(2, 0, 1).contiguous() for a in arrays]
        outputs = self.predict_tensors(
            tensors,
            self.text_embeddings(vocab, template=template),
            score_threshold=thresh,
            output_sizes=image_sizes,
        )
        preds = [make_prediction(out, vocab, thresh) for out in outputs]
        if self.refiner is not None:
            preds = [self.refiner.refine(a, p) for a, p in zip(arrays, preds, strict=True)]
        return preds[0] if single else preds

    def __repr__(self) -> str:
        cfg = dataclasses.asdict(self.info.config) if self.info else {}
        return (
            f"PartSegmenter(backbone={cfg.get('backbone')!r}, "
            f"text_encoder={self.text_encoder.identity!r}, device={str(self.device)!r})"
        )


def _resolve_encoder(
    text_encoder: TextEncoder | str | None,
    identity: str | None,
    *,
    vocabulary: str | Vocabulary | None,
    template: str,
    embeddings: str | Path | None,
    clip_weights: str | None,
    cache_dir: str | Path | None,
    device: str | torch.device,
) -> TextEncoder:
    """``text_encoder`` itself, the encoder it names, or the one ``identity`` (the model's
    recorded encoder) was trained with."""
    if isinstance(text_encoder, TextEncoder):
        return text_encoder
    return build_text_encoder(
        text_encoder or _encoder_name(identity),
        vocabulary=parse_vocabulary(vocabulary) if vocabulary is not None else None,
        template=template,
        embeddings=embeddings,
        clip_weights=clip_weights,
        cache_dir=cache_dir,
        device=str(device),
    )


def make_prediction(
    output: dict[str, Tensor], vocabulary: Vocabulary, score_threshold: float
) -> Prediction:
    """Turn one image's :meth:`PartSegmenter.predict_tensors` output into a :class:`Prediction`:
    keep scores >= ``score_threshold``, sort by score, name labels, link parts to objects."""
    keep = torch.nonzero(output["scores"] >= score_threshold).squeeze(1)
    idx = keep[torch.argsort(output["scores"][keep], descending=True, stable=True)]
    if not torch.equal(idx.cpu(), torch.arange(len(output["scores"]))):
        # Copy only when something is dropped or reordered: predict_tensors with a
        # score_threshold already gives the kept detections in order (full-size masks).
        output = {key: output[key][idx] for key in ("boxes", "scores", "labels", "masks")}
    label_ids = output["labels"].cpu().numpy().astype(np.int64)
    masks = output["masks"].cpu().numpy()
    cats = [vocabulary[int(i)] for i in label_ids]
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
    )
