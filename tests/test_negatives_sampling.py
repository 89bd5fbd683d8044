"""Background host sampling of negative ids, the sharing plan and the config."""

import threading
import time

import pytest
import torch

from torchrec_ascend.models import LossConfig
from torchrec_ascend.negatives import (
    BackgroundNegativeSampler,
    build_sharing_plan,
    sample_valid_positions,
)
from torchrec_ascend.train.negatives import UniformNegativeSampler


class _Batch:
    def __init__(self, lengths):
        self.lengths = torch.tensor(lengths)


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64])
def test_valid_positions_only(dtype):
    lengths = torch.tensor([3, 0, 1, 7], dtype=dtype)
    gen = torch.Generator().manual_seed(0)
    ids = sample_valid_positions(lengths, 5, 20, gen)
    assert ids.shape == (11, 5) and ids.dtype == torch.int64
    assert int(ids.min()) >= 1 and int(ids.max()) <= 20
    assert sample_valid_positions(torch.zeros(2, dtype=dtype), 5, 20).shape == (0, 5)
    with pytest.raises(ValueError, match="non-negative"):
        sample_valid_positions(torch.tensor([2, -1]), 5, 20)


def test_background_sampler_repeats_inline_sampling_in_order():
    batches = [_Batch(n) for n in ([2, 3], [1], [0, 0], [4, 4, 4], [5])]
    inline = UniformNegativeSampler(50, 8, shared=False, seed=7)
    expected = [inline.sample_batch(b) for b in batches]
    background = UniformNegativeSampler(50, 8, shared=False, seed=7).in_background(
        batches
    )
    got = list(background)
    assert [b for b, _ in got] == batches
    for (_, ids), want in zip(got, expected):
        assert torch.equal(ids, want)
    stats = background.stats
    assert stats.batches == 5 and stats.ids == sum(e.numel() for e in expected)
    assert stats.sample_seconds > 0


def test_sampling_runs_while_the_consumer_works():
    # The worker keeps `depth` batches ready while the step runs: after a slow
    # first step, the next items are waiting and cost no sampling time to take.
    def slow_sample(batch):
        time.sleep(0.05)
        return torch.zeros(int(batch.lengths.sum()), 2, dtype=torch.long)

    sampler = BackgroundNegativeSampler([_Batch([1])] * 3, slow_sample, depth=2)
    iterator = iter(sampler)
    next(iterator)
    time.sleep(0.2)  # the "training step"
    waited = sampler.stats.wait_seconds
    start = time.perf_counter()
    next(iterator)
    next(iterator)
    assert time.perf_counter() - start < 0.04
    assert sampler.stats.wait_seconds - waited < 0.04
    assert sampler.stats.sample_seconds >= 0.14


def test_worker_errors_reach_the_consumer_and_break_stops_the_thread():
    def failing(batch):
        raise RuntimeError("sampler exploded")

    with pytest.raises(RuntimeError, match="sampler exploded"):
        list(BackgroundNegativeSampler([_Batch([1])], failing))

    before = threading.active_count()
    sampler = UniformNegativeSampler(10, 2, shared=False, seed=0)
    for _ in sampler.in_background([_Batch([2])] * 50, depth=1):
        break
    assert threading.active_count() == before


def test_shared_sampler_draws_one_set():
    sampler = UniformNegativeSampler(10, 6, shared=True, seed=0)
    assert sampler.sample_batch(_Batch([3, 4])).shape == (6,)


@pytest.mark.parametrize(
    "num_tokens,expansion", [(1, 3), (2, 2), (5, 5), (23, 3), (40, 4)]
)
def test_sharing_plan_is_a_shuffled_cyclic_lending(num_tokens, expansion):
    plan = build_sharing_plan(
        num_tokens, expansion, generator=torch.Generator().manual_seed(1)
    )
    slots = min(expansion, num_tokens)
    assert plan.users.shape == plan.lenders.shape == (num_tokens, slots)
    tokens = torch.arange(num_tokens)
    assert torch.equal(plan.users[:, 0], tokens)
    assert torch.equal(plan.lenders[:, 0], tokens)
    for m in range(slots):
        # Every position lends once per slot, and users/lenders are inverse maps.
        assert torch.equal(plan.lenders[:, m].sort().values, tokens)
        assert torch.equal(plan.users[plan.lenders[:, m], m], tokens)
    # Each token borrows from k - 1 distinct other tokens.
    for row in plan.lenders.tolist():
        assert len(set(row)) == slots


def test_sharing_plan_is_redrawn_and_not_neighbours():
    gen = torch.Generator().manual_seed(0)
    first = build_sharing_plan(64, 2, generator=gen).lenders[:, 1]
    second = build_sharing_plan(64, 2, generator=gen).lenders[:, 1]
    assert not torch.equal(first, second)
    # A fixed concatenation order would lend from the next position.
    assert (first == torch.arange(64).add(1) % 64).float().mean() < 0.2


def test_loss_config_switches_are_validated():
    LossConfig(negative_dtype="bfloat16", logit_sharing=2, segment_size=100)
    with pytest.raises(ValueError, match="negative_dtype"):
        LossConfig(negative_dtype="half")
    with pytest.raises(ValueError, match="segment_size"):
        LossConfig(segment_size=0)
    with pytest.raises(ValueError, match="logit_sharing"):
        LossConfig(logit_sharing=0)
    with pytest.raises(ValueError, match="per-token negatives"):
        LossConfig(logit_sharing=2, shared_negatives=True)
