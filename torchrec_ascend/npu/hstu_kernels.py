"""Device-generic HSTU attention for the NPU key: padded ATen math, fwd and bwd.

The C++ kernels of ``torchrec_ascend::hstu_attention`` are CPU-only. This is the
minimal correct path for an NPU: pad every sequence to ``max_seq_len``, build the
(B, H, N, N) score tensor and mask, and cut the result back to jagged rows. The
backward is written out by hand because it runs below autograd.
"""

# Limitation: memory is O(B * H * N^2) (every sequence padded to max_seq_len) and the
# time-bias buckets use float64 logs to match the CPU kernel bit for bit; a tiled,
# fused NPU kernel belongs to the device-generic HSTU attention work.

import torch
import torch.nn.functional as F

from torchrec_ascend.npu._segments import dense_rows


class _Padded:
    """Padded views of one HSTU call: layout, mask and biases, shared by fwd and bwd."""

    def __init__(
        self,
        offsets,
        max_seq_len,
        pos_bias,
        ts_bias,
        timestamps,
        query_timestamps,
        num_targets,
        contextual_len,
        ts_bucket_divisor,
        total,
        dtype,
    ):
        n = max_seq_len
        device = offsets.device
        lengths = (offsets[1:] - offsets[:-1]).long()
        if lengths.numel() and int(lengths.max()) > n:
            raise ValueError(
                f"hstu_attention: a sequence has {int(lengths.max())} rows, more than "
                f"max_seq_len={n}"
            )
        self.batch = lengths.numel()
        self.n = n
        self.flat, _, _ = dense_rows([offsets], [n], total)

        i = torch.arange(n, device=device)
        history_end = lengths.clone()
        if num_targets is not None:
            targets = num_targets.long()
            bound = (lengths - contextual_len).clamp(min=0)
            bad = (targets < 0) | (targets > bound)
            if bool(bad.any()):
                b = int(torch.nonzero(bad)[0])
                raise ValueError(
                    f"hstu_attention: num_targets[{b}]={int(targets[b])} must be in "
                    f"[0, {int(bound[b])}] for a sequence of length {int(lengths[b])} "
                    f"with {contextual_len} contextual tokens"
                )
            history_end = lengths - targets
        he = history_end.view(-1, 1, 1)
        qi, kj = i.view(1, n, 1), i.view(1, 1, n)
        inside = (qi < lengths.view(-1, 1, 1)) & (kj < lengths.view(-1, 1, 1))
        context = (qi < contextual_len) | (kj < contextual_len)
        history = torch.where(context, torch.ones_like(inside), kj <= qi)
        self.mask = inside & torch.where(kj >= he, qi == kj, history)

        self.pos_index = None
        if pos_bias is not None:
            pid = torch.minimum(i.view(1, n), history_end.view(-1, 1))
            rel = pid.unsqueeze(2) - pid.unsqueeze(1) + n - 1
            self.pos_index = rel.clamp(0, 2 * n - 2)

        self.ts_index = None
        if ts_bias is not None:
            tq = self.pad(query_timestamps.view(-1, 1)).view(self.batch, n)
            tk = self.pad(timestamps.view(-1, 1)).view(self.batch, n)
            gap = (tq.unsqueeze(2) - tk.unsqueeze(1)).abs().double().clamp(min=1.0)
            bucket = torch.floor(torch.log(gap) / ts_bucket_divisor).long()
            self.ts_index = bucket.clamp(0, ts_bias.numel() - 1)

    def pad(self, rows: torch.Tensor) -> torch.Tensor:
        """(L, ...) -> (B, N, ...) zero padded."""
        dense = rows.new_zeros((self.batch * self.n, *rows.shape[1:]))
        dense.index_copy_(0, self.flat, rows)
        return dense.view(self.batch, self.n, *rows.shape[1:])

    def unpad(self, dense: torch.Tensor) -> torch.Tensor:
        """(B, N, ...) -> (L, ...)."""
        return dense.reshape(self.batch * self.n, *dense.shape[2:]).index_select(
            0, self.flat
        )

    def bias(self, pos_bias, ts_bias):
        bias = 0
        if self.pos_index is not None:
            bias = bias + pos_bias[self.pos_index]
        if self.ts_index is not None:
            bias = bias + ts_bias[self.ts_index]
        return bias


def _scores(layout, q, k, alpha, pos_bias, ts_bias):
    qp, kp = layout.pad(q), layout.pad(k)
    z = alpha * torch.einsum("bihd,bjhd->bhij", qp, kp)
    bias = layout.bias(pos_bias, ts_bias)
    if torch.is_tensor(bias):
        z = z + bias.unsqueeze(1)
    return qp, kp, z


def hstu_attention_forward(
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
    """Same contract as ``torchrec_ascend.ops.hstu_attention``; (L, H, D_v) output."""
    layout = _Padded(
        offsets,
        max_seq_len,
        pos_bias,
        ts_bias,
        timestamps,
        query_timestamps,
        num_targets,
        contextual_len,
        ts_bucket_divisor,
        q.shape[0],
        q.dtype,
    )
    _, _, z = _scores(layout, q, k, alpha, pos_bias, ts_bias)
    weights = F.silu(z) * (layout.mask.unsqueeze(1).to(z.dtype) / max_seq_len)
    out = torch.einsum("bhij,bjhd->bihd", weights, layout.pad(v))
    return layout.unpad(out)


def hstu_attention_backward(
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
    """Gradients (dq, dk, dv, d pos_bias or empty, d ts_bias or empty)."""
    layout = _Padded(
        offsets,
        max_seq_len,
        pos_bias,
        ts_bias,
        timestamps,
        query_timestamps,
        num_targets,
        contextual_len,
        ts_bucket_divisor,
        q.shape[0],
        q.dtype,
    )
    qp, kp, z = _scores(layout, q, k, alpha, pos_bias, ts_bias)
    vp, gp = layout.pad(v), layout.pad(grad_out)
    scale = layout.mask.unsqueeze(1).to(z.dtype) / max_seq_len
    sig = torch.sigmoid(z)
    weights = z * sig * scale

    dv = torch.einsum("bhij,bihd->bjhd", weights, gp)
    dweights = torch.einsum("bihd,bjhd->bhij", gp, vp)
    dz = dweights * scale * sig * (1 + z * (1 - sig))
    dq = alpha * torch.einsum("bhij,bjhd->bihd", dz, kp)
    dk = alpha * torch.einsum("bhij,bihd->bjhd", dz, qp)

    empty = q.new_zeros(0)
    dz_heads = dz.sum(dim=1)
    dpos = empty
    if pos_bias is not None:
        dpos = torch.zeros_like(pos_bias).index_add_(
            0, layout.pos_index.reshape(-1), dz_heads.reshape(-1)
        )
    dts = empty
    if ts_bias is not None:
        dts = torch.zeros_like(ts_bias).index_add_(
            0, layout.ts_index.reshape(-1), dz_heads.reshape(-1)
        )
    return layout.unpad(dq), layout.unpad(dk), layout.unpad(dv), dpos, dts
