"""Multi-dataset batch sampler: ratios, one dataset per batch, repeat factors, resume, shards."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from vlpart.data.sampler import MultiDatasetBatchSampler, repeat_factors


def test_repeat_factors_follow_the_lvis_formula():
    # 10 images: "rare" in image 0 only (f = 0.1), "common" in all (f = 1), image 9 has nothing
    cats = [["rare", "common"]] + [["common"]] * 8 + [[]]
    factors = repeat_factors(cats, thresh=0.4)
    assert factors[0] == pytest.approx(math.sqrt(0.4 / 0.1))  # = 2, the max over its categories
    assert factors[1:9].tolist() == [1.0] * 8  # sqrt(0.4 / 1) < 1 -> 1
    assert factors[9] == 1.0
    half = repeat_factors([[1], [1], [2], [3]], thresh=1.0)  # f = 0.5, 0.25, 0.25
    np.testing.assert_allclose(half, [math.sqrt(2), math.sqrt(2), 2.0, 2.0])
    with pytest.raises(ValueError, match="threshold"):
        repeat_factors(cats, thresh=0.0)


def test_ratios_respected_and_each_batch_from_one_dataset():
    sampler = MultiDatasetBatchSampler(
        [np.ones(50), np.ones(20)], batch_sizes=[2, 4], ratios=[1, 3], num_batches=4000, seed=3
    )
    counts = Counter()
    for batch in sampler:
        sources = {key.dataset for key in batch}
        assert len(sources) == 1
        (source,) = sources
        assert len(batch) == (2, 4)[source]
        assert all(0 <= key.index < (50, 20)[source] for key in batch)
        counts[source] += 1
    assert len(sampler) == 4000
    assert abs(counts[1] / 4000 - 0.75) < 0.03


def test_repeat_factors_change_sampling_frequency():
    factors = np.ones(20)
    factors[0], factors[1] = 3.0, 1.5
    sampler = MultiDatasetBatchSampler([factors], batch_sizes=[4], num_batches=3000, seed=0)
    seen = Counter(key.index for batch in sampler for key in batch)
    plain = np.mean([seen[i] for i in range(2, 20)])
    assert seen[0] / plain == pytest.approx(3.0, rel=0.1)
    assert seen[1] / plain == pytest.approx(1.5, rel=0.1)


def test_order_is_deterministic_by_seed_and_epoch():
    def order(seed, epoch):
        sampler = MultiDatasetBatchSampler(
            [np.ones(30), np.ones(7)], batch_sizes=[3, 2], ratios=[2, 1], seed=seed
        )
        sampler.set_epoch(epoch)
        return list(sampler)

    assert order(0, 0) == order(0, 0)
    assert order(0, 0) != order(0, 1)
    assert order(0, 0) != order(1, 0)
    # default epoch length: about as many images as the datasets hold
    sampler = MultiDatasetBatchSampler([np.ones(30), np.ones(7)], batch_sizes=[3, 2], ratios=[2, 1])
    assert sampler.num_batches == math.ceil(37 / (2 / 3 * 3 + 1 / 3 * 2))
    # every key carries its own transform seed; seeds differ between samples
    seeds = [key.seed for batch in order(0, 0) for key in batch]
    assert len(set(seeds)) > 0.95 * len(seeds)


def test_resume_reproduces_the_rest_of_the_epoch():
    def make():
        return MultiDatasetBatchSampler(
            [repeat_factors([[0], [1], [1], [1]] * 5, thresh=0.5), np.ones(9)],
            batch_sizes=[2, 3],
            ratios=[1, 1],
            num_batches=60,
            seed=11,
        )

    full = make()
    full.set_epoch(4)
    expected = list(full)
    resumed = make()
    resumed.set_epoch(4, start_batch=23)
    assert len(resumed) == 37
    assert list(resumed) == expected[23:]
    with pytest.raises(ValueError, match="start_batch"):
        resumed.set_epoch(0, start_batch=61)


def test_shards_are_disjoint_and_cover_each_pass():
    world_size, batch_size, size = 2, 2, 16  # one pass = 4 global batches
    shards = []
    for rank in range(world_size):
        sampler = MultiDatasetBatchSampler(
            [np.ones(size)],
            batch_sizes=[batch_size],
            num_batches=8,
            seed=5,
            rank=rank,
            world_size=world_size,
        )
        sampler.set_epoch(2)
        shards.append(list(sampler))
    for step in range(8):
        a = {k.index for k in shards[0][step]}
        b = {k.index for k in shards[1][step]}
        assert not a & b
    for start in (0, 4):  # each pass over the dataset is split without overlap
        indices = [
            k.index for rank in range(2) for batch in shards[rank][start : start + 4] for k in batch
        ]
        assert sorted(indices) == list(range(size))
    single = MultiDatasetBatchSampler([np.ones(size)], batch_sizes=[4], num_batches=8, seed=5)
    single.set_epoch(2)
    for step, batch in enumerate(single):  # ranks split the same global batch
        assert batch == shards[0][step] + shards[1][step]


def test_invalid_arguments():
    with pytest.raises(ValueError, match="2 datasets but 1 batch sizes"):
        MultiDatasetBatchSampler([np.ones(3), np.ones(3)], batch_sizes=[1])
    with pytest.raises(ValueError, match=">= 1"):
        MultiDatasetBatchSampler([np.full(3, 0.5)], batch_sizes=[1])
    with pytest.raises(ValueError, match="no images"):
        MultiDatasetBatchSampler([np.ones(0)], batch_sizes=[1])
    with pytest.raises(ValueError, match="rank 2"):
        MultiDatasetBatchSampler([np.ones(3)], batch_sizes=[1], rank=2, world_size=2)
    with pytest.raises(ValueError, match="ratios"):
        MultiDatasetBatchSampler([np.ones(3)], batch_sizes=[1], ratios=[0])
