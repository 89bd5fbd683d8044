"""Plain float64 references for the kernels, written for clarity, not speed.

Each sequence is padded to the batch maximum, the full (N x N) score matrix is built
with a mask from the definitions, and the result is cut back to jagged rows.
"""

import math

import torch


def valid_mask(n: int, num_targets: int, contextual: int) -> torch.Tensor:
    """(n, n) bool: which key j each query i may attend to."""
    history_end = n - num_targets
    contextual = min(contextual, n)
    mask = torch.zeros(n, n, dtype=torch.bool)
    for i in range(n):
        for j in range(n):
            if j >= history_end:
                mask[i, j] = i == j
            elif i < contextual or j < contextual:
                mask[i, j] = True
            else:
                mask[i, j] = j <= i
    return mask


def reference_hstu_attention(
    q,
    k,
    v,
    offsets,
    max_seq_len,
    alpha=1.0,
    pos_bias=None,
    ts_bias=None,
    timestamps=None,
    query_timestamps=None,
    num_targets=None,
    contextual_len=0,
    ts_bucket_divisor=0.301,
):
    """Padded float64 HSTU attention; differentiable through autograd."""
    offsets = offsets.long().tolist()
    batch = len(offsets) - 1
    lengths = [offsets[b + 1] - offsets[b] for b in range(batch)]
    width = max(lengths, default=0)
    heads, dim_qk, dim_v = q.shape[1], q.shape[2], v.shape[2]
    qd, kd, vd = (t.double() for t in (q, k, v))

    qp = qd.new_zeros(batch, width, heads, dim_qk)
    kp = qd.new_zeros(batch, width, heads, dim_qk)
    vp = qd.new_zeros(batch, width, heads, dim_v)
    outs = []
    for b in range(batch):
        n, start = lengths[b], offsets[b]
        if n == 0:
            continue
        qp[b, :n], kp[b, :n], vp[b, :n] = (
            qd[start : start + n],
            kd[start : start + n],
            vd[start : start + n],
        )
    scores = alpha * torch.einsum("bihd,bjhd->bhij", qp, kp)
    for b in range(batch):
        n, start = lengths[b], offsets[b]
        if n == 0:
            continue
        targets = int(num_targets[b]) if num_targets is not None else 0
        history_end = n - targets
        bias = qd.new_zeros(n, n)
        if pos_bias is not None:
            pid = torch.clamp(torch.arange(n), max=history_end)
            rel = pid[:, None] - pid[None, :] + max_seq_len - 1
            rel = rel.clamp(0, 2 * max_seq_len - 2)
            bias = bias + pos_bias.double()[rel]
        if ts_bias is not None:
            tq = query_timestamps[start : start + n].double()
            tk = timestamps[start : start + n].double()
            gap = (tq[:, None] - tk[None, :]).abs().clamp(min=1.0)
            bucket = torch.floor(torch.log(gap) / ts_bucket_divisor).long()
            bucket = bucket.clamp(0, ts_bias.numel() - 1)
            bias = bias + ts_bias.double()[bucket]
        z = scores[b, :, :n, :n] + bias
        weights = torch.nn.functional.silu(z) / max_seq_len
        weights = weights * valid_mask(n, targets, contextual_len).double()
        outs.append(torch.einsum("hij,jhd->ihd", weights, vp[b, :n]))
    if not outs:
        # Keep the graph connected so gradients (all zero) still flow to q, k, v.
        return qd.new_zeros(0, heads, dim_v) + 0 * (qd.sum() + kd.sum() + vd.sum())
    return torch.cat(outs, dim=0)


assert math.isclose(math.log(2) / 2.3, 0.301, rel_tol=1e-2)


def _layer_norm(x):
    mean = x.mean(dim=-1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + 1e-6)


def reference_uvqk(x, weight):
    """float64 silu(LayerNorm(x) @ weight), LayerNorm without affine, eps 1e-6."""
    y = _layer_norm(x.double()) @ weight.double()
    return y * torch.sigmoid(y)


def reference_output_gate(attn, u, dropout_mask=None):
    """float64 u * LayerNorm(attn) [* dropout_mask]."""
    out = u.double() * _layer_norm(attn.double())
    return out if dropout_mask is None else out * dropout_mask.double()


def split_sequences(values, offsets):
    """List of per-sequence row blocks (plain slicing)."""
    offsets = [int(o) for o in offsets]
    return [values[offsets[b] : offsets[b + 1]] for b in range(len(offsets) - 1)]


def offsets_of(blocks):
    out = [0]
    for block in blocks:
        out.append(out[-1] + block.shape[0])
    return out
