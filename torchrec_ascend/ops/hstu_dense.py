"""Dense (padded) HSTU attention written with native PyTorch operators only.

Two users: the padded baseline of the benchmarks (every sequence padded to the batch
maximum, the way a plain PyTorch model computes jagged attention), and the
device-generic kernel, which calls the same dense core on length buckets with bounded
padding. Autograd comes from the ATen operators.
"""

import torch
import torch.nn.functional as F

from torchrec_ascend.ops.jagged import segment_ids

# ln(2) / 2.3: the log-time bucket width of the HSTU reference RAB (about 2.3 buckets
# per doubling of the time gap).
DEFAULT_TS_BUCKET_DIVISOR = 0.301


def dense_hstu_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    lengths: torch.Tensor,
    max_seq_len: int,
    alpha: float = 1.0,
    pos_bias: torch.Tensor | None = None,
    ts_bias: torch.Tensor | None = None,
    timestamps: torch.Tensor | None = None,
    query_timestamps: torch.Tensor | None = None,
    num_targets: torch.Tensor | None = None,
    contextual_len: int = 0,
    ts_bucket_divisor: float = DEFAULT_TS_BUCKET_DIVISOR,
    query_start: int = 0,
) -> torch.Tensor:
    """HSTU attention on padded sequences (same semantics as ``hstu_attention``).

    The queries may be a block of rows ``[query_start, query_start + Q)`` of each
    sequence while the keys are rows ``[0, K)``, so callers can skip the key blocks
    a causal query block never sees.

    Args:
        q: (B, Q, H, D_qk) padded queries; rows at or past ``lengths[b]`` are ignored.
        k: (B, K, H, D_qk) padded keys.
        v: (B, K, H, D_v).
        lengths: (B,) x int64 true lengths.
        timestamps: (B, K) x int64 key times when ``ts_bias`` is given.
        query_timestamps: (B, Q) x int64 query times when ``ts_bias`` is given.
        num_targets: (B,) x int64 or None.
        query_start: sequence position of the first query row.
        (the rest as in :func:`torchrec_ascend.ops.hstu_attention`)

    Returns:
        (B, Q, H, D_v) output; padded rows are zero.
    """
    device = q.device
    lengths = lengths.to(device=device, dtype=torch.int64)
    targets = (
        num_targets.to(device=device, dtype=torch.int64)
        if num_targets is not None
        else torch.zeros_like(lengths)
    )
    history_end = (lengths - targets)[:, None, None]
    contextual = torch.clamp(lengths, max=contextual_len)[:, None, None]
    qi = torch.arange(query_start, query_start + q.shape[1], device=device)
    kj = torch.arange(k.shape[1], device=device)
    i, j = qi[None, :, None], kj[None, None, :]
    inside = (i < lengths[:, None, None]) & (j < lengths[:, None, None])
    valid = torch.where(
        j >= history_end, i == j, (i < contextual) | (j < contextual) | (j <= i)
    )
    valid = valid & inside  # (B, Q, K)

    bias = None
    if pos_bias is not None:
        he = history_end[:, :, 0]
        rel = (
            torch.minimum(qi[None, :], he)[:, :, None]
            - torch.minimum(kj[None, :], he)[:, None, :]
        )
        bias = pos_bias[(rel + max_seq_len - 1).clamp(0, 2 * max_seq_len - 2)]
    if ts_bias is not None:
        gap = (query_timestamps[:, :, None] - timestamps[:, None, :]).abs().clamp(min=1)
        # float64 log so bucket edges agree with the C++ kernel.
        bucket = torch.floor(torch.log(gap.double()) / ts_bucket_divisor).long()
        time_term = ts_bias[bucket.clamp(0, ts_bias.numel() - 1)]
        bias = time_term if bias is None else bias + time_term

    qh, kh, vh = (t.transpose(1, 2) for t in (q, k, v))  # (B, H, rows, D)
    scores = torch.matmul(qh, kh.transpose(-1, -2))
    if alpha != 1.0:
        scores = scores * alpha
    if bias is not None:
        scores = scores + bias[:, None].to(scores.dtype)
    weights = F.silu(scores) * (valid[:, None].to(scores.dtype) / max_seq_len)
    return torch.matmul(weights, vh).transpose(1, 2)


def padded_hstu_attention(
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
) -> torch.Tensor:
    """Jagged in, jagged out, but padded to the batch maximum in between.

    The native-PyTorch baseline the fused kernels are measured against: it pads
    (L, H, D) rows to (B, max_len, H, D), runs :func:`dense_hstu_attention` and cuts
    the result back to (L, H, D_v) rows. Arguments as ``hstu_attention``.
    """
    lengths = (offsets[1:] - offsets[:-1]).long()
    total = q.shape[0]
    width = int(lengths.max()) if lengths.numel() else 0
    rows = segment_ids(offsets, total)
    cols = torch.arange(total, device=q.device) - offsets.long()[rows]

    def pad(t):
        out = t.new_zeros((lengths.numel(), width, *t.shape[1:]))
        return out.index_put((rows, cols), t)

    out = dense_hstu_attention(
        pad(q),
        pad(k),
        pad(v),
        lengths,
        max_seq_len,
        alpha,
        pos_bias,
        ts_bias,
        pad(timestamps) if ts_bias is not None else None,
        pad(query_timestamps) if ts_bias is not None else None,
        num_targets,
        contextual_len,
        ts_bucket_divisor,
    )
    return out[rows, cols]
