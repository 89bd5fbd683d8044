"""The NPU kernels are plain ATen code: on CPU they must match fbgemm's CPU kernels."""

import fbgemm_gpu  # noqa: F401
import pytest
import torch

from torchrec_ascend.npu import bucketize, jagged_kernels, sparse_kernels

FB = torch.ops.fbgemm
DTYPES = [torch.int32, torch.int64]


def random_lengths(gen, count, max_len=5, dtype=torch.int64):
    # About a third of the bags are empty, the others have 1..max_len ids.
    lengths = torch.randint(1, max_len + 1, (count,), generator=gen)
    lengths[torch.rand(count, generator=gen) < 0.33] = 0
    return lengths.to(dtype)


def assert_same(ours, theirs):
    if theirs is None:
        assert ours is None
        return
    assert ours.dtype == theirs.dtype, (ours.dtype, theirs.dtype)
    assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", range(3))
def test_cumsums(dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    lengths = random_lengths(gen, 7 + seed * 5, dtype=dtype)
    for name in ("complete", "inclusive", "exclusive"):
        op = f"asynchronous_{name}_cumsum"
        assert_same(getattr(sparse_kernels, op)(lengths), getattr(FB, op)(lengths))
    rows = lengths[:6].reshape(2, 3)
    assert_same(
        sparse_kernels.asynchronous_complete_cumsum(rows),
        FB.asynchronous_complete_cumsum(rows),
    )
    empty = lengths[:0]
    assert_same(
        sparse_kernels.asynchronous_complete_cumsum(empty),
        FB.asynchronous_complete_cumsum(empty),
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", range(4))
def test_permute_sparse_data(dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    num_features, batch = 4, 3 + seed
    lengths = random_lengths(gen, num_features * batch, dtype=dtype).view(
        num_features, batch
    )
    total = int(lengths.sum())
    values = torch.randint(0, 100, (total,), generator=gen)
    weights = torch.rand(total, generator=gen)
    # A permutation with a repeat and a dropped feature, as KJT.permute allows.
    # fbgemm takes int32 permutations whatever the lengths dtype.
    permute = torch.tensor([2, 0, 3, 2][:num_features], dtype=torch.int32)
    for w in (None, weights):
        ours = sparse_kernels.permute_2D_sparse_data(permute, lengths, values, w)
        theirs = FB.permute_2D_sparse_data(permute, lengths, values, w)
        for a, b in zip(ours, theirs):
            assert_same(a, b)
        flat = lengths.reshape(-1)
        perm1d = torch.randperm(flat.numel(), generator=gen).int()
        ours = sparse_kernels.permute_1D_sparse_data(perm1d, flat, values, w)
        theirs = FB.permute_1D_sparse_data(perm1d, flat, values, w)
        for a, b in zip(ours, theirs):
            assert_same(a, b)
    # Known output size skips the host sync and must give the same answer.
    known = int(lengths.index_select(0, permute.long()).sum())
    ours = sparse_kernels.permute_2D_sparse_data(permute, lengths, values, None, known)
    assert_same(ours[1], FB.permute_2D_sparse_data(permute, lengths, values)[1])


@pytest.mark.parametrize("seed", range(3))
def test_segment_sum_csr(seed):
    gen = torch.Generator().manual_seed(seed)
    batch = 2 + seed
    seg = torch.cat([torch.zeros(1), torch.cumsum(random_lengths(gen, 6), 0)]).int()
    values = torch.randn(int(seg[-1]) * batch, generator=gen, dtype=torch.float32)
    assert_same(
        sparse_kernels.segment_sum_csr(batch, seg, values),
        FB.segment_sum_csr(batch, seg, values),
    )


@pytest.mark.parametrize("dtype", DTYPES)
def test_offsets_range_invert_expand(dtype):
    gen = torch.Generator().manual_seed(0)
    lengths = random_lengths(gen, 9, dtype=dtype)
    offsets = sparse_kernels.asynchronous_exclusive_cumsum(lengths)
    total = int(lengths.sum())
    assert_same(
        sparse_kernels.offsets_range(offsets, total), FB.offsets_range(offsets, total)
    )
    permute = torch.randperm(9, generator=gen).to(dtype)
    assert_same(sparse_kernels.invert_permute(permute), FB.invert_permute(permute))

    input_offsets = FB.asynchronous_complete_cumsum(lengths)
    output_offsets = FB.asynchronous_complete_cumsum(lengths[permute.long()])
    assert_same(
        sparse_kernels.expand_into_jagged_permute(
            permute, input_offsets, output_offsets, total
        ),
        FB.expand_into_jagged_permute(permute, input_offsets, output_offsets, total),
    )


def test_permute_pooled_embs():
    gen = torch.Generator().manual_seed(1)
    dims = torch.tensor([3, 1, 4, 2])
    offsets = FB.asynchronous_complete_cumsum(dims)
    permute = torch.tensor([2, 0, 3, 1])
    inv = torch.argsort(permute)
    inv_offsets = FB.asynchronous_complete_cumsum(dims[permute])
    pooled = torch.randn(5, int(dims.sum()), generator=gen)
    args = (offsets, permute, inv_offsets, inv)
    assert_same(
        sparse_kernels.permute_pooled_embs(pooled, *args),
        FB.permute_pooled_embs(pooled, *args),
    )
    # Non-contiguous input (a column slice of a wider tensor).
    wide = torch.randn(5, 2 * int(dims.sum()), generator=gen)[:, ::2]
    assert not wide.is_contiguous()
    assert_same(
        sparse_kernels.permute_pooled_embs(wide, *args),
        FB.permute_pooled_embs(wide.contiguous(), *args),
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", range(3))
def test_jagged_dense_round_trip(dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    lengths = random_lengths(gen, 6, max_len=7)
    lengths[0] = 7  # one sequence longer than the padding: it gets cut
    offsets = FB.asynchronous_complete_cumsum(lengths).to(dtype)
    values = torch.randn(int(lengths.sum()), 3, generator=gen, dtype=torch.float32)
    max_len = 5
    dense = jagged_kernels.jagged_to_padded_dense_forward(
        values, [offsets], [max_len], -1.5
    )
    assert_same(
        dense, FB.jagged_to_padded_dense_forward(values, [offsets], [max_len], -1.5)
    )

    grad = torch.randn_like(dense)
    assert_same(
        jagged_kernels.jagged_to_padded_dense_backward(
            grad, [offsets], values.shape[0]
        ),
        FB.jagged_to_padded_dense_backward(grad, [offsets], values.shape[0]),
    )
    assert_same(
        jagged_kernels.dense_to_jagged_forward(grad, [offsets]),
        FB.dense_to_jagged_forward(grad, [offsets]),
    )


def test_jagged_to_padded_dense_two_levels():
    # Two jagged dimensions: 2 samples with 2 and 1 lists of 1..3 rows.
    outer = torch.tensor([0, 2, 3])
    inner = torch.tensor([0, 1, 4, 6])
    values = torch.arange(12.0, dtype=torch.float32).view(6, 2)
    ours = jagged_kernels.jagged_to_padded_dense_forward(values, [outer, inner], [2, 3])
    theirs = FB.jagged_to_padded_dense_forward(values, [outer, inner], [2, 3])
    assert_same(ours, theirs)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("keep_orig_idx", [False, True])
def test_block_bucketize(dtype, seed, keep_orig_idx):
    gen = torch.Generator().manual_seed(seed)
    num_features, batch, my_size = 3, 4, 3
    lengths = random_lengths(gen, num_features * batch, dtype=dtype)
    block_sizes = torch.tensor([5, 2, 7], dtype=dtype)
    # Some ids lie beyond my_size blocks, exercising the modulo fallback.
    indices = torch.randint(0, 30, (int(lengths.sum()),), generator=gen, dtype=dtype)
    weights = torch.rand(indices.numel(), generator=gen)
    kwargs = dict(
        bucketize_pos=True,
        sequence=True,
        block_sizes=block_sizes,
        my_size=my_size,
        weights=weights,
        keep_orig_idx=keep_orig_idx,
    )
    ours = bucketize.block_bucketize_sparse_features(lengths, indices, **kwargs)
    theirs = FB.block_bucketize_sparse_features(lengths, indices, **kwargs)
    for a, b in zip(ours, theirs):
        assert_same(a, b)


def test_bucketize_rejects_variable_batch():
    with pytest.raises(NotImplementedError, match="batch_size_per_feature"):
        bucketize.block_bucketize_sparse_features(
            torch.tensor([1]),
            torch.tensor([0]),
            False,
            False,
            torch.tensor([2]),
            2,
            batch_size_per_feature=torch.tensor([1]),
        )


@pytest.mark.parametrize("offset_dtype", DTYPES)
@pytest.mark.parametrize("seed", range(3))
def test_hstu_npu_kernel_against_float64_reference(offset_dtype, seed):
    from reference import reference_hstu_attention

    from torchrec_ascend.npu import hstu_kernels

    gen = torch.Generator().manual_seed(seed)
    max_seq_len, heads, dim_qk, dim_v = 16, 2, 4, 3
    # Empty, length-1 and a long tail up to max_seq_len.
    lengths = torch.tensor([0, 1, 16, 2, 9, 0, 13])
    offsets = FB.asynchronous_complete_cumsum(lengths).to(offset_dtype)
    total = int(lengths.sum())

    def rand(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    # q is a non-contiguous view (every other column of a wider tensor).
    q = rand(total, heads, 2 * dim_qk)[..., ::2]
    k, v = rand(total, heads, dim_qk), rand(total, heads, dim_v)
    timestamps = torch.cumsum(torch.randint(0, 5000, (total,), generator=gen), 0)
    args = dict(
        max_seq_len=max_seq_len,
        alpha=0.6,
        pos_bias=rand(2 * max_seq_len - 1),
        ts_bias=rand(12),
        timestamps=timestamps,
        query_timestamps=timestamps + 30,
        num_targets=torch.tensor([0, 0, 3, 1, 2, 0, 0]),
        contextual_len=1,
        ts_bucket_divisor=0.301,
    )
    grad_out = rand(total, heads, dim_v)
    leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    biases = [
        args[n].detach().clone().requires_grad_() for n in ("pos_bias", "ts_bias")
    ]
    ref_args = dict(args, pos_bias=biases[0], ts_bias=biases[1])
    want = reference_hstu_attention(*leaves, offsets, **ref_args)
    want.backward(grad_out)

    positional = [
        args["max_seq_len"], args["alpha"], args["pos_bias"], args["ts_bias"],
        args["timestamps"], args["query_timestamps"], args["num_targets"],
        args["contextual_len"], args["ts_bucket_divisor"],
    ]  # fmt: skip
    got = hstu_kernels.hstu_attention_forward(q, k, v, offsets, *positional)
    grads = hstu_kernels.hstu_attention_backward(
        grad_out, q, k, v, offsets, *positional
    )
    torch.testing.assert_close(got, want.detach(), rtol=1e-10, atol=1e-12)
    for ours, leaf in zip(grads, leaves + biases):
        torch.testing.assert_close(ours, leaf.grad, rtol=1e-10, atol=1e-12)


def test_hstu_npu_kernel_rejects_overlong_sequence():
    from torchrec_ascend.npu import hstu_kernels

    q = torch.zeros(5, 1, 2)
    with pytest.raises(ValueError, match="length 5 > max_seq_len=4"):
        hstu_kernels.hstu_attention_forward(
            q, q, q, torch.tensor([0, 5]), 4, 1.0, None, None, None, None, None, 0, 0.3
        )


def test_jagged_kernels_accept_non_contiguous_views():
    gen = torch.Generator().manual_seed(9)
    lengths = torch.tensor([2, 0, 1, 4])
    offsets = FB.asynchronous_complete_cumsum(lengths)
    wide = torch.randn(7, 6, generator=gen)
    values = wide[:, ::2]
    assert not values.is_contiguous()
    assert_same(
        jagged_kernels.jagged_to_padded_dense_forward(values, [offsets], [3]),
        FB.jagged_to_padded_dense_forward(values.contiguous(), [offsets], [3]),
    )
    dense = torch.randn(4, 3, 6, generator=gen)[..., 1::2]
    assert_same(
        jagged_kernels.dense_to_jagged_forward(dense, [offsets]),
        FB.dense_to_jagged_forward(dense.contiguous(), [offsets]),
    )
