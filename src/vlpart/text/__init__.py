"""Text encoders: category prompts -> L2-normalised classifier rows ``Tensor[C, D]``.

``build_text_encoder`` is the one entry point; every encoder implements
:meth:`TextEncoder.encode` and caches embeddings on disk keyed by (encoder identity, prompt).
Heavy dependencies (open_clip, sentence-transformers) are imported only when their encoder is built.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from vlpart.core.errors import InputError
from vlpart.core.vocab import DEFAULT_TEMPLATE, Vocabulary, parse_vocabulary
from vlpart.text.base import EmbeddingCache, TextEncoder, default_cache_dir

if TYPE_CHECKING:
    from vlpart.core.config import TextConfig

__all__ = [
    "ENCODERS",
    "EmbeddingCache",
    "TextEncoder",
    "TextOptions",
    "build_text_encoder",
    "default_cache_dir",
    "encode_vocabulary",
    "nearest_neighbours",
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
        clip_model: for ``clip``: see :class:`~vlpart.text.clip.ClipTextEncoder`.
        clip_weights: for ``clip``: see :class:`~vlpart.text.clip.ClipTextEncoder`.
        cache_dir: embedding cache; ``None`` uses :func:`default_cache_dir`.
    """
    if name == "precomputed":
        from vlpart.text.precomputed import PrecomputedTextEncoder

        if embeddings is None or vocabulary is None:
            raise InputError(
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
    raise InputError(f"unknown text encoder {name!r}; choices: {', '.join(ENCODERS)}")


def nearest_neighbours(embeddings: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's ``k`` most similar other rows of unit ``embeddings`` ``Tensor[C, D]``:
    cosine similarities ``Tensor[C, k']`` and row indices ``Tensor[C, k']`` (``k' = min(k,
    C - 1)``), most similar first."""
    sim = embeddings @ embeddings.T
    sim.fill_diagonal_(float("-inf"))
    return sim.topk(max(min(k, len(embeddings) - 1), 0), dim=1)


def encode_vocabulary(
    encoder: TextEncoder, vocabulary: Vocabulary, template: str = DEFAULT_TEMPLATE
) -> torch.Tensor:
    """``Tensor[C, D]`` float32, unit rows: the classifier matrix of ``vocabulary``."""
    return encoder.encode(vocabulary.prompts(template))


@dataclass(frozen=True)
class TextOptions:
    """Which text encoder a model's prompts go through at inference, and its files: the one
    record the CLI, the demo, evaluation, video and export pass around.

    Attributes:
        encoder: ``clip``, ``minilm``, ``precomputed``, or None for the encoder the model
            records (``clip`` for official checkpoints and precomputed CLIP embeddings).
        template: part prompt template (see :data:`vlpart.core.vocab.PROMPT_TEMPLATES`).
        embeddings: for ``precomputed``: the ``[C, D]`` ``.npy`` file.
        vocabulary: for ``precomputed``: the vocabulary spec whose categories are its rows.
        clip_model, clip_weights: for ``clip`` (weights: a local file, or None for
            ``$VLPART_CLIP_WEIGHTS`` / the download).
        cache_dir: embedding cache (None: ``$VLPART_CACHE/text``).
    """

    encoder: str | None = None
    template: str = DEFAULT_TEMPLATE
    embeddings: str | None = None
    vocabulary: str | Vocabulary | None = None
    clip_model: str = "RN50"
    clip_weights: str | None = None
    cache_dir: str | None = None

    @classmethod
    def from_config(cls, cfg: TextConfig, **overrides) -> TextOptions:
        """The options of an experiment's ``text:`` section; ``overrides`` that are not None win."""
        given = {k: v for k, v in overrides.items() if v is not None}
        base = {
            "encoder": cfg.encoder,
            "template": cfg.template,
            "clip_model": cfg.clip_model,
            "clip_weights": cfg.clip_weights,
            "cache_dir": cfg.cache_dir,
        }
        return cls(**{**base, **given})

    def build(self, *, recorded: str | None = None, device: str = "cpu") -> TextEncoder:
        """The encoder these options name, or, with ``encoder=None``, the one whose identity
        ``recorded`` (a checkpoint's or an export's) says the model was trained with.

        Raises:
            InputError: no encoder given and none recorded, or an unknown one recorded.
        """
        vocabulary = self.vocabulary
        return build_text_encoder(
            self.encoder or _recorded_encoder(recorded),
            vocabulary=parse_vocabulary(vocabulary) if vocabulary is not None else None,
            template=self.template,
            embeddings=self.embeddings,
            clip_model=self.clip_model,
            clip_weights=self.clip_weights,
            cache_dir=self.cache_dir,
            device=str(device),
        )


def _recorded_encoder(identity: str | None) -> str:
    """Which encoder rebuilds embeddings in the space a model was trained in."""
    if identity is None:
        raise InputError("the checkpoint does not record its text encoder; pass text_encoder=")
    if identity.startswith("minilm"):
        return "minilm"
    # The released precomputed embeddings are CLIP RN50 prompts.
    if identity.startswith(("clip", "precomputed")):
        return "clip"
    raise InputError(f"unknown text encoder {identity!r} in the checkpoint; pass text_encoder=")
