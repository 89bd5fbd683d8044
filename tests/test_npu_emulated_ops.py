"""Our NPU kernels on the emulated "npu" device: registered, dispatched, same as CPU."""

import fbgemm_gpu  # noqa: F401
import npu_fixtures
import pytest
import torch
from torchrec.sparse.jagged_tensor import JaggedTensor, KeyedJaggedTensor

import torchrec_ascend  # noqa: F401
from torchrec_ascend.npu import registered_ops
from torchrec_ascend.npu.registry import FBGEMM_KERNELS, OWN_KERNELS
from torchrec_ascend.ops import hstu_attention

npu = npu_fixtures.npu
strict_npu = npu_fixtures.strict_npu

FB = torch.ops.fbgemm
REQUIRED = [
    "asynchronous_complete_cumsum",
    "permute_1D_sparse_data",
    "permute_2D_sparse_data",
    "segment_sum_csr",
    "jagged_to_padded_dense_forward",
    "jagged_to_padded_dense_backward",
    "dense_to_jagged_forward",
    "block_bucketize_sparse_features",
    "expand_into_jagged_permute",
    "invert_permute",
    "offsets_range",
    "permute_pooled_embs",
]


@pytest.mark.parametrize(
    "qualified",
    [f"fbgemm::{n}" for n in FBGEMM_KERNELS]
    + [f"torchrec_ascend::{n}" for n in OWN_KERNELS],
)
def test_dispatch_table_shows_our_kernel(qualified):
    table = torch._C._dispatch_dump_table(qualified)
    line = next(x for x in table.splitlines() if x.startswith("PrivateUse1:"))
    assert "torchrec_ascend/npu/registry.py" in line, line
    assert qualified in registered_ops()
    # Never a direct kernel on a composite op (it would drop the gradient).
    assert not torch._C._dispatch_has_kernel_for_dispatch_key(
        qualified, "CompositeImplicitAutograd"
    )


def test_required_ops_covered():
    assert {f"fbgemm::{n}" for n in REQUIRED} <= set(registered_ops())


def _table_line(qualified: str, key: str) -> str:
    table = torch._C._dispatch_dump_table(qualified)
    return next(x for x in table.splitlines() if x.startswith(f"{key}:"))


@pytest.mark.parametrize(
    "qualified", ["fbgemm::jagged_to_padded_dense", "fbgemm::dense_to_jagged"]
)
def test_composite_front_ends_decompose_on_npu(qualified):
    # Both keys must resolve to fbgemm's decomposition, whose pieces carry autograd.
    assert "[math kernel]" in _table_line(qualified, "PrivateUse1")
    assert "[math kernel]" in _table_line(qualified, "AutogradPrivateUse1")


@pytest.mark.parametrize("name", sorted(FBGEMM_KERNELS))
def test_autograd_on_npu_mirrors_cpu(name):
    # Every op differentiable on CPU has the same autograd kernel on the NPU key.
    qualified = f"fbgemm::{name}"
    on_cpu = _table_line(qualified, "AutogradCPU")
    on_npu = _table_line(qualified, "AutogradPrivateUse1")
    if "[autograd kernel]" in on_cpu:
        assert on_npu.split(": ", 1)[1] == on_cpu.split(": ", 1)[1]


def _to(device, *tensors):
    return [t.to(device) if torch.is_tensor(t) else t for t in tensors]


def _leaf(tensor, device):
    """A fresh leaf copy on ``device``, so CPU and NPU runs never share grads."""
    return tensor.detach().to(device).clone().requires_grad_()


def _assert_same(on_npu, on_cpu):
    if on_cpu is None:
        assert on_npu is None
        return
    assert on_npu.device.type == "npu"
    assert on_npu.dtype == on_cpu.dtype
    torch.testing.assert_close(on_npu.cpu(), on_cpu, rtol=1e-6, atol=1e-6)


def _jagged_case(seed, dtype=torch.int64):
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(0, 5, (3, 4), generator=gen).to(dtype)
    lengths[0, 1] = 0
    values = torch.randint(0, 50, (int(lengths.sum()),), generator=gen)
    weights = torch.rand(values.numel(), generator=gen)
    return lengths, values, weights


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64])
def test_sparse_ops_match_cpu(strict_npu, dtype):
    lengths, values, weights = _jagged_case(0, dtype)
    flat = lengths.reshape(-1)
    permute = torch.tensor([2, 0, 1], dtype=torch.int32)
    perm1d = torch.randperm(
        flat.numel(), generator=torch.Generator().manual_seed(1)
    ).int()
    offsets = FB.asynchronous_complete_cumsum(flat)
    calls = [
        (FB.asynchronous_complete_cumsum, (flat,)),
        (FB.asynchronous_exclusive_cumsum, (flat,)),
        (FB.asynchronous_inclusive_cumsum, (flat,)),
        (FB.permute_2D_sparse_data, (permute, lengths, values, weights)),
        (FB.permute_1D_sparse_data, (perm1d, flat, values, weights)),
        (FB.invert_permute, (perm1d,)),
        (FB.offsets_range, (offsets[:-1], int(offsets[-1]))),
        (
            FB.segment_sum_csr,
            (2, torch.tensor([0, 2, 3, 6], dtype=torch.int32), torch.randn(12)),
        ),
        # fbgemm reads offsets as contiguous memory, so no strided views here.
        (
            FB.expand_into_jagged_permute,
            (
                permute,
                offsets[::4].int().contiguous(),
                FB.asynchronous_complete_cumsum(lengths.sum(1)[permute.long()]).int(),
                int(offsets[-1]),
            ),
        ),
        (
            FB.block_bucketize_sparse_features,
            (
                flat,
                values.to(dtype),
                True,
                True,
                torch.tensor([9, 4, 20], dtype=dtype),
                3,
                weights,
            ),
        ),
    ]
    for op, args in calls:
        on_cpu = op(*args)
        on_npu = op(*_to(strict_npu, *args))
        if isinstance(on_cpu, tuple):
            for a, b in zip(on_npu, on_cpu):
                _assert_same(a, b)
        else:
            _assert_same(on_npu, on_cpu)


def test_pooled_embs_and_gradient(strict_npu):
    dims = torch.tensor([2, 3, 1])
    offsets = FB.asynchronous_complete_cumsum(dims)
    permute = torch.tensor([1, 2, 0])
    inv = torch.argsort(permute)
    inv_offsets = FB.asynchronous_complete_cumsum(dims[permute])
    pooled = torch.randn(4, 6, dtype=torch.float32)
    args = (offsets, permute, inv_offsets, inv)
    _assert_same(
        FB.permute_pooled_embs(pooled.to(strict_npu), *_to(strict_npu, *args)),
        FB.permute_pooled_embs(pooled, *args),
    )
    grads = []
    for device in ("cpu", strict_npu):
        x = _leaf(pooled, device)
        out = FB.permute_pooled_embs_auto_grad(x, *_to(device, *args))
        (out * torch.arange(6.0, device=device)).sum().backward()
        grads.append(x.grad)
    _assert_same(grads[1], grads[0])


@pytest.mark.parametrize("offset_dtype", [torch.int32, torch.int64])
def test_jagged_dense_gradients_flow(strict_npu, offset_dtype):
    lengths = torch.tensor([3, 0, 1, 6, 2])
    offsets = FB.asynchronous_complete_cumsum(lengths).to(offset_dtype)
    values = torch.randn(int(lengths.sum()), 3)
    dense_in = torch.randn(5, 4, 3)
    results = {}
    for device in ("cpu", strict_npu):
        v = _leaf(values, device)
        d = _leaf(dense_in, device)
        padded = FB.jagged_to_padded_dense(v, [offsets.to(device)], [4], 0.5)
        jagged, _ = FB.dense_to_jagged(d, [offsets.to(device)])
        weight_p = torch.arange(padded.numel(), device=device).view_as(padded).float()
        weight_j = torch.arange(jagged.numel(), device=device).view_as(jagged).float()
        ((padded * weight_p).sum() + (jagged * weight_j).sum()).backward()
        results[str(device)] = (padded, jagged, v.grad, d.grad)
    for a, b in zip(results["npu:0"], results["cpu"]):
        _assert_same(a, b)
    # The gradient is real: rows cut by the padding get zero, kept rows do not.
    assert results["cpu"][2][9:10].abs().sum() == 0
    assert results["cpu"][2][:3].abs().sum() > 0


def test_kjt_methods_match_cpu(strict_npu):
    lengths, values, weights = _jagged_case(3)
    kjt = KeyedJaggedTensor.from_lengths_sync(
        ["a", "b", "c"], values, lengths.reshape(-1), weights=weights
    )
    on_npu = kjt.to(strict_npu)
    for order in ([2, 0, 1], [1, 1, 0]):
        p_cpu, p_npu = kjt.permute(order), on_npu.permute(order)
        for a, b in (
            (p_npu.values(), p_cpu.values()),
            (p_npu.lengths(), p_cpu.lengths()),
            (p_npu.weights(), p_cpu.weights()),
            (p_npu.offsets(), p_cpu.offsets()),
        ):
            _assert_same(a, b)
    _assert_same(on_npu.offsets(), kjt.offsets())
    for key in ("a", "b", "c"):
        _assert_same(on_npu[key].to_padded_dense(3), kjt[key].to_padded_dense(3))
        _assert_same(
            on_npu[key].to_padded_dense_weights(2), kjt[key].to_padded_dense_weights(2)
        )
    jt = JaggedTensor(values=torch.randn(7, 2), lengths=torch.tensor([2, 0, 5]))
    _assert_same(jt.to(strict_npu).to_padded_dense(4), jt.to_padded_dense(4))
    split_cpu, split_npu = kjt.split([1, 2]), on_npu.split([1, 2])
    for a, b in zip(split_npu, split_cpu):
        _assert_same(a.values(), b.values())
        _assert_same(a.offsets(), b.offsets())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("features", ["plain", "rab_targets_context"])
def test_hstu_attention_forward_backward_match_cpu(strict_npu, dtype, features):
    gen = torch.Generator().manual_seed(7)
    lengths = torch.tensor([0, 1, 6, 3, 8])
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
    total, heads, dim, max_seq_len = int(lengths.sum()), 2, 4, 8
    q, k, v = (
        torch.randn(total, heads, dim, generator=gen, dtype=dtype) for _ in "qkv"
    )
    kwargs = {}
    if features != "plain":
        timestamps = torch.randint(0, 10_000, (total,), generator=gen)
        kwargs = dict(
            alpha=0.7,
            pos_bias=torch.randn(2 * max_seq_len - 1, generator=gen, dtype=dtype),
            ts_bias=torch.randn(9, generator=gen, dtype=dtype),
            timestamps=timestamps,
            query_timestamps=timestamps
            + torch.randint(0, 500, (total,), generator=gen),
            num_targets=torch.tensor([0, 0, 2, 0, 3]),
            contextual_len=1,
        )
    grad = torch.randn(total, heads, dim, generator=gen, dtype=dtype)
    results = []
    for device in ("cpu", strict_npu):
        leaves = [_leaf(t, device) for t in (q, k, v)]
        extra = {
            name: (
                _leaf(value, device)
                if name.endswith("bias")
                else value.to(device)
                if torch.is_tensor(value)
                else value
            )
            for name, value in kwargs.items()
        }
        out = hstu_attention(*leaves, offsets.to(device), max_seq_len, **extra)
        out.backward(grad.to(device))
        bias_grads = [extra[n].grad for n in ("pos_bias", "ts_bias") if n in extra]
        results.append([out] + [t.grad for t in leaves] + bias_grads)
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    for on_cpu, on_npu in zip(*results):
        assert on_npu.device.type == "npu"
        torch.testing.assert_close(on_npu.cpu(), on_cpu, rtol=tol, atol=tol)


def test_permute_2d_weights_gradient(strict_npu):
    lengths, values, weights = _jagged_case(4)
    # fbgemm's backward inverts the permutation, so it must be a true one.
    permute = torch.tensor([1, 2, 0], dtype=torch.int32)
    grads = []
    for device in ("cpu", strict_npu):
        w = _leaf(weights, device)
        args = _to(device, permute, lengths, values)
        _, _, permuted = FB.permute_2D_sparse_data(*args, w)
        scale = torch.arange(permuted.numel(), device=device, dtype=permuted.dtype)
        (permuted * scale).sum().backward()
        grads.append(w.grad)
    _assert_same(grads[1], grads[0])
    # Each weight's gradient is its position after the permutation; at most one is 0.
    assert int((grads[0] == 0).sum()) <= 1


def test_registry_skips_served_and_composite_ops(npu):
    from torchrec_ascend.npu import registry, skipped_ops

    def ours(x):
        return x + 1

    # One op already served on PrivateUse1 (as fbgemm-ascend would), one composite.
    lib = torch.library.Library("tra_npu_test", "DEF")
    lib.define("served(Tensor x) -> Tensor")
    lib.define("composite(Tensor x) -> Tensor")
    lib.define("plain(Tensor x) -> Tensor")
    lib.impl("served", lambda x: x * 2, "PrivateUse1")
    lib.impl("composite", lambda x: x * 3, "CompositeImplicitAutograd")
    try:
        registry._register(
            "tra_npu_test", {"served": ours, "composite": ours, "plain": ours}
        )
        skipped = skipped_ops()
        assert "PrivateUse1" in skipped["tra_npu_test::served"]
        assert "CompositeImplicitAutograd" in skipped["tra_npu_test::composite"]
        assert "tra_npu_test::plain" in registered_ops()
        assert "tra_npu_test::served" not in registered_ops()
        x = torch.ones(2).to(npu)
        assert torch.ops.tra_npu_test.served(x).cpu().tolist() == [2.0, 2.0]
        assert torch.ops.tra_npu_test.plain(x).cpu().tolist() == [2.0, 2.0]
    finally:
        registry._libraries.pop("tra_npu_test")._destroy()
        for name in ("served", "composite", "plain"):
            registry._registered.pop(f"tra_npu_test::{name}", None)
            registry._skipped.pop(f"tra_npu_test::{name}", None)
        lib._destroy()
