"""Text encoders: category prompts -> L2-normalised classifier rows ``Tensor[C, D]``.

``build_text_encoder`` is the one entry point; every encoder implements
:meth:`TextEncoder.encode` and caches embeddings on disk keyed by (encoder identity, prompt).
Heavy dependencies (open_clip, sentence-transformers) are imported only when their encoder is built.
"""

from __future__ import annotations

from pathlib import Path

import torch

from vlpart.text.base import EmbeddingCache, TextEncoder, default_cache_dir
from vlpart.vocab import DEFAULT_TEMPLATE, Vocabulary

__all__ = [
    "ENCODERS",
    "EmbeddingCache",
    "TextEncoder",
    "build_text_encoder",
    "default_cache_dir",
    "encode_vocabulary",
]

ENCODERS = ("clip", "minilm", "precomputed")


def build_text_encoder(
    name: str,
    *,
    vocabulary: Vocabulary | None = None,
    template: str = DEFAULT_TEMPLATE,
    embeddings: str | Path | None = None,
    clip_model: str = "RN50",
    clip_weights: str | None = None,
    cache_dir: str | Path | None = None,
    device: str = "cpu",
) -> TextEncoder:
    """Build encoder ``name`` (one of :data:`ENCODERS`).

    Args:
        name: ``clip``, ``minilm`` or ``precomputed``.
        vocabulary: for ``precomputed``: the vocabulary whose categories are the rows of
            ``embeddings``, in order (their prompts under ``template`` become the lookup keys).
        embeddings: for ``precomputed``: the ``[C, D]`` ``.npy`` file.
        clip_model, clip_weights: for ``clip``: see :class:`~vlpart.text.clip.ClipTextEncoder`.
        cache_dir: embedding cache; ``None`` uses :func:`default_cache_dir`.
    """
    if name == "precomputed":
        from vlpart.text.precomputed import PrecomputedTextEncoder

        if embeddings is None or vocabulary is None:
            raise ValueError(
                "the precomputed encoder needs an embeddings .npy file and the "
                "vocabulary its rows follow"
            )
        return PrecomputedTextEncoder.from_npy(embeddings, vocabulary.prompts(template))
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if name == "minilm":
        from vlpart.text.minilm import MiniLMTextEncoder

        return MiniLMTextEncoder(cache_dir=cache, device=device)
    if name == "clip":
        from vlpart.text.clip import ClipTextEncoder

        return ClipTextEncoder(clip_model, clip_weights, cache_dir=cache, device=device)
    raise ValueError(f"unknown text encoder {name!r}; choices: {', '.join(ENCODERS)}")


def encode_vocabulary(
    encoder: TextEncoder, vocabulary: Vocabulary, template: str = DEFAULT_TEMPLATE
) -> torch.Tensor:
    """``Tensor[C, D]`` float32, unit rows: the classifier matrix of ``vocabulary``."""
    return encoder.encode(vocabulary.prompts(template))
