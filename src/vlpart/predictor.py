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
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from vlpart._io import read_rgb
from vlpart.model import VLPartDetector, load_checkpoint
from vlpart.model.checkpoint import CheckpointInfo
from vlpart.model.ops import paste_masks_binary
from vlpart.model.optimize import inference_copy
from vlpart.prediction import Prediction, assign_parents
from vlpart.text import TextEncoder, build_text_encoder
from vlpart.vocab import DEFAULT_TEMPLATE, Vocabulary, parse_vocabulary

__all__ = ["PartSegmenter", "load_image", "make_prediction"]

logger = logging.getLogger(__name__)

MASK_THRESH = 0.5
OFFICIAL_SUFFIXES = (".pth", ".pt")
# "fp32": the exact path (folded BatchNorm, channels-last; same detections to float rounding);
# "bf16": bfloat16 autocast of convolutions and matrix products (CPU with AVX-512 BF16 / AMX,
# CUDA), faster at a small accuracy cost measured in the README.
PRECISIONS = ("fp32", "bf16")

ImageInput = str | Path | Image.Image | np.ndarray


def load_image(image: ImageInput) -> np.ndarray:
    """``np.ndarray[H, W, 3]`` uint8 RGB from a path, a PIL image or an array.

    Raises:
        FileNotFoundError: a path that does not exist.
        ValueError: a file that is not a readable image, or an array of the wrong shape/dtype.
    """
    if isinstance(image, str | Path):
        return read_rgb(image)
    if isinstance(image, Image.Image):
        return np.array(image.convert("RGB"))
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(
                f"image arrays must be [H, W, 3] uint8 RGB, got {image.shape} {image.dtype}"
            )
        return image
    raise TypeError(f"unsupported image type {type(image).__name__}")


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


class PartSegmenter:
    """Segment objects and parts named by any vocabulary.

    Args:
        model: a trained :class:`~vlpart.model.VLPartDetector` (put in eval mode here).
        text_encoder: turns the vocabulary's prompts into classifier rows; its dimension must
            equal the model's ``text_dim``.
        info: the checkpoint sidecar (training vocabulary, text encoder) when loaded from disk.
        template: part prompt template (see :data:`vlpart.vocab.PROMPT_TEMPLATES`).
        device: where the model runs.
        precision: ``"fp32"`` or ``"bf16"`` (see :data:`PRECISIONS`).

    Inference runs on a copy of ``model`` with frozen BatchNorm folded into the convolutions
    and channels-last weights (:func:`vlpart.model.optimize.inference_copy`), made on first use
    and again whenever the model's backbone weights change; ``model`` itself is not modified.
    """

    def __init__(
        self,
        model: VLPartDetector,
        text_encoder: TextEncoder,
        *,
        info: CheckpointInfo | None = None,
        template: str = DEFAULT_TEMPLATE,
        device: str | torch.device = "cpu",
        precision: str = "fp32",
    ) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.precision = precision
        self.device = torch.device(device)
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
        self._embeddings: dict[tuple[str, ...], Tensor] = {}
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
    ) -> PartSegmenter:
        """Load our ``.safetensors`` checkpoint, or an official VLPart ``.pth`` (converted on the
        fly, in memory).

        Args:
            weights: the checkpoint file.
            text_encoder: an encoder, its name, or None for the one the checkpoint was trained
                with (``clip`` for official checkpoints and precomputed CLIP embeddings).
            embeddings, vocabulary: for ``text_encoder="precomputed"``: the ``.npy`` file and the
                vocabulary whose rows it holds.
            clip_weights: local CLIP weights for the ``clip`` encoder.
            cache_dir: embedding cache of the encoder (default: ``$VLPART_CACHE/text``).
            precision: ``"fp32"`` (exact) or ``"bf16"`` (see :data:`PRECISIONS`).
        """
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: weights file not found")
        if path.suffix in OFFICIAL_SUFFIXES:
            from vlpart.model.convert import (
                OFFICIAL_TEXT_ENCODER,
                config_from_official,
                load_official_state_dict,
                official_model,
            )

            state = load_official_state_dict(path)
            config = config_from_official(state)
            model = official_model(state, config, source=str(path))
            info = CheckpointInfo(
                config=config, text_encoder=OFFICIAL_TEXT_ENCODER, text_dim=config.text_dim
            )
        else:
            model, info = load_checkpoint(path)
        if not isinstance(text_encoder, TextEncoder):
            name = text_encoder or _encoder_name(info.text_encoder)
            vocab = parse_vocabulary(vocabulary) if vocabulary is not None else None
            text_encoder = build_text_encoder(
                name,
                vocabulary=vocab,
                template=template,
                embeddings=embeddings,
                clip_weights=clip_weights,
                cache_dir=cache_dir,
                device=str(device),
            )
        return cls(
            model, text_encoder, info=info, template=template, device=device, precision=precision
        )

    def text_embeddings(self, vocabulary: Vocabulary) -> Tensor:
        """``Tensor[C, D]`` of ``vocabulary`` under this segmenter's template, cached."""
        prompts = tuple(vocabulary.prompts(self.template))
        with self._lock:
            cached = self._embeddings.get(prompts)
        if cached is None:
            cached = self.text_encoder.encode(list(prompts)).to(self.device)
            with self._lock:
                self._embeddings[prompts] = cached
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

    @torch.inference_mode()
    def detect(
        self,
        images: Sequence[Tensor],
        text_embeddings: Tensor,
        *,
        output_sizes: Sequence[tuple[int, int]] | None = None,
    ) -> list[dict[str, Tensor]]:
        """Detections before mask pasting, in ``precision``: see
        :meth:`vlpart.model.VLPartDetector.detect` (boxes, scores and labels float32/int64,
        ``masks`` ``Tensor[N, 1, M, M]`` box-space probabilities, by descending score)."""
        model = self._inference_model()
        inputs = [im.to(self.device) for im in images]
        embeddings = text_embeddings.to(self.device)
        with torch.autocast(self.device.type, torch.bfloat16, enabled=self.precision == "bf16"):
            outputs = model.detect(inputs, text_embeddings=embeddings, output_sizes=output_sizes)
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
            score_threshold: keep only detections scoring at least this (their masks alone are
                pasted); None keeps all the model returns (scores above its ``score_thresh``).
            output_sizes: ``(H, W)`` frame of the outputs per image, when an image is a reduced
                decode of a bigger original (default: each image's own size).

        Returns:
            Per image, by descending score: ``boxes`` (Tensor[N, 4], original pixels),
            ``scores`` (Tensor[N]), ``labels`` (Tensor[N] int64 rows of the vocabulary) and
            ``masks`` (Tensor[N, H_i, W_i] bool).
        """
        sizes = output_sizes or [tuple(im.shape[-2:]) for im in images]
        outputs = self.detect(images, text_embeddings, output_sizes=sizes)
        for out, size in zip(outputs, sizes, strict=True):
            if score_threshold is not None:
                keep = out["scores"] >= score_threshold
                for key in ("boxes", "scores", "labels", "masks"):
                    out[key] = out[key][keep]
            out["masks"] = paste_masks_binary(out["masks"], out["boxes"], size, thresh=MASK_THRESH)
        return outputs

    def predict(
        self,
        images: ImageInput | Sequence[ImageInput],
        *,
        vocabulary: str | Vocabulary,
        score_threshold: float = 0.3,
    ) -> Prediction | list[Prediction]:
        """Segment the categories of ``vocabulary`` in one image or a list of images.

        Args:
            images: a path, PIL image or ``np.ndarray[H, W, 3]`` uint8 RGB, or a list of them.
            vocabulary: a spec (``"dog:head,torso"``, ``"pascal_part"``) or a Vocabulary.
            score_threshold: keep instances scoring at least this (the model itself already
                drops scores below its configured ``score_thresh``).

        Returns:
            One :class:`Prediction` per image (a single one for a single image).
        """
        single = not isinstance(images, list | tuple)
        batch = [images] if single else list(images)
        vocab = parse_vocabulary(vocabulary)
        arrays = [load_image(im) for im in batch]
        tensors = [torch.from_numpy(a).permute(2, 0, 1).contiguous() for a in arrays]
        outputs = self.predict_tensors(
            tensors, self.text_embeddings(vocab), score_threshold=score_threshold
        )
        preds = [make_prediction(out, vocab, score_threshold) for out in outputs]
        return preds[0] if single else preds

    def __repr__(self) -> str:
        cfg = dataclasses.asdict(self.info.config) if self.info else {}
        return (
            f"PartSegmenter(backbone={cfg.get('backbone')!r}, "
            f"text_encoder={self.text_encoder.identity!r}, device={str(self.device)!r})"
        )


def make_prediction(
    output: dict[str, Tensor], vocabulary: Vocabulary, score_threshold: float
) -> Prediction:
    """Turn one image's :meth:`PartSegmenter.predict_tensors` output into a :class:`Prediction`:
    keep scores >= ``score_threshold``, sort by score, name labels, link parts to objects."""
    keep = torch.nonzero(output["scores"] >= score_threshold).squeeze(1)
    idx = keep[torch.argsort(output["scores"][keep], descending=True, stable=True)]
    if not torch.equal(idx.cpu(), torch.arange(len(output["scores"]))):
        # Copy only when something is dropped or reordered: predict_tensors with
        # score_threshold already gives the kept detections in order (full-size masks).
        output = {key: output[key][idx] for key in ("boxes", "scores", "labels", "masks")}
    label_ids = output["labels"].cpu().numpy().astype(np.int64)
    masks = output["masks"].cpu().numpy()
    cats = [vocabulary[int(i)] for i in label_ids]
    return Prediction(
        boxes=output["boxes"].cpu().numpy().astype(np.float32),
        scores=output["scores"].cpu().numpy().astype(np.float32),
        labels=[c.name for c in cats],
        label_ids=label_ids,
        masks=masks,
        parent=assign_parents(masks, [c.object for c in cats], [c.part for c in cats]),
    )
