"""Both jagged HSTU attention kernels (fused C++, device-generic ATen) against the
float64 padded reference."""

import functools

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference import reference_hstu_attention

import torchrec_ascend  # noqa: F401
from torchrec_ascend.ops import hstu_attention, lengths_to_offsets

MAX_SEQ_LEN = 80


@st.composite
def jagged_cases(draw):
    # Lengths mix empty, length-1, a block-crossing long tail (> 64 rows) and typical.
    lengths = draw(
        st.lists(
            st.one_of(
                st.just(0), st.just(1), st.integers(2, 12), st.integers(60, MAX_SEQ_LEN)
            ),
            min_size=0,
            max_size=5,
        )
    )
    return dict(
        lengths=lengths,
        heads=draw(st.integers(1, 3)),
        dim_qk=draw(st.integers(1, 6)),
        dim_v=draw(st.integers(1, 6)),
        offsets_dtype=draw(st.sampled_from([torch.int32, torch.int64])),
        use_pos=draw(st.booleans()),
        use_ts=draw(st.booleans()),
        use_targets=draw(st.booleans()),
        contextual=draw(st.sampled_from([0, 0, 1, 3])),
        alpha=draw(st.sampled_from([1.0, 0.5])),
        non_contiguous=draw(st.booleans()),
        seed=draw(st.integers(0, 2**16)),
    )


def build_inputs(case, dtype, max_seq_len=MAX_SEQ_LEN):
    gen = torch.Generator().manual_seed(case["seed"])
    lengths = torch.tensor(case["lengths"], dtype=torch.int64)
    total, heads = int(lengths.sum()), case["heads"]

    def rand(*shape):
        if case["non_contiguous"]:
            # A strided view: every other row of a larger buffer.
            big = torch.randn(shape[0] * 2, *shape[1:], generator=gen, dtype=dtype)
            return big[::2].requires_grad_()
        return torch.randn(*shape, generator=gen, dtype=dtype).requires_grad_()

    inputs = dict(
        q=rand(total, heads, case["dim_qk"]),
        k=rand(total, heads, case["dim_qk"]),
        v=rand(total, heads, case["dim_v"]),
        offsets=lengths_to_offsets(lengths).to(case["offsets_dtype"]),
        max_seq_len=max_seq_len,
        alpha=case["alpha"],
        contextual_len=case["contextual"],
    )
    if case["use_pos"]:
        pos = 0.3 * torch.randn(2 * max_seq_len - 1, generator=gen, dtype=dtype)
        inputs["pos_bias"] = pos.requires_grad_()
    if case["use_ts"]:
        inputs["ts_bias"] = (
            0.3 * torch.randn(9, generator=gen, dtype=dtype)
        ).requires_grad_()
        gaps = torch.randint(0, 5000, (total,), generator=gen)
        ts = torch.cumsum(gaps, 0)
        inputs["timestamps"] = ts
        inputs["query_timestamps"] = ts + torch.randint(0, 300, (total,), generator=gen)
    if case["use_targets"]:
        room = [max(0, n - min(case["contextual"], n)) for n in case["lengths"]]
        inputs["num_targets"] = torch.tensor(
            [int(torch.randint(0, r + 1, (1,), generator=gen)) for r in room],
            dtype=case["offsets_dtype"],
        )
    return inputs


def differentiable(inputs):
    return [
        name
        for name in ("q", "k", "v", "pos_bias", "ts_bias")
        if name in inputs and inputs[name].requires_grad
    ]


def run(fn, inputs, grad_out):
    out = fn(**inputs)
    names = differentiable(inputs)
    grads = torch.autograd.grad(
        out, [inputs[n] for n in names], grad_out.to(out.dtype), allow_unused=True
    )
    return out, dict(zip(names, grads))


def with_backend(backend):
    return functools.partial(hstu_attention, backend=backend)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=jagged_cases())
@pytest.mark.parametrize("backend", ["cpp", "generic"])
@pytest.mark.parametrize(
    "dtype,tol", [(torch.float64, 1e-10), (torch.float32, 2e-4)], ids=["f64", "f32"]
)
def test_matches_float64_reference(case, dtype, tol, backend):
    inputs = build_inputs(case, dtype)
    reference_inputs = {
        key: (
            val.detach().double().requires_grad_()
            if key in differentiable(inputs)
            else val
        )
        for key, val in inputs.items()
    }
    total = inputs["q"].shape[0]
    grad_out = torch.randn(
        total,
        case["heads"],
        case["dim_v"],
        dtype=torch.float64,
        generator=torch.Generator().manual_seed(case["seed"] + 1),
    )

    out, grads = run(with_backend(backend), inputs, grad_out)
    ref_out, ref_grads = run(reference_hstu_attention, reference_inputs, grad_out)

    assert out.dtype == dtype and out.shape == ref_out.shape
    torch.testing.assert_close(out.double(), ref_out, rtol=tol, atol=tol)
    for name, ref in ref_grads.items():
        got = grads[name]
        if ref is None:
            assert got is None or not got.abs().any(), name
            continue
        torch.testing.assert_close(got.double(), ref, rtol=tol, atol=tol, msg=name)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=jagged_cases())
def test_bf16_matches_float64_reference(case):
    # bf16 inputs, fp32 accumulation: compare with the reference evaluated on the
    # same bf16-rounded inputs, to within bf16 rounding of the intermediates.
    inputs = build_inputs(case, torch.bfloat16)
    reference_inputs = {
        key: (
            val.detach().double().requires_grad_()
            if key in differentiable(inputs)
            else val
        )
        for key, val in inputs.items()
    }
    total = inputs["q"].shape[0]
    grad_out = torch.randn(
        total,
        case["heads"],
        case["dim_v"],
        dtype=torch.float64,
        generator=torch.Generator().manual_seed(case["seed"] + 1),
    )

    out, grads = run(hstu_attention, inputs, grad_out)
    ref_out, ref_grads = run(reference_hstu_attention, reference_inputs, grad_out)

    def assert_near(got, ref, name):
        ref = ref.detach()
        scale = float(ref.abs().max()) if ref.numel() else 0.0
        err = float((got.detach().double() - ref).abs().max()) if ref.numel() else 0.0
        assert err <= 3e-2 * scale + 1e-3, (name, err, scale)

    assert out.dtype == torch.bfloat16 and out.shape == ref_out.shape
    assert_near(out, ref_out, "out")
    for name, ref in ref_grads.items():
        if ref is not None:
            assert grads[name].dtype == torch.bfloat16, name
            assert_near(grads[name], ref, name)


def test_gradcheck_with_all_features():
    case = dict(
        lengths=[3, 0, 1, 5],
        heads=2,
        dim_qk=3,
        dim_v=2,
        offsets_dtype=torch.int32,
        use_pos=True,
        use_ts=True,
        use_targets=True,
        contextual=1,
        alpha=0.7,
        non_contiguous=False,
        seed=3,
    )
    inputs = build_inputs(case, torch.float64)
    names = differentiable(inputs)

    def fn(*tensors):
        return hstu_attention(**{**inputs, **dict(zip(names, tensors))})

    assert torch.autograd.gradcheck(fn, [inputs[n] for n in names])


@pytest.mark.parametrize("backend", ["cpp", "generic"])
def test_empty_batch_and_all_zero_lengths(backend):
    for lengths in ([], [0, 0, 0]):
        offsets = lengths_to_offsets(torch.tensor(lengths, dtype=torch.int64))
        q = torch.zeros(0, 2, 4, requires_grad=True)
        out = hstu_attention(q, q, q, offsets, max_seq_len=4, backend=backend)
        assert out.shape == (0, 2, 4)
        out.sum().backward()
        assert q.grad.shape == q.shape


@pytest.mark.parametrize(
    "offsets,message",
    [
        ([1, 2, 4], r"offsets\[0\] must be 0, got 1"),
        ([0, 3, 2, 4], r"non-decreasing, but offsets\[2\]=2 < offsets\[1\]=3"),
        ([0, 2, 3], r"offsets\[-1\]=3 must equal the number of jagged rows 4"),
        ([0, 4], r"sequence 0 has length 4 > max_seq_len=3"),
    ],
)
@pytest.mark.parametrize(
    "backend,error", [("cpp", RuntimeError), ("generic", ValueError)]
)
def test_bad_offsets_raise_clear_errors(offsets, message, backend, error):
    q = torch.randn(4, 1, 2)
    with pytest.raises(error, match=message):
        hstu_attention(q, q, q, torch.tensor(offsets), max_seq_len=3, backend=backend)


def test_bad_shapes_and_dtypes_raise():
    q = torch.randn(4, 2, 3)
    offsets = torch.tensor([0, 4])
    with pytest.raises(
        RuntimeError, match=r"k must have shape \(4, 2, 3\), got \[4, 2, 2\]"
    ):
        hstu_attention(q, torch.randn(4, 2, 2), q, offsets, max_seq_len=8)
    with pytest.raises(RuntimeError, match="offsets must be int32 or int64, got Float"):
        hstu_attention(q, q, q, offsets.float(), max_seq_len=8)
    with pytest.raises(RuntimeError, match=r"pos_bias must have shape \(15\)"):
        hstu_attention(q, q, q, offsets, max_seq_len=8, pos_bias=torch.zeros(3))
    with pytest.raises(RuntimeError, match="ts_bias needs timestamps"):
        hstu_attention(q, q, q, offsets, max_seq_len=8, ts_bias=torch.zeros(3))
    with pytest.raises(RuntimeError, match=r"num_targets\[0\]=5 must be in \[0, 4\]"):
        hstu_attention(q, q, q, offsets, max_seq_len=8, num_targets=torch.tensor([5]))


def test_output_does_not_depend_on_batch_neighbours():
    torch.manual_seed(0)
    q, k, v = (torch.randn(7, 2, 4) for _ in range(3))
    together = hstu_attention(q, k, v, torch.tensor([0, 3, 7]), max_seq_len=8)
    alone = hstu_attention(q[3:], k[3:], v[3:], torch.tensor([0, 4]), max_seq_len=8)
    torch.testing.assert_close(together[3:], alone)


def test_long_sequence_spans_many_tiles_and_threads():
    # One 700-row sequence: 11 query blocks shared by the threads, dK/dV summed over
    # the per-thread buffers.
    case = dict(
        lengths=[700, 3],
        heads=2,
        dim_qk=4,
        dim_v=3,
        offsets_dtype=torch.int64,
        use_pos=True,
        use_ts=True,
        use_targets=True,
        contextual=2,
        alpha=1.0,
        non_contiguous=False,
        seed=5,
    )
    inputs = build_inputs(case, torch.float32, max_seq_len=800)
    reference_inputs = {
        key: (
            val.detach().double().requires_grad_()
            if key in differentiable(inputs)
            else val
        )
        for key, val in inputs.items()
    }
    grad_out = torch.randn(
        703, 2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1)
    )
    out, grads = run(hstu_attention, inputs, grad_out)
    ref_out, ref_grads = run(reference_hstu_attention, reference_inputs, grad_out)
    torch.testing.assert_close(out.double(), ref_out, rtol=2e-4, atol=2e-4)
    for name, ref in ref_grads.items():
        torch.testing.assert_close(grads[name].double(), ref, rtol=2e-4, atol=2e-4)


def test_generic_rejects_too_long_sequences():
    q = torch.randn(4, 1, 2)
    with pytest.raises(ValueError, match="sequence 0 has length 4 > max_seq_len=3"):
        hstu_attention(q, q, q, torch.tensor([0, 4]), max_seq_len=3, backend="generic")


def test_torch_compile_smoke():
    torch.manual_seed(0)
    q, k, v = (torch.randn(9, 2, 4, requires_grad=True) for _ in range(3))
    pos = torch.randn(2 * 8 - 1, requires_grad=True)
    offsets = torch.tensor([0, 4, 4, 9])

    def fn(q, k, v, pos):
        return hstu_attention(q, k, v, offsets, 8, pos_bias=pos).square().sum()

    compiled = torch.compile(fn, backend="aot_eager", fullgraph=True)
    got = compiled(q, k, v, pos)
    got.backward()
    grads = [t.grad.clone() for t in (q, k, v, pos)]
    for t in (q, k, v, pos):
        t.grad = None
    want = fn(q, k, v, pos)
    want.backward()
    torch.testing.assert_close(got, want)
    for g, t in zip(grads, (q, k, v, pos)):
        torch.testing.assert_close(g, t.grad)


def test_opcheck():
    torch.manual_seed(0)
    q, k, v = (torch.randn(6, 2, 3, requires_grad=True) for _ in range(3))
    pos = torch.randn(15, requires_grad=True)
    args = (
        q,
        k,
        v,
        torch.tensor([0, 2, 6]),
        8,
        1.0,
        pos,
        None,
        None,
        None,
        None,
        0,
        0.301,
    )
    torch.library.opcheck(torch.ops.torchrec_ascend.hstu_attention.default, args)
    bf16_args = tuple(
        a.detach().bfloat16().requires_grad_()
        if isinstance(a, torch.Tensor) and a.is_floating_point()
        else a
        for a in args
    )
    torch.library.opcheck(torch.ops.torchrec_ascend.hstu_attention.default, bf16_args)
