"""CLIP text tower through open_clip: the paper's encoder (``RN50`` / ``openai``, D=1024)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

from vlpart.text.base import TextEncoder

__all__ = ["CLIP_WEIGHTS_ENV", "ClipTextEncoder"]

CLIP_WEIGHTS_ENV = "VLPART_CLIP_WEIGHTS"


def _resolve_clip_weights(weights: str | None) -> str:
    """Where the CLIP weights come from, in this order: the ``weights`` argument, the
    ``$VLPART_CLIP_WEIGHTS`` file, the ``openai`` release on the hub."""
    chosen = weights or os.environ.get(CLIP_WEIGHTS_ENV) or "openai"
    if chosen != "openai" and not Path(chosen).is_file():
        raise FileNotFoundError(
            f"{chosen}: CLIP weights file not found (from "
            f"{'the clip_weights argument' if weights else '$' + CLIP_WEIGHTS_ENV})"
        )
    return chosen


class ClipTextEncoder(TextEncoder):
    """open_clip text tower.

    Args:
        model_name: open_clip architecture, ``RN50`` in the paper.
        weights: ``"openai"`` (download), a local state-dict file (``.bin``, ``.pt`` or
            ``.safetensors``, e.g. ``open_clip_model.safetensors`` of
            ``timm/resnet50_clip.openai``),
            ``None`` to use ``$VLPART_CLIP_WEIGHTS`` or else ``"openai"``, or ``"random"`` for an
            untrained tower (tests only: its embeddings mean nothing).
        cache_dir: embedding cache directory, or None for no cache.
        device: where the text tower runs.

    Raises:
        FileNotFoundError: a weights file that does not exist.
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
            raise ImportError(
                "the clip text encoder needs open_clip: pip install 'vlpart[clip]'"
            ) from None
        source = None if weights == "random" else _resolve_clip_weights(weights)
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
            raise RuntimeError(
                f"could not download CLIP {model_name} 'openai' weights ({err}). Offline, pass a "
                f"local file with --clip-weights PATH or ${CLIP_WEIGHTS_ENV}, or use the offline "
                "'minilm' encoder or 'precomputed' embeddings."
            ) from None
        model.visual = None  # only the text tower is used; free the image tower
        self._model = model.eval()
        self._tokenizer = open_clip.get_tokenizer(model_name)
        self._device = device
        self.dim = int(model.text_projection.shape[1])
        self.identity = f"clip:{model_name}:{source if source else 'random'}"
        if source not in (None, "openai"):
            stat = Path(source).stat()
            self.identity += f":{stat.st_size}:{int(stat.st_mtime)}"

    def _encode(self, prompts: Sequence[str]) -> torch.Tensor:
        tokens = self._tokenizer(list(prompts)).to(self._device)
        return self._model.encode_text(tokens)
