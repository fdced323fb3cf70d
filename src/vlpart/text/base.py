"""The text-encoder interface and its on-disk embedding cache."""

from __future__ import annotations

import hashlib
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vlpart.core.errors import InputTypeError
from vlpart.core.fileio import atomic_write

__all__ = ["EmbeddingCache", "TextEncoder", "default_cache_dir"]


def default_cache_dir() -> Path:
    """``$VLPART_CACHE/text`` if set, else ``~/.cache/vlpart/text``."""
    root = os.environ.get("VLPART_CACHE") or Path.home() / ".cache" / "vlpart"
    return Path(root) / "text"


class EmbeddingCache:
    """One ``.npy`` file per (encoder identity, prompt), written atomically.

    Keys are hashes, so any prompt text is safe as a key and concurrent writers (DDP ranks, demo
    requests) never see a half-written file.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def _path(self, identity: str, prompt: str) -> Path:
        enc = hashlib.sha256(identity.encode()).hexdigest()[:16]
        key = hashlib.sha256(prompt.encode()).hexdigest()[:32]
        return self.root / enc / f"{key}.npy"

    def get(self, identity: str, prompt: str) -> np.ndarray | None:
        path = self._path(identity, prompt)
        try:
            return np.load(path)
        except (FileNotFoundError, ValueError, EOFError, OSError):
            return None  # missing or unreadable entries are recomputed

    def put(self, identity: str, prompt: str, embedding: np.ndarray) -> None:
        def save(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                np.save(f, embedding)

        atomic_write(self._path(identity, prompt), save)


class TextEncoder(ABC):
    """Turns prompts into L2-normalised embeddings.

    Subclasses implement :meth:`_encode` and set :attr:`identity` (a string that changes whenever
    the embeddings would: model name, weights, file hash) and :attr:`dim`.
    """

    identity: str
    dim: int

    def __init__(self, *, cache_dir: str | Path | None = None, batch_size: int = 64) -> None:
        self.cache = EmbeddingCache(cache_dir) if cache_dir is not None else None
        self.batch_size = batch_size

    @abstractmethod
    def _encode(self, prompts: Sequence[str]) -> torch.Tensor:
        """Embed a batch: ``Tensor[N, D]``, any norm, any float dtype."""

    @torch.inference_mode()
    def encode(self, prompts: Sequence[str]) -> torch.Tensor:
        """Embed ``prompts``.

        Returns:
            Tensor[N, D], float32, CPU, rows of unit L2 norm, in the order of ``prompts``.
        """
        if isinstance(prompts, str):
            raise InputTypeError("encode() takes a list of prompts, not a single string")
        rows: list[np.ndarray | None] = [
            self.cache.get(self.identity, p) if self.cache else None for p in prompts
        ]
        missing = [i for i, r in enumerate(rows) if r is None]
        for start in range(0, len(missing), self.batch_size):
            idx = missing[start : start + self.batch_size]
            out = self._encode([prompts[i] for i in idx]).float().cpu()
            out = F.normalize(out, dim=-1).numpy()
            for i, vec in zip(idx, out, strict=True):
                rows[i] = vec
                if self.cache:
                    self.cache.put(self.identity, prompts[i], vec)
        if not rows:
            return torch.zeros((0, self.dim))
        return torch.from_numpy(np.stack(rows)).float()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.identity!r}, dim={self.dim})"
