"""Tests of examples, jagged batches, collate functions and loaders."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from torchrec_ascend.data import (
    ITEM_KEY,
    EvalSequences,
    SequenceBatch,
    TrainSequences,
    collate_eval,
    collate_train,
    leave_one_out,
    load_dataset,
    make_eval_example,
    make_eval_loader,
    make_train_example,
    make_train_loader,
    synthetic_sequence_dataset,
)

LENGTHS = np.array([1, 2, 3, 4, 5, 6, 9, 12, 30, 3, 17, 2, 25, 8, 11, 40, 3, 5])


@pytest.fixture(scope="module")
def split():
    ds = synthetic_sequence_dataset(len(LENGTHS), 60, LENGTHS, seed=11, name="toy")
    return leave_one_out(ds)


@pytest.fixture(scope="module")
def split_no_times():
    ds = synthetic_sequence_dataset(
        len(LENGTHS), 60, LENGTHS, seed=12, with_timestamps=False
    )
    return leave_one_out(ds)


def _naive_train(split, users, max_seq_len):
    """Values, lengths, targets, times, query times built one user at a time."""
    values, lengths, targets, times, query = [], [], [], [], []
    for u in users:
        seq = split.train[u].tolist()[-(max_seq_len + 1) :]
        values += seq[:-1]
        targets += seq[1:]
        lengths.append(len(seq) - 1)
        if split.train_timestamps is not None:
            ts = split.train_timestamps[u].tolist()[-(max_seq_len + 1) :]
            times += ts[:-1]
            query += ts[1:]
    return values, lengths, targets, times, query


def _naive_eval(es, positions, max_seq_len):
    values, lengths, targets, times, query = [], [], [], [], []
    for e in positions:
        hist = es.histories[e].tolist()[-max_seq_len:]
        values += hist
        lengths.append(len(hist))
        targets.append(int(es.targets[e]))
        if es.history_timestamps is not None:
            ts = es.history_timestamps[e].tolist()[-max_seq_len:]
            times += ts
            query += ts[1:] + [int(es.target_timestamps[e])]
    return values, lengths, targets, times, query


def _check_batch_structure(batch: SequenceBatch, eval_batch: bool):
    kjt = batch.features
    assert kjt.keys() == [ITEM_KEY]
    for t in (kjt.values(), kjt.lengths(), batch.targets, batch.user_index):
        assert t.dtype == torch.int64
    assert batch.batch_size == len(batch.lengths) == len(batch.user_index)
    assert batch.num_tokens == int(batch.lengths.sum())
    assert batch.offsets.dtype == torch.int64
    assert batch.offsets.tolist() == [0, *np.cumsum(batch.lengths.tolist()).tolist()]
    expected_targets = batch.batch_size if eval_batch else batch.num_tokens
    assert batch.targets.shape == (expected_targets,)
    if batch.timestamps is not None:
        assert batch.timestamps.shape == (batch.num_tokens,)
        assert batch.query_timestamps.shape == (batch.num_tokens,)
        assert batch.timestamps.dtype == batch.query_timestamps.dtype == torch.int64


@pytest.mark.parametrize("max_seq_len", [1, 3, 8, 100])
def test_train_batches_match_naive_loop(split, max_seq_len):
    loader = make_train_loader(split, max_seq_len, batch_size=4, seed=5, epoch=0)
    for batch in loader:
        _check_batch_structure(batch, eval_batch=False)
        users = batch.user_index.tolist()
        values, lengths, targets, times, query = _naive_train(split, users, max_seq_len)
        assert batch.features.values().tolist() == values
        assert batch.lengths.tolist() == lengths
        assert batch.targets.tolist() == targets
        assert batch.timestamps.tolist() == times
        assert batch.query_timestamps.tolist() == query
        assert max(lengths) <= max_seq_len


@pytest.mark.parametrize("which", ["valid", "test"])
@pytest.mark.parametrize("max_seq_len", [1, 4, 50])
def test_eval_batches_match_naive_loop(split, which, max_seq_len):
    es = split.eval_set(which)
    loader = make_eval_loader(split, which, max_seq_len, batch_size=5)
    seen = []
    for batch in loader:
        _check_batch_structure(batch, eval_batch=True)
        start = len(seen)
        positions = range(start, start + batch.batch_size)
        values, lengths, targets, times, query = _naive_eval(es, positions, max_seq_len)
        assert batch.user_index.tolist() == es.user_index[list(positions)].tolist()
        assert batch.features.values().tolist() == values
        assert batch.lengths.tolist() == lengths
        assert batch.targets.tolist() == targets
        assert batch.timestamps.tolist() == times
        assert batch.query_timestamps.tolist() == query
        seen += batch.user_index.tolist()
    assert seen == es.user_index.tolist()  # in order, none dropped


def test_truncation_keeps_most_recent(split):
    u = int(np.argmax(LENGTHS))  # 40 items, train length 38
    example = TrainSequences(split, max_seq_len=5)[
        int(np.flatnonzero(TrainSequences(split, 5).user_index == u)[0])
    ]
    train = split.train[u]
    assert example.items.tolist() == train[-6:-1].tolist()
    assert example.targets.tolist() == train[-5:].tolist()
    assert example.query_timestamps.tolist() == split.train_timestamps[u][-5:].tolist()


def test_eval_query_timestamps_shift(split):
    es = split.test
    e = int(np.flatnonzero(es.user_index == int(np.argmax(LENGTHS)))[0])
    example = EvalSequences(split, "test", max_seq_len=4)[e]
    hist_ts = es.history_timestamps[e]
    assert example.timestamps.tolist() == hist_ts[-4:].tolist()
    assert example.query_timestamps[:-1].tolist() == hist_ts[-3:].tolist()
    assert example.query_timestamps[-1] == es.target_timestamps[e]
    assert example.target == es.targets[e]


def test_training_example_only_for_train_length_two_or_more(split):
    ds = TrainSequences(split, max_seq_len=10)
    expected = [u for u, s in enumerate(split.train) if len(s) >= 2]
    assert ds.user_index.tolist() == expected
    # Train length 1: user with 1 item (whole sequence) and user with 3 items.
    assert 0 not in expected and 2 not in expected and 1 in expected


def test_no_timestamps_give_none(split_no_times):
    batch = next(iter(make_train_loader(split_no_times, 8, 4, seed=0, epoch=0)))
    assert batch.timestamps is None and batch.query_timestamps is None
    batch = next(iter(make_eval_loader(split_no_times, "valid", 8, 4)))
    assert batch.timestamps is None and batch.query_timestamps is None
    moved = batch.to("cpu")
    assert moved.timestamps is None


def test_loader_repeatable_and_covers_each_user_once_per_epoch(split):
    def order(seed, epoch, **kwargs):
        loader = make_train_loader(split, 8, 3, seed=seed, epoch=epoch, **kwargs)
        return [b.user_index.tolist() for b in loader]

    eligible = TrainSequences(split, 8).user_index.tolist()
    first = order(seed=1, epoch=0)
    assert first == order(seed=1, epoch=0)  # same seed and epoch: same batches
    for epoch in range(3):
        flat = [u for b in order(seed=1, epoch=epoch) for u in b]
        assert sorted(flat) == eligible  # each eligible user exactly once
    assert order(seed=1, epoch=1) != first  # epochs are reshuffled
    assert order(seed=2, epoch=0) != first
    unshuffled = [u for b in order(seed=1, epoch=0, shuffle=False) for u in b]
    assert unshuffled == eligible
    dropped = order(seed=1, epoch=0, drop_last=True)
    assert all(len(b) == 3 for b in dropped)
    assert len(dropped) == len(eligible) // 3


def test_batch_to_returns_new_batch(split):
    batch = next(iter(make_train_loader(split, 8, 4, seed=0, epoch=0)))
    moved = batch.to(torch.device("cpu"), non_blocking=True)
    assert moved is not batch
    assert torch.equal(moved.features.values(), batch.features.values())
    assert torch.equal(moved.query_timestamps, batch.query_timestamps)
    assert torch.equal(moved.offsets, batch.offsets)


def test_collate_rejects_empty():
    with pytest.raises(ValueError, match="empty"):
        collate_train([])
    with pytest.raises(ValueError, match="empty"):
        collate_eval([])


def test_max_seq_len_must_be_positive(split):
    with pytest.raises(ValueError, match="max_seq_len"):
        TrainSequences(split, 0)
    with pytest.raises(ValueError, match="max_seq_len"):
        make_eval_loader(split, "test", 0, 4)


def test_movielens_batches_match_naive_loop():
    split = leave_one_out(load_dataset("ml-latest-small"))
    loader = make_train_loader(split, 50, batch_size=128, seed=0, epoch=0)
    total_users = 0
    for batch in loader:
        values, lengths, targets, times, query = _naive_train(
            split, batch.user_index.tolist(), 50
        )
        assert batch.features.values().tolist() == values
        assert batch.targets.tolist() == targets
        assert batch.query_timestamps.tolist() == query
        assert all(q >= t for q, t in zip(query, times))  # targets never precede
        total_users += batch.batch_size
    assert total_users == 610  # every ML user has >= 20 ratings


@settings(max_examples=60, deadline=None)
@given(
    seq=st.lists(st.integers(1, 9), min_size=0, max_size=12),
    max_seq_len=st.integers(1, 6),
)
def test_train_example_properties(seq, max_seq_len):
    items = np.asarray(seq, dtype=np.int64)
    times = np.arange(len(seq), dtype=np.int64) * 10
    example = make_train_example(3, items, times, max_seq_len)
    if len(seq) < 2:
        assert example is None
        return
    n = min(len(seq) - 1, max_seq_len)
    assert example.user_index == 3
    assert len(example.items) == len(example.targets) == n
    assert example.items.tolist() + [seq[-1]] == seq[-(n + 1) :]
    assert example.targets.tolist() == seq[-n:]
    assert (example.query_timestamps - example.timestamps).tolist() == [10] * n


@settings(max_examples=60, deadline=None)
@given(
    hist=st.lists(st.integers(1, 9), min_size=1, max_size=12),
    max_seq_len=st.integers(1, 6),
)
def test_eval_example_properties(hist, max_seq_len):
    times = np.arange(len(hist), dtype=np.int64) * 10
    example = make_eval_example(
        2, np.asarray(hist, np.int64), times, 7, 999, max_seq_len
    )
    n = min(len(hist), max_seq_len)
    assert example.items.tolist() == hist[-n:]
    assert example.target == 7
    assert example.timestamps.tolist() == times[-n:].tolist()
    assert example.query_timestamps.tolist() == times[-n:][1:].tolist() + [999]
