"""Balanced plans: coverage, step agreement, budgets, quality; prefetch; collation."""

import threading
import time

import numpy as np
import pytest

from torchrec_ascend.balance import (
    BalancedSampler,
    BalancedTrainBatches,
    Prefetcher,
    SampleCostModel,
    empty_batch,
    imbalance,
    pack_by_budget,
    train_lengths,
)
from torchrec_ascend.data import (
    TrainSequences,
    kuairand_like_lengths,
    leave_one_out,
    synthetic_sequence_dataset,
)
from torchrec_ascend.models import ZOO, ExperimentConfig, get_preset


def _squares(lengths):
    return np.asarray(lengths, dtype=np.float64) ** 2


def _all_ranks(lengths, ranks, b, strategy, window=1, epoch=0):
    """Per rank, the list of per-step id arrays iterated by that rank's sampler."""
    out = []
    for r in range(ranks):
        s = BalancedSampler(lengths, _squares, ranks, r, b, strategy, window=window)
        s.set_epoch(epoch)
        out.append([ids for ids in s])
    return out


@pytest.mark.parametrize("strategy", ["fixed", "global", "token_budget"])
@pytest.mark.parametrize(
    "num_samples,ranks,b,window",
    [(1, 4, 2, 1), (2, 4, 2, 1), (5, 4, 2, 1), (37, 3, 4, 2), (100, 4, 3, 4)],
)
def test_every_sample_once_per_epoch_and_ranks_agree(
    strategy, num_samples, ranks, b, window
):
    lengths = np.random.default_rng(num_samples).integers(1, 50, num_samples)
    for epoch in (0, 1):
        per_rank = _all_ranks(lengths, ranks, b, strategy, window, epoch)
        steps = {len(x) for x in per_rank}
        assert len(steps) == 1, f"ranks disagree on the step count: {steps}"
        seen = np.concatenate([ids for rank in per_rank for ids in rank])
        np.testing.assert_array_equal(np.sort(seen), np.arange(num_samples))
        # The simulation plan is what the ranks iterate.
        s = BalancedSampler(lengths, _squares, ranks, 0, b, strategy, window=window)
        s.set_epoch(epoch)
        for step, plan in enumerate(s.iter_plans()):
            for r in range(ranks):
                np.testing.assert_array_equal(plan[r], per_rank[r][step])


def test_tiny_tail_leaves_ranks_empty_but_present():
    per_rank = _all_ranks(np.array([5, 9]), 4, 2, "global")
    assert [len(x) for x in per_rank] == [1, 1, 1, 1]
    assert sorted(len(x[0]) for x in per_rank) == [0, 0, 1, 1]


def test_fixed_plan_is_consecutive_slices_of_the_epoch_order():
    lengths = np.arange(1, 11)
    s = BalancedSampler(lengths, _squares, 2, 1, 3, "fixed")
    order = np.concatenate([np.concatenate(p) for p in s.iter_plans()])
    first = next(iter(s.iter_plans()))
    assert len(first[0]) == len(first[1]) == 3
    np.testing.assert_array_equal(np.sort(order), np.arange(10))


def test_pack_by_budget():
    ids = np.arange(6)
    costs = np.array([3.0, 3, 5, 1, 9, 1])
    batches = pack_by_budget(ids, costs, budget=6.0)
    assert [b.tolist() for b in batches] == [[0, 1], [2, 3], [4], [5]]
    with pytest.raises(ValueError, match="budget"):
        pack_by_budget(ids, costs, 0.0)


def test_token_budget_batches_respect_the_budget():
    lengths = np.random.default_rng(3).integers(1, 60, 500)
    s = BalancedSampler(lengths, _squares, 4, 0, 16, "token_budget")
    costs = _squares(lengths)
    for plan in s.iter_plans():
        for ids in plan:
            assert len(ids) == 1 or costs[ids].sum() <= s.budget + 1e-9


def test_global_plan_balances_kuairand_shaped_costs():
    config = ExperimentConfig(model=ZOO["long"])
    cost = SampleCostModel(config)
    lengths = kuairand_like_lengths(2048, 4096, seed=5)
    costs = cost(lengths)
    means = {}
    for strategy, window in [("fixed", 1), ("global", 1), ("global", 4)]:
        s = BalancedSampler(lengths, cost, 16, 0, 8, strategy, window=window)
        values = [
            imbalance(np.array([costs[ids].sum() for ids in plan]))
            for plan in s.iter_plans()
        ]
        means[strategy, window] = float(np.mean(values))
    assert means["fixed", 1] > 0.03
    assert means["global", 1] < 0.5 * means["fixed", 1]
    assert means["global", 4] < 0.01
    assert means["global", 4] < means["global", 1]


def test_sampler_rejects_bad_arguments():
    lengths = np.array([1, 2, 3])
    with pytest.raises(ValueError, match="rank"):
        BalancedSampler(lengths, _squares, 2, 2, 1)
    with pytest.raises(ValueError, match="local_batch_size"):
        BalancedSampler(lengths, _squares, 2, 0, 0)
    with pytest.raises(ValueError, match="strategy"):
        BalancedSampler(lengths, _squares, 2, 0, 1, "random")
    with pytest.raises(ValueError, match="partition_method"):
        BalancedSampler(lengths, _squares, 2, 0, 1, partition_method="x")
    with pytest.raises(ValueError, match="1-D integer"):
        BalancedSampler(lengths.astype(float), _squares, 2, 0, 1)
    with pytest.raises(ValueError, match="window"):
        BalancedSampler(lengths, _squares, 2, 0, 1, window=0)


def test_prefetcher_keeps_order_overlaps_and_reraises():
    def slow(n, pause):
        for k in range(n):
            time.sleep(pause)
            yield k

    with Prefetcher(slow(6, 0.03)) as items:
        got = []
        for item in items:
            time.sleep(0.06)  # the "training step"
            got.append(item)
    assert got == list(range(6))
    # Only the first item cannot be hidden behind a step.
    assert sum(items.wait_seconds[1:]) < 0.5 * sum(items.produce_seconds[1:])

    def broken():
        yield 1
        raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        with Prefetcher(broken()) as items:
            list(items)
    with pytest.raises(ValueError, match="depth"):
        Prefetcher([], depth=0)


def test_prefetcher_thread_stops_when_consumer_leaves_early():
    before = threading.active_count()
    with Prefetcher(iter(range(1000))) as items:
        next(iter(items))
    time.sleep(0.1)
    assert threading.active_count() <= before


def test_balanced_batches_collate_every_training_example():
    data = synthetic_sequence_dataset(23, 40, np.arange(3, 26), seed=0)
    split = leave_one_out(data)
    dataset = TrainSequences(split, max_seq_len=8)
    lengths = train_lengths(dataset)
    np.testing.assert_array_equal(
        lengths, [len(dataset[i].items) for i in range(len(dataset))]
    )
    cost = SampleCostModel(get_preset("smoke"))
    users, tokens = [], 0
    for rank in range(3):
        sampler = BalancedSampler(lengths, cost, 3, rank, 4, "global", window=2)
        batches = BalancedTrainBatches(dataset, sampler, prefetch=1)
        got = list(batches)
        assert len(got) == len(batches) == 2
        for batch in got:
            users += batch.user_index.tolist()
            tokens += batch.num_tokens
            assert batch.timestamps is not None
            assert batch.targets.numel() == batch.num_tokens
    assert sorted(users) == sorted(dataset.user_index.tolist())
    assert tokens == int(lengths.sum())


def test_empty_batch_shape():
    batch = empty_batch(with_timestamps=True)
    assert batch.batch_size == 0 and batch.num_tokens == 0
    assert batch.timestamps.numel() == 0 and batch.offsets.tolist() == [0]
    assert empty_batch(with_timestamps=False).timestamps is None
