"""Deterministic training data: the epoch order is a function of (seed, epoch), the batches of each rank
are disjoint and resume mid-epoch, and samples are pure functions of (seed, epoch, index)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from mmv_torch.train.sampling import EpochBatchSampler, SeededSamples, TrainSource, epoch_order
from tests.helpers.train_worker_ddp import RandomClips


def test_epoch_order_is_a_function_of_seed_and_epoch():
    src = [TrainSource("a", 0, 50)]
    a, b = epoch_order(src, 3, 1), epoch_order(src, 3, 1)
    assert np.array_equal(a, b) and sorted(a.tolist()) == list(range(50))
    assert not np.array_equal(a, epoch_order(src, 3, 2))
    assert not np.array_equal(a, epoch_order(src, 4, 1))


def test_epoch_order_mixes_sources_by_weight():
    src = [TrainSource("a", 0, 100), TrainSource("b", 100, 20, weight=3.0)]
    order = epoch_order(src, 0, 0)
    assert len(order) == 120
    from_b = order >= 100
    assert from_b.sum() == 90  # 3/4 of the epoch, the 20 rows of b repeated
    assert set(order[from_b].tolist()) == set(range(100, 120))
    assert len(set(order[~from_b].tolist())) == 30


def test_sampler_shards_ranks_and_resumes_mid_epoch():
    src = [TrainSource("a", 0, 22)]
    ranks = [EpochBatchSampler(src, 2, seed=5, rank=r, world=2) for r in range(2)]
    assert ranks[0].batches_per_epoch == 5
    it = [iter(s) for s in ranks]
    epoch0 = [[next(i) for _ in range(5)] for i in it]
    keys = [k for r in epoch0 for b in r for k in b]
    assert all(e == 0 for e, _ in keys) and len({i for _, i in keys}) == 20  # disjoint across ranks
    nxt = next(it[0])
    assert {e for e, _ in nxt} == {1}
    # Starting at (epoch, batch) continues the same stream.
    late = EpochBatchSampler(src, 2, seed=5, rank=0, world=2, start_epoch=0, start_batch=3)
    li = iter(late)
    assert [next(li), next(li), next(li)] == epoch0[0][3:] + [nxt]
    assert ranks[0].position(13) == (2, 3)
    with pytest.raises(ValueError, match="fewer than train.batch_size"):
        EpochBatchSampler(src, 8, seed=0, rank=0, world=4)


def test_seeded_samples_are_pure_and_leave_the_global_rng_alone():
    ds = SeededSamples(RandomClips(6), seed=11)
    torch.manual_seed(0)
    before = torch.get_rng_state()
    a = ds[(2, 3)]
    assert torch.equal(torch.get_rng_state(), before)
    torch.rand(5)
    random.random()
    b = ds[(2, 3)]
    assert torch.equal(a["video"], b["video"]) and torch.equal(a["audio"], b["audio"])
    c = ds[(3, 3)]  # another epoch: another augmentation of the same clip
    assert not torch.equal(a["video"], c["video"])
