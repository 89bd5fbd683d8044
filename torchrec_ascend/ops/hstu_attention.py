"""Jagged HSTU attention: Python front-end, fake kernels and autograd.

The kernels live in C++ (``src_cpp/hstu_attention.cpp``) and are registered as
``torch.ops.torchrec_ascend.hstu_attention`` and ``..._backward``. This module gives
them a fake (meta) implementation for ``torch.compile`` and an autograd formula, so the
op behaves like any ATen op.
"""

import torch

from torchrec_ascend.ops.hstu_dense import DEFAULT_TS_BUCKET_DIVISOR
from torchrec_ascend.ops.hstu_generic import generic_hstu_attention

_OP = torch.ops.torchrec_ascend


@torch.library.register_fake("torchrec_ascend::hstu_attention")
def _hstu_attention_fake(
    q,
    k,
    v,
    offsets,
    max_seq_len,
    alpha,
    pos_bias,
    ts_bias,
    timestamps,
    query_timestamps,
    num_targets,
    contextual_len,
    ts_bucket_divisor,
):
    return q.new_empty((q.shape[0], q.shape[1], v.shape[2]))


@torch.library.register_fake("torchrec_ascend::hstu_attention_backward")
def _hstu_attention_backward_fake(
    grad_out,
    q,
    k,
    v,
    offsets,
    max_seq_len,
    alpha,
    pos_bias,
    ts_bias,
    timestamps,
    query_timestamps,
    num_targets,
    contextual_len,
    ts_bucket_divisor,
):
    empty = q.new_empty((0,))
    return (
        torch.empty_like(q),
        torch.empty_like(k),
        torch.empty_like(v),
        torch.empty_like(pos_bias) if pos_bias is not None else empty,
        torch.empty_like(ts_bias) if ts_bias is not None else empty,
    )


def _setup_context(ctx, inputs, output) -> None:
    (
        q,
        k,
        v,
        offsets,
        max_seq_len,
        alpha,
        pos_bias,
        ts_bias,
        timestamps,
        query_timestamps,
        num_targets,
        contextual_len,
        ts_bucket_divisor,
    ) = inputs
    ctx.save_for_backward(
        q, k, v, offsets, pos_bias, ts_bias, timestamps, query_timestamps, num_targets
    )
    ctx.max_seq_len = max_seq_len
    ctx.alpha = alpha
    ctx.contextual_len = contextual_len
    ctx.ts_bucket_divisor = ts_bucket_divisor


def _backward(ctx, grad_out):
    (q, k, v, offsets, pos_bias, ts_bias, timestamps, query_timestamps, num_targets) = (
        ctx.saved_tensors
    )
    dq, dk, dv, dpos, dts = _OP.hstu_attention_backward(
        grad_out,
        q,
        k,
        v,
        offsets,
        ctx.max_seq_len,
        ctx.alpha,
        pos_bias,
        ts_bias,
        timestamps,
        query_timestamps,
        num_targets,
        ctx.contextual_len,
        ctx.ts_bucket_divisor,
    )
    return (
        dq,
        dk,
        dv,
        None,
        None,
        None,
        dpos if pos_bias is not None else None,
        dts if ts_bias is not None else None,
        None,
        None,
        None,
        None,
        None,
    )


torch.library.register_autograd(
    "torchrec_ascend::hstu_attention", _backward, setup_context=_setup_context
)


def hstu_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    offsets: torch.Tensor,
    max_seq_len: int,
    *,
    alpha: float = 1.0,
    pos_bias: torch.Tensor | None = None,
    ts_bias: torch.Tensor | None = None,
    timestamps: torch.Tensor | None = None,
    query_timestamps: torch.Tensor | None = None,
    num_targets: torch.Tensor | None = None,
    contextual_len: int = 0,
    ts_bucket_divisor: float = DEFAULT_TS_BUCKET_DIVISOR,
    backend: str = "auto",
) -> torch.Tensor:
    """Pointwise (softmax-free) HSTU attention over jagged sequences, no padding.

    For sequence b (rows ``offsets[b]:offsets[b+1]``), head h, query i, key j::

        z_ij = alpha * q_i . k_j + pos_bias[pid(i) - pid(j) + N - 1]
               + ts_bias[bucket(query_timestamps_i - timestamps_j)]
        out_i = sum_j valid(i, j) * silu(z_ij) / N * v_j

    where N is ``max_seq_len`` (a static normaliser, so a sample's output does not
    depend on its batch), ``bucket(d) = clamp(floor(ln(max(|d|, 1)) / divisor), 0,
    num_buckets - 1)`` and ``pid(i) = min(i, n - num_targets[b])``. ``valid`` is
    causal within the history; the last ``num_targets[b]`` rows are candidates that
    see the history and themselves only; the first ``contextual_len`` rows see the
    whole history and are seen by every row.

    Args:
        q: (L, H, D_qk) x float32/float64/bfloat16, L = sum of sequence lengths.
            bf16 is computed with fp32 accumulation.
        k: (L, H, D_qk), same dtype.
        v: (L, H, D_v), same dtype.
        offsets: (B+1,) x int32/int64, starts at 0, non-decreasing, ends at L.
        max_seq_len: N, the longest allowed sequence and the attention normaliser.
        alpha: scale on q . k.
        pos_bias: (2N-1,) learnable relative-position bias, shared across heads.
        ts_bias: (num_buckets,) learnable log-time-gap bias, shared across heads;
            needs ``timestamps`` and ``query_timestamps``.
        timestamps: (L,) x int64, each key's event time.
        query_timestamps: (L,) x int64, each query's request time (the time of the
            item it predicts).
        num_targets: (B,) x int32/int64 candidates at the end of each sequence.
        contextual_len: contextual prefix length, the same for every sequence.
        ts_bucket_divisor: log-bucket width of the time bias.
        backend: "cpp" (the fused CPU kernel), "generic" (ATen operators on length
            buckets, any device) or "auto" (cpp for CPU tensors, else generic).

    Returns:
        (L, H, D_v) attention output, jagged like ``q``.

    Example::

        >>> L, H, D = 5, 2, 4
        >>> q, k, v = (torch.randn(L, H, D) for _ in range(3))
        >>> out = hstu_attention(q, k, v, torch.tensor([0, 2, 5]), max_seq_len=8)
        >>> out.shape
        torch.Size([5, 2, 4])
    """
    if backend not in ("auto", "cpp", "generic"):
        raise ValueError(f"backend must be auto, cpp or generic, got {backend!r}")
    if backend == "generic" or (backend == "auto" and q.device.type != "cpu"):
        return generic_hstu_attention(
            q,
            k,
            v,
            offsets,
            max_seq_len,
            alpha=alpha,
            pos_bias=pos_bias,
            ts_bias=ts_bias,
            timestamps=timestamps,
            query_timestamps=query_timestamps,
            num_targets=num_targets,
            contextual_len=contextual_len,
            ts_bucket_divisor=ts_bucket_divisor,
        )
    return _OP.hstu_attention(
        q,
        k,
        v,
        offsets,
        max_seq_len,
        alpha,
        pos_bias,
        ts_bias,
        timestamps,
        query_timestamps,
        num_targets,
        contextual_len,
        ts_bucket_divisor,
    )
