"""Tests of the synthetic length sampler and sequence generator."""

from __future__ import annotations

import numpy as np
import pytest

from torchrec_ascend.data import kuairand_like_lengths, synthetic_sequence_dataset

KUAIRAND_MEDIAN = 8591


def test_lengths_median_and_tail_match_kuairand_before_capping():
    lengths = kuairand_like_lengths(27000, cap=None, seed=0)
    assert lengths.dtype == np.int64 and lengths.shape == (27000,)
    median = float(np.median(lengths))
    assert abs(median - KUAIRAND_MEDIAN) <= 0.15 * KUAIRAND_MEDIAN
    assert abs(lengths.mean() - 11796) <= 0.15 * 11796
    assert lengths.min() >= 100 and lengths.max() <= 228000
    assert 15 <= lengths.max() / median <= 27  # heavy tail, about 25x


@pytest.mark.parametrize("cap", [2048, 4096])
def test_lengths_respect_cap(cap):
    lengths = kuairand_like_lengths(5000, cap=cap, seed=1)
    assert lengths.max() == cap
    assert lengths.min() >= 100
    # Most KuaiRand users are longer than the cap.
    assert np.mean(lengths == cap) > 0.8


def test_lengths_are_seeded():
    a = kuairand_like_lengths(100, cap=4096, seed=7)
    assert np.array_equal(a, kuairand_like_lengths(100, cap=4096, seed=7))
    assert not np.array_equal(a, kuairand_like_lengths(100, cap=4096, seed=8))


def test_lengths_argument_checks():
    with pytest.raises(ValueError):
        kuairand_like_lengths(10, cap=0, seed=0)
    with pytest.raises(ValueError):
        kuairand_like_lengths(10, cap=None, seed=0, median=20000)


def test_synthetic_dataset_shapes_times_and_popularity():
    lengths = np.array([1, 5, 300, 2000, 40])
    ds = synthetic_sequence_dataset(5, 1000, lengths, seed=0)
    assert ds.lengths().tolist() == lengths.tolist()
    assert ds.user_ids.tolist() == [1, 2, 3, 4, 5]
    for items, times in zip(ds.item_ids, ds.timestamps):
        assert items.dtype == np.int64 and times.dtype == np.int64
        assert np.all(np.diff(times) > 0)
        assert items.min() >= 1 and items.max() <= 1000
    counts = np.bincount(np.concatenate(ds.item_ids), minlength=1001)
    # Zipf: the most popular item is far above the uniform rate (~2.3 per item).
    assert counts.max() > 20 * counts[1:].mean()


def test_synthetic_dataset_seeded_and_without_timestamps():
    a = synthetic_sequence_dataset(3, 50, 10, seed=4, with_timestamps=False)
    b = synthetic_sequence_dataset(3, 50, 10, seed=4, with_timestamps=False)
    assert a.timestamps is None
    assert all(np.array_equal(x, y) for x, y in zip(a.item_ids, b.item_ids))
    with pytest.raises(ValueError):
        synthetic_sequence_dataset(2, 50, np.array([3, 0]), seed=0)
