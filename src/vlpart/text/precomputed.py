"""Embeddings read from a matrix on disk (e.g. the released CLIP RN50 ``.npy`` files)."""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from vlpart.core.errors import InputError, MissingFileError, UnknownNameError
from vlpart.text.base import TextEncoder

__all__ = ["PrecomputedTextEncoder"]


class PrecomputedTextEncoder(TextEncoder):
    """Looks prompts up in a fixed matrix.

    Args:
        embeddings: ``[N, D]`` rows, any norm (normalised on output).
        prompts: the ``N`` prompts the rows embed, in row order.
        identity: names the source (defaults to a hash of the matrix).
    """

    def __init__(
        self,
        embeddings: np.ndarray | torch.Tensor,
        prompts: Sequence[str],
        *,
        identity: str | None = None,
    ) -> None:
        super().__init__(cache_dir=None)
        matrix = torch.as_tensor(np.asarray(embeddings, dtype=np.float32))
        if matrix.ndim != 2 or matrix.shape[0] != len(prompts):
            raise InputError(
                f"precomputed embeddings have shape {tuple(matrix.shape)} but {len(prompts)} "
                "prompts were given; expected one row per prompt"
            )
        self._matrix = matrix
        self._rows = {p: i for i, p in enumerate(prompts)}
        self.dim = matrix.shape[1]
        self.identity = (
            identity or "precomputed:" + hashlib.sha256(matrix.numpy().tobytes()).hexdigest()[:16]
        )

    @classmethod
    def from_npy(cls, path: str | Path, prompts: Sequence[str]) -> PrecomputedTextEncoder:
        """Load a ``[N, D]`` ``.npy`` file whose row ``i`` embeds ``prompts[i]``."""
        path = Path(path)
        if not path.is_file():
            raise MissingFileError(f"{path}: embeddings file not found")
        try:
            matrix = np.load(path, allow_pickle=False)
        except ValueError as err:
            raise InputError(f"{path}: not a readable .npy matrix ({err})") from None
        if matrix.ndim != 2 or matrix.shape[0] != len(prompts):
            raise InputError(
                f"{path}: has shape {matrix.shape}, expected {len(prompts)} rows (one per "
                "category of the vocabulary, in its order)"
            )
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        return cls(matrix, prompts, identity=f"precomputed:{path.name}:{digest}")

    def _encode(self, prompts: Sequence[str]) -> torch.Tensor:
        rows = []
        for p in prompts:
            if p not in self._rows:
                close = difflib.get_close_matches(p, list(self._rows), n=2)
                hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
                raise UnknownNameError(
                    f"prompt {p!r} is not in the precomputed embeddings {self.identity}{hint} "
                    "(precomputed embeddings only cover the vocabulary they were made for)"
                )
            rows.append(self._rows[p])
        return self._matrix[rows]
