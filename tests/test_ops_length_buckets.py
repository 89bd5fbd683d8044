"""Length-bucket plan of the device-generic attention kernel."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from torchrec_ascend.ops import padding_waste, plan_length_buckets


@settings(max_examples=200, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 300), max_size=40),
    max_waste=st.sampled_from([0.0, 0.05, 0.15, 0.5]),
)
def test_plan_covers_every_sequence_and_bounds_waste(lengths, max_waste):
    buckets = plan_length_buckets(lengths, max_waste)
    seen = sorted(b for bucket in buckets for b in bucket.sequences)
    assert seen == [b for b, n in enumerate(lengths) if n > 0]
    for bucket in buckets:
        assert bucket.width == max(lengths[b] for b in bucket.sequences)
    assert padding_waste(lengths, buckets) <= max_waste + 1e-12
    # No plan with fewer buckets reaches the bound: merging any two neighbours
    # (in width order) exceeds it.
    for first, second in zip(buckets, buckets[1:]):
        merged = [*buckets]
        i = merged.index(first)
        merged[i : i + 2] = [
            type(first)(first.sequences + second.sequences, first.width)
        ]
        assert padding_waste(lengths, merged) > max_waste - 1e-12 or max_waste == 0.0


def test_known_plan():
    buckets = plan_length_buckets([3, 0, 5, 5, 1], max_waste=0.15)
    assert [(b.sequences, b.width) for b in buckets] == [((2, 3), 5), ((0, 4), 3)]
    assert padding_waste([3, 0, 5, 5, 1], buckets) == pytest.approx(1 - 60 / 68)


def test_empty_and_all_zero():
    assert plan_length_buckets([]) == []
    assert plan_length_buckets([0, 0]) == []
    assert padding_waste([0, 0], []) == 0.0


def test_bad_max_waste():
    with pytest.raises(ValueError, match=r"max_waste must be in \[0, 1\), got 1.0"):
        plan_length_buckets([1], 1.0)
