"""Multi-dataset batch sampling with per-dataset ratios and LVIS-style repeat factors.

Every batch comes from one dataset, drawn with probability proportional to its ratio; within a
dataset, images are visited in shuffled passes where image ``i`` appears ``r_i`` times on
average (stochastic rounding of its repeat factor). The whole order is a function of
``(seed, epoch)``: all DDP ranks draw the same dataset at each step and take disjoint slices of
one global batch, and skipping the first ``start_batch`` batches resumes an interrupted epoch
exactly.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

from vlpart.core.errors import InputError
from vlpart.data.datasets import SampleKey

__all__ = ["LVIS_REPEAT_THRESH", "MultiDatasetBatchSampler", "repeat_factors"]

# Repeat-factor threshold t of LVIS (Gupta et al., CVPR 2019), used by VLPart's LVIS/PACO configs.
LVIS_REPEAT_THRESH = 0.001
# Entropy words that keep the dataset-choice stream apart from the per-dataset streams.
_CHOICE_STREAM = 0
_DATASET_STREAM = 1
_MAX_SEED = 2**31 - 1


def repeat_factors(image_category_ids: Sequence[Sequence[int]], *, thresh: float) -> np.ndarray:
    """LVIS repeat factor of every image.

    With ``f_c`` the fraction of images containing category ``c``, the category factor is
    ``r_c = max(1, sqrt(thresh / f_c))`` and an image's factor is the largest ``r_c`` over its
    categories (1 for an image without any).

    Args:
        image_category_ids: per image, the categories it contains (any hashable ids).
        thresh: the frequency threshold ``t`` (``LVIS_REPEAT_THRESH`` in the paper's configs).

    Returns:
        np.ndarray[num_images], float64, every value >= 1.
    """
    if thresh <= 0:
        raise InputError(f"repeat-factor threshold must be positive, got {thresh}")
    num_images = len(image_category_ids)
    counts: dict[int, int] = {}
    for cats in image_category_ids:
        for c in set(cats):
            counts[c] = counts.get(c, 0) + 1
    cat_factor = {c: max(1.0, math.sqrt(thresh / (n / num_images))) for c, n in counts.items()}
    return np.array(
        [max((cat_factor[c] for c in cats), default=1.0) for cats in image_category_ids],
        dtype=np.float64,
    )


class MultiDatasetBatchSampler(Sampler[list[SampleKey]]):
    """Yields batches of :class:`SampleKey` for a :class:`~vlpart.data.datasets.MultiDataset`.

    Args:
        image_repeat_factors: per dataset, one factor >= 1 per image (``np.ones(len(ds))`` for
            plain shuffling, :func:`repeat_factors` for LVIS-style sampling).
        batch_sizes: images per batch and rank, per dataset.
        ratios: relative frequency of each dataset's batches (default: equal).
        num_batches: batches per epoch; default: enough for the epoch to draw about as many
            images, over all ranks, as the datasets hold after repeat factors.
        seed: base seed of the order and of the per-sample transform seeds.
        rank: this process's rank in ``[0, world_size)``.
        world_size: number of DDP processes sharing each global batch.
    """

    def __init__(
        self,
        image_repeat_factors: Sequence[Sequence[float] | np.ndarray],
        *,
        batch_sizes: Sequence[int],
        ratios: Sequence[float] | None = None,
        num_batches: int | None = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.factors = [np.asarray(f, dtype=np.float64) for f in image_repeat_factors]
        num_sets = len(self.factors)
        ratios = [1.0] * num_sets if ratios is None else list(ratios)
        if num_sets == 0:
            raise InputError("the sampler needs at least one dataset")
        if len(batch_sizes) != num_sets or len(ratios) != num_sets:
            raise InputError(
                f"{num_sets} datasets but {len(batch_sizes)} batch sizes and {len(ratios)} ratios"
            )
        for i, f in enumerate(self.factors):
            if f.ndim != 1 or len(f) == 0:
                raise InputError(f"dataset {i} has no images to sample")
            if not np.all(f >= 1.0):
                raise InputError(f"dataset {i}: repeat factors must be >= 1, got {f.min()}")
        if min(batch_sizes) <= 0:
            raise InputError(f"batch sizes must be positive, got {list(batch_sizes)}")
        if min(ratios) < 0 or sum(ratios) <= 0:
            raise InputError(f"ratios must be >= 0 with a positive sum, got {ratios}")
        if world_size <= 0 or not 0 <= rank < world_size:
            raise InputError(f"rank {rank} is not in [0, world_size={world_size})")
        self.batch_sizes = [int(b) for b in batch_sizes]
        self.probs = np.asarray(ratios, dtype=np.float64) / sum(ratios)
        self.seed, self.rank, self.world_size = seed, rank, world_size
        if num_batches is None:
            images = sum(float(f.sum()) for f in self.factors)
            per_batch = float(self.probs @ np.asarray(self.batch_sizes)) * world_size
            num_batches = math.ceil(images / per_batch)
        if num_batches <= 0:
            raise InputError(f"num_batches must be positive, got {num_batches}")
        self.num_batches = num_batches
        self.epoch = 0
        self.start_batch = 0

    def set_epoch(self, epoch: int, *, start_batch: int = 0) -> None:
        """Select the epoch to iterate; skip its first ``start_batch`` batches (to resume)."""
        if not 0 <= start_batch <= self.num_batches:
            raise InputError(f"start_batch {start_batch} is not in [0, {self.num_batches}]")
        self.epoch, self.start_batch = epoch, start_batch

    def __len__(self) -> int:
        return self.num_batches - self.start_batch

    def __iter__(self) -> Iterator[list[SampleKey]]:
        choice_rng = np.random.default_rng([self.seed, self.epoch, _CHOICE_STREAM])
        choices = choice_rng.choice(len(self.factors), size=self.num_batches, p=self.probs)
        streams = [self._stream(d) for d in range(len(self.factors))]
        for b, d in enumerate(choices.tolist()):
            size = self.batch_sizes[d]
            global_batch = [next(streams[d]) for _ in range(size * self.world_size)]
            if b >= self.start_batch:
                yield global_batch[self.rank * size : (self.rank + 1) * size]

    def _stream(self, d: int) -> Iterator[SampleKey]:
        """Endless keys of dataset ``d``: shuffled passes with stochastically rounded repeats."""
        factors = self.factors[d]
        whole, frac = np.floor(factors), factors - np.floor(factors)
        for pass_index in itertools.count():
            rng = np.random.default_rng([self.seed, self.epoch, _DATASET_STREAM, d, pass_index])
            counts = (whole + (rng.random(len(factors)) < frac)).astype(np.int64)
            order = rng.permutation(np.repeat(np.arange(len(factors)), counts))
            seeds = rng.integers(0, _MAX_SEED, size=len(order))
            for index, seed in zip(order.tolist(), seeds.tolist(), strict=True):
                yield SampleKey(d, index, seed)
