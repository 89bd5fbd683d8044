"""HSTU attention kernels for the NPU key, built on the device-generic path.

The C++ kernels of ``torchrec_ascend::hstu_attention`` are CPU-only. On an NPU the op's
forward and backward run :func:`torchrec_ascend.ops.hstu_generic.generic_hstu_attention`
(ATen operators over length buckets with bounded padding), so a direct call of the op
on NPU tensors gives the same result as the model's ``backend="auto"`` path.
"""

import torch

from torchrec_ascend.ops.hstu_generic import generic_hstu_attention


def _generic(
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


def hstu_attention_forward(*args):
    """Same contract as ``torchrec_ascend.ops.hstu_attention``; (L, H, D_v) output."""
    with torch.no_grad():
        return _generic(*args)


def hstu_attention_backward(grad_out, q, k, v, offsets, *rest):
    """Gradients (dq, dk, dv, d pos_bias or empty, d ts_bias or empty)."""
    max_seq_len, alpha, pos_bias, ts_bias = rest[:4]
    leaves = [t.detach().requires_grad_() for t in (q, k, v)]
    biases = [
        b.detach().requires_grad_() if b is not None else None
        for b in (pos_bias, ts_bias)
    ]
    with torch.enable_grad():
        out = _generic(*leaves, offsets, max_seq_len, alpha, *biases, *rest[4:])
        wanted = leaves + [b for b in biases if b is not None]
        grads = list(torch.autograd.grad(out, wanted, grad_out, allow_unused=True))
    grads = [g if g is not None else torch.zeros_like(w) for g, w in zip(grads, wanted)]
    empty = q.new_zeros(0)
    dq, dk, dv = grads[:3]
    extra = iter(grads[3:])
    dpos = next(extra) if pos_bias is not None else empty
    dts = next(extra) if ts_bias is not None else empty
    return dq, dk, dv, dpos, dts
