"""Tests of SequenceDataset invariants and of the leave-one-out split."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from torchrec_ascend.data import (
    SequenceDataset,
    leave_one_out,
    synthetic_sequence_dataset,
)


def _dataset(lengths, with_timestamps=True):
    return synthetic_sequence_dataset(
        num_users=len(lengths),
        num_items=40,
        lengths=np.asarray(lengths),
        seed=3,
        with_timestamps=with_timestamps,
        name="toy",
    )


def test_sequence_dataset_helpers():
    ds = _dataset([1, 4, 2])
    assert ds.num_users == 3
    assert ds.num_interactions == 7
    assert ds.lengths().tolist() == [1, 4, 2]
    assert ds.lengths().dtype == np.int64
    assert ds.has_timestamps
    assert "3 users" in ds.summary()


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d.item_ids.__setitem__(0, np.array([0], np.int64)), "1..40"),
        (lambda d: d.item_ids.__setitem__(0, np.array([41], np.int64)), "1..40"),
        (lambda d: d.item_ids.__setitem__(0, np.array([1], np.int32)), "int64"),
        (lambda d: d.item_ids.__setitem__(1, np.zeros(0, np.int64)), "empty"),
        (lambda d: d.timestamps.__setitem__(1, d.timestamps[1][::-1].copy()), "chrono"),
        (lambda d: d.timestamps.__setitem__(1, d.timestamps[1][:2]), "shape"),
        (lambda d: setattr(d, "user_ids", np.array([1, 1, 2], np.int64)), "duplic"),
        (lambda d: setattr(d, "user_ids", np.array([1, 2], np.int64)), "2 user_ids"),
        (lambda d: setattr(d, "original_item_ids", np.zeros(40, np.int64)), "one-to"),
    ],
)
def test_validate_rejects(change, message):
    ds = _dataset([1, 4, 2])
    change(ds)
    with pytest.raises(ValueError, match=message):
        ds.validate()


def test_split_targets_and_histories():
    lengths = [1, 2, 3, 4, 9, 3]
    ds = _dataset(lengths)
    split = leave_one_out(ds)
    assert split.num_users == 6 and split.num_items == 40 and split.name == "toy"
    assert split.num_short_users == 2
    long_users = [u for u, n in enumerate(lengths) if n >= 3]
    for es in (split.valid, split.test):
        assert es.user_index.tolist() == long_users
        assert es.user_index.dtype == np.int64 and es.targets.dtype == np.int64
        assert len(es) == len(long_users)
    for e, u in enumerate(long_users):
        items, times = ds.item_ids[u], ds.timestamps[u]
        assert split.train[u].tolist() == items[:-2].tolist()
        assert split.train_timestamps[u].tolist() == times[:-2].tolist()
        assert split.valid.histories[e].tolist() == items[:-2].tolist()
        assert split.valid.history_timestamps[e].tolist() == times[:-2].tolist()
        assert split.valid.targets[e] == items[-2]
        assert split.valid.target_timestamps[e] == times[-2]
        assert split.test.histories[e].tolist() == items[:-1].tolist()
        assert split.test.history_timestamps[e].tolist() == times[:-1].tolist()
        assert split.test.targets[e] == items[-1]
        assert split.test.target_timestamps[e] == times[-1]
    # Short users train on everything and are never evaluated.
    for u in (0, 1):
        assert split.train[u].tolist() == ds.item_ids[u].tolist()
        assert split.train_timestamps[u].tolist() == ds.timestamps[u].tolist()


def test_split_every_interaction_used_once():
    ds = _dataset([5, 3, 7, 1, 2])
    split = leave_one_out(ds)
    rebuilt = [s.tolist() for s in split.train]
    for e, u in enumerate(split.test.user_index):
        rebuilt[u] += [int(split.valid.targets[e]), int(split.test.targets[e])]
    assert rebuilt == [s.tolist() for s in ds.item_ids]


def test_split_without_timestamps():
    split = leave_one_out(_dataset([3, 5], with_timestamps=False))
    assert split.train_timestamps is None and not split.has_timestamps
    assert split.valid.history_timestamps is None
    assert split.test.target_timestamps is None


def test_split_logs_short_users(caplog):
    with caplog.at_level(logging.INFO, logger="torchrec_ascend.data.splits"):
        leave_one_out(_dataset([1, 2, 2, 5]))
    assert "3 of 4 users have fewer than 3 items" in caplog.text


def test_eval_set_by_name():
    split = leave_one_out(_dataset([3]))
    assert split.eval_set("valid") is split.valid
    assert split.eval_set("test") is split.test
    with pytest.raises(ValueError, match="valid"):
        split.eval_set("train")


def test_dataset_dataclass_fields():
    ds = SequenceDataset(
        name="hand",
        num_items=3,
        user_ids=np.array([9], np.int64),
        item_ids=[np.array([3, 1], np.int64)],
    )
    assert ds.timestamps is None and ds.validate() is ds
