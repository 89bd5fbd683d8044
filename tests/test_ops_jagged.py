"""Jagged utility ops against plain per-sequence slicing, forward and backward."""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference import offsets_of, split_sequences

import torchrec_ascend  # noqa: F401
from torchrec_ascend.ops import (
    jagged_concat,
    jagged_index_select,
    jagged_split,
    jagged_to_padded,
    lengths_to_offsets,
    padded_to_jagged,
)

_OP = torch.ops.torchrec_ascend
lengths_st = st.lists(
    st.one_of(st.just(0), st.just(1), st.integers(2, 9)), min_size=0, max_size=6
)
settings_ = settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def make_jagged(lengths, offsets_dtype, non_contiguous, seed, width=3):
    gen = torch.Generator().manual_seed(seed)
    total = sum(lengths)
    if non_contiguous:
        values = torch.randn(total, 2 * width, generator=gen, dtype=torch.float64)[
            :, ::2
        ]
    else:
        values = torch.randn(total, width, generator=gen, dtype=torch.float64)
    offsets = lengths_to_offsets(torch.tensor(lengths, dtype=torch.int64))
    return values.requires_grad_(), offsets.to(offsets_dtype)


def check_grads(got_out, want_out, inputs):
    grad = torch.randn_like(want_out)
    got = torch.autograd.grad(
        got_out, inputs, grad, allow_unused=True, retain_graph=True
    )
    want = torch.autograd.grad(
        want_out, inputs, grad, allow_unused=True, retain_graph=True
    )
    for g, w, x in zip(got, want, inputs):
        # An input that contributes no rows gets either no gradient or zeros.
        g = torch.zeros_like(x) if g is None else g
        w = torch.zeros_like(x) if w is None else w
        torch.testing.assert_close(g, w)


dtypes_st = st.sampled_from([torch.int32, torch.int64])


@settings_
@given(lengths_st, dtypes_st, st.booleans(), st.integers(0, 2**16), st.integers(0, 3))
def test_padded_round_trip(lengths, odt, non_contiguous, seed, extra):
    values, offsets = make_jagged(lengths, odt, non_contiguous, seed)
    width = max(lengths, default=0) + extra
    padded, mask = jagged_to_padded(values, offsets, width, padding_value=-1.0)
    want = torch.full((len(lengths), width, 3), -1.0, dtype=torch.float64)
    want = want + 0 * values.sum()  # keeps the graph connected when empty
    for b, block in enumerate(split_sequences(values, offsets)):
        want[b, : block.shape[0]] = block
    torch.testing.assert_close(padded, want.detach())
    assert mask.sum() == sum(lengths)
    check_grads(padded, want, [values])
    torch.testing.assert_close(padded_to_jagged(padded, offsets), values)


@settings_
@given(lengths_st, lengths_st, dtypes_st, st.booleans(), st.integers(0, 2**16))
def test_concat_and_split(lengths_a, lengths_b, odt, non_contiguous, seed):
    lengths_b = (lengths_b + [0] * len(lengths_a))[: len(lengths_a)]
    a, a_off = make_jagged(lengths_a, odt, non_contiguous, seed)
    b, b_off = make_jagged(lengths_b, odt, False, seed + 1)
    values, offsets = jagged_concat(a, a_off, b, b_off)
    blocks = [
        torch.cat([x, y])
        for x, y in zip(split_sequences(a, a_off), split_sequences(b, b_off))
    ]
    want = torch.cat(blocks) if blocks else a.new_zeros(0, 3) + 0 * a.sum()
    assert offsets.dtype == odt and offsets.tolist() == offsets_of(blocks)
    torch.testing.assert_close(values, want)
    check_grads(values, want, [a, b])

    head, head_off, tail, tail_off = jagged_split(
        values, offsets, (a_off[1:] - a_off[:-1]).to(odt)
    )
    torch.testing.assert_close(head, a)
    torch.testing.assert_close(tail, b)
    assert head_off.tolist() == a_off.tolist() and tail_off.tolist() == b_off.tolist()
    # Gradient of split is concat.
    check_grads(head.sum() + 2 * tail.sum(), a.sum() + 2 * b.sum(), [a, b])


@settings_
@given(
    lengths_st.filter(lambda x: len(x) > 0),
    dtypes_st,
    st.booleans(),
    st.integers(0, 2**16),
    st.lists(st.integers(0, 100), max_size=7),
)
def test_index_select(lengths, odt, non_contiguous, seed, picks):
    values, offsets = make_jagged(lengths, odt, non_contiguous, seed)
    indices = torch.tensor([p % len(lengths) for p in picks], dtype=odt)
    got, got_off = jagged_index_select(values, offsets, indices)
    blocks = split_sequences(values, offsets)
    chosen = [blocks[int(i)] for i in indices]
    want = torch.cat(chosen) if chosen else values.new_zeros(0, 3) + 0 * values.sum()
    torch.testing.assert_close(got, want)
    assert got_off.dtype == odt and got_off.tolist() == offsets_of(chosen)
    check_grads(got, want, [values])


def test_bad_offsets_raise_clear_errors():
    v = torch.randn(4, 2)
    with pytest.raises(RuntimeError, match=r"jagged_to_padded: offsets\[0\] must be 0"):
        jagged_to_padded(v, torch.tensor([1, 4]), 4)
    with pytest.raises(RuntimeError, match="sequence 0 has length 4 > max_len=3"):
        jagged_to_padded(v, torch.tensor([0, 4]), 3)
    with pytest.raises(RuntimeError, match=r"a_offsets\[-1\]=3 must equal"):
        jagged_concat(v, torch.tensor([0, 3]), v, torch.tensor([0, 4]))
    with pytest.raises(RuntimeError, match="non-decreasing"):
        jagged_split(v, torch.tensor([0, 3, 2, 4]), torch.tensor([0, 0, 0]))
    with pytest.raises(RuntimeError, match=r"first_lengths\[0\]=5 must be in \[0, 4\]"):
        jagged_split(v, torch.tensor([0, 4]), torch.tensor([5]))
    with pytest.raises(RuntimeError, match=r"indices\[1\]=2 out of range for 2"):
        jagged_index_select(v, torch.tensor([0, 1, 4]), torch.tensor([0, 2]))
    with pytest.raises(RuntimeError, match="offsets must be int32 or int64"):
        jagged_index_select(v, torch.tensor([0.0, 4.0]), torch.tensor([0]))


def test_opcheck():
    v = torch.randn(5, 3, requires_grad=True)
    w = torch.randn(2, 3, requires_grad=True)
    off = torch.tensor([0, 2, 5])
    off32 = torch.tensor([0, 2, 5], dtype=torch.int32)
    torch.library.opcheck(_OP.jagged_to_padded.default, (v, off, 4, 0.0))
    padded = torch.randn(2, 4, 3, requires_grad=True)
    torch.library.opcheck(_OP.padded_to_jagged.default, (padded, off))
    torch.library.opcheck(
        _OP.jagged_concat.default, (v, off, w, off.new_tensor([0, 1, 2]))
    )
    torch.library.opcheck(_OP.jagged_split.default, (v, off32, torch.tensor([1, 2])))
    torch.library.opcheck(
        _OP.jagged_index_select.default, (v, off, torch.tensor([1, 0, 1]))
    )
