"""CLIP text tower through open_clip: the paper's encoder (``RN50`` / ``openai``, D=1024)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

from vlpart.core.errors import MissingDependencyError, MissingFileError, RunError
from vlpart.core.weights import WeightSource, hf_cached, hf_url, named_or_file, resolve
from vlpart.text.base import TextEncoder

__all__ = ["CLIP_RN50_WEIGHTS", "CLIP_WEIGHTS_ENV", "ClipTextEncoder"]

CLIP_WEIGHTS_ENV = "VLPART_CLIP_WEIGHTS"


CLIP_RN50_WEIGHTS = WeightSource(
    "CLIP RN50 (openai) weights",
    "clip",
    url=hf_url("timm/resnet50_clip.openai", "open_clip_model.safetensors"),
    filename="RN50-openai.safetensors",
    other_caches=(hf_cached("timm/resnet50_clip.openai", "open_clip_model.safetensors"),),
    hint=f"or pass a local file with --clip-weights PATH or ${CLIP_WEIGHTS_ENV}, or use the "
    "offline 'minilm' encoder or 'precomputed' embeddings",
)
"""The paper's text tower (open_clip's own RN50 ``openai`` file), found by
:func:`vlpart.core.weights.resolve`."""


def _clip_weights(model_name: str, weights: str | None) -> tuple[str, str]:
    """``(pretrained argument for open_clip, identity suffix)``, in this order: the ``weights``
    argument, the ``$VLPART_CLIP_WEIGHTS`` file, then for ``RN50`` the resolver (cache, Hugging
    Face cache, mirror, download) and for other architectures open_clip's own ``openai``
    download."""
    chosen = weights or os.environ.get(CLIP_WEIGHTS_ENV)
    if chosen and named_or_file(chosen, "openai", what="CLIP weights") is not None:
        path = Path(chosen).expanduser()
        if not path.is_file():
            raise MissingFileError(
                f"{chosen}: CLIP weights file not found (from "
                f"{'the clip_weights argument' if weights else '$' + CLIP_WEIGHTS_ENV})"
            )
        stat = path.stat()
        return str(path), f"{chosen}:{stat.st_size}:{int(stat.st_mtime)}"
    if model_name == "RN50":
        return str(resolve(CLIP_RN50_WEIGHTS).path), "openai"
    return "openai", "openai"


class ClipTextEncoder(TextEncoder):
    """open_clip text tower.

    Args:
        model_name: open_clip architecture, ``RN50`` in the paper.
        weights: a local state-dict file (``.bin``, ``.pt`` or ``.safetensors``, e.g.
            ``open_clip_model.safetensors`` of ``timm/resnet50_clip.openai``), ``None`` or
            ``"openai"`` for ``$VLPART_CLIP_WEIGHTS`` or else the released ``openai`` weights
            (RN50: through :func:`vlpart.core.weights.resolve` into ``$VLPART_CACHE/clip``; other
            architectures: open_clip's download), or ``"random"`` for an untrained tower (tests
            only: its embeddings mean nothing).
        cache_dir: embedding cache directory, or None for no cache.
        device: where the text tower runs.

    Raises:
        FileNotFoundError: a weights file that does not exist, or RN50 weights that are not
            cached while offline (the message says what to download and where to put it).
        RuntimeError: the weights could not be downloaded; the message says how to supply a file.
    """

    def __init__(
        self,
        model_name: str = "RN50",
        weights: str | None = None,
        *,
        cache_dir: str | Path | None = None,
        device: str = "cpu",
    ) -> None:
        super().__init__(cache_dir=cache_dir)
        try:
            import open_clip
        except ImportError:
            raise MissingDependencyError(
                "the clip text encoder needs open_clip: pip install 'vlpart[clip]'"
            ) from None
        source, tag = (
            (None, "random") if weights == "random" else _clip_weights(model_name, weights)
        )
        try:
            # OpenAI's CLIP models use QuickGELU; a bare file path does not tell open_clip so.
            model = open_clip.create_model(
                model_name,
                pretrained=source,
                force_quick_gelu=True,
                device=device,
                weights_only=True,
            )
        except (OSError, RuntimeError) as err:
            if source != "openai":
                raise
            raise RunError(
                f"could not download CLIP {model_name} 'openai' weights ({err}). Offline, pass a "
                f"local file with --clip-weights PATH or ${CLIP_WEIGHTS_ENV}, or use the offline "
                "'minilm' encoder or 'precomputed' embeddings."
            ) from None
        model.visual = None  # only the text tower is used; free the image tower
        self._model = model.eval()
        self._tokenizer = open_clip.get_tokenizer(model_name)
        self._device = device
        self.dim = int(model.text_projection.shape[1])
        self.identity = f"clip:{model_name}:{tag}"

    def _encode(self, prompts: Sequence[str]) -> torch.Tensor:
        tokens = self._tokenizer(list(prompts)).to(self._device)
        return self._model.encode_text(tokens)
