"""Device-generic jagged HSTU attention: ATen operators on length buckets.

This is the kernel NPU and CUDA builds run until native kernels exist. Sequences are
grouped into buckets of similar length so each bucket is one dense batched matmul
(NPU cube / GPU tensor core friendly) whose padding is bounded, instead of padding the
whole batch to its longest sequence. Autograd comes from the ATen operators, so it
needs no backward of its own.
"""

from dataclasses import dataclass

import numpy as np
import torch

from torchrec_ascend.ops.hstu_dense import (
    DEFAULT_TS_BUCKET_DIVISOR,
    dense_hstu_attention,
)
from torchrec_ascend.ops.jagged import validate_offsets

# Largest share of a bucket's (query, key) score entries that may be padding.
DEFAULT_MAX_WASTE = 0.15


@dataclass(frozen=True)
class LengthBucket:
    """Sequences padded together.

    Attributes:
        sequences: indices into the batch, longest first.
        width: padded length, the longest sequence of the bucket.
    """

    sequences: tuple[int, ...]
    width: int


def plan_length_buckets(
    lengths: list[int], max_waste: float = DEFAULT_MAX_WASTE
) -> list[LengthBucket]:
    """Fewest buckets of similar lengths whose padding stays under ``max_waste``.

    Waste counts score entries: a sequence of n rows in a bucket of width P uses
    n^2 of the P^2 entries computed for it. Each bucket costs a few kernel launches,
    so the plan takes the smallest number of buckets k for which the least total
    waste (found by dynamic programming over the sorted distinct lengths, a bucket
    being a run of consecutive lengths) is at most ``max_waste``.

    Args:
        lengths: sequence lengths of the batch.
        max_waste: in [0, 1), bound on the whole batch's padded share.

    Returns:
        Buckets covering every non-empty sequence once, longest first.
    """
    if not 0.0 <= max_waste < 1.0:
        raise ValueError(f"max_waste must be in [0, 1), got {max_waste}")
    distinct = sorted({n for n in lengths if n > 0}, reverse=True)
    if not distinct:
        return []
    width = np.array(distinct, dtype=np.float64)
    count = np.array([lengths.count(n) for n in distinct], dtype=np.float64)
    before = np.concatenate([[0.0], np.cumsum(count)])  # sequences before each length
    used = float((count * width**2).sum())
    m = len(distinct)

    # cost[i, j - 1]: the bucket of distinct lengths i .. j - 1 padded to width[i].
    rows = np.arange(m)[:, None]
    cost = (before[None, 1:] - before[:m, None]) * width[:m, None] ** 2
    cost[rows >= np.arange(1, m + 1)[None, :]] = np.inf
    best = np.full(m + 1, np.inf)
    best[0] = 0.0
    choices = []
    for _ in range(m):
        total = best[:m, None] + cost
        choices.append(total.argmin(axis=0))
        best = np.concatenate([[np.inf], total.min(axis=0)])
        if used >= (1.0 - max_waste) * best[m]:
            break

    # Walk the choices back from the last distinct length.
    bounds, end = [], m
    for choice in reversed(choices):
        start = int(choice[end - 1])
        bounds.append((start, end))
        end = start
    members: dict[int, list[int]] = {n: [] for n in distinct}
    for b, n in enumerate(lengths):
        if n > 0:
            members[n].append(b)
    return [
        LengthBucket(
            tuple(b for n in distinct[start:end] for b in members[n]),
            distinct[start],
        )
        for start, end in reversed(bounds)
    ]


def padding_waste(lengths: list[int], buckets: list[LengthBucket]) -> float:
    """Share of computed score entries that are padding (0 for an empty batch)."""
    used = sum(lengths[b] ** 2 for bucket in buckets for b in bucket.sequences)
    computed = sum(len(bucket.sequences) * bucket.width**2 for bucket in buckets)
    return 1.0 - used / computed if computed else 0.0


def _query_blocks(width: int) -> list[tuple[int, int]]:
    """Splits a bucket's rows into up to 8 query blocks of at least 256 rows.

    With c blocks a causal bucket computes (c + 1) / (2c) of the full score matrix
    and holds only one block's scores at a time.
    """
    count = max(1, min(8, width // 256))
    step = -(-width // count)
    return [(i0, min(width, i0 + step)) for i0 in range(0, width, step)]


def generic_hstu_attention(
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
    max_waste: float = DEFAULT_MAX_WASTE,
) -> torch.Tensor:
    """Jagged HSTU attention from ATen operators, bucketed by length.

    Same arguments, semantics and result as
    :func:`torchrec_ascend.ops.hstu_attention`, plus ``max_waste`` (see
    :func:`plan_length_buckets`). Differentiable with respect to q, k, v and both
    biases through autograd.

    Returns:
        (L, H, D_v), jagged like ``q``.
    """
    # Limitation: a Python function, not a registered op: the host-side bucket plan
    # makes torch.compile break the graph here, and the op's CUDA/NPU dispatch keys
    # are not bound to it (callers reach it through hstu_attention(backend="auto")).
    total, heads, dim_v = q.shape[0], q.shape[1], v.shape[2]
    # The bucket plan is host-side: one small device-to-host copy of the offsets.
    validate_offsets(offsets, total)
    host_offsets = offsets.detach().to("cpu", torch.int64)
    starts = host_offsets[:-1].tolist()
    lengths = (host_offsets[1:] - host_offsets[:-1]).tolist()
    if any(n > max_seq_len for n in lengths):
        bad = next(b for b, n in enumerate(lengths) if n > max_seq_len)
        raise ValueError(
            f"sequence {bad} has length {lengths[bad]} > max_seq_len={max_seq_len}"
        )
    buckets = plan_length_buckets(lengths, max_waste)
    if not buckets:
        return q.new_zeros(total, heads, dim_v) + 0 * (q.sum() + k.sum() + v.sum())

    # An extra all-zero row at index `total` is what padding positions gather.
    def extend(t):
        return torch.cat([t, t.new_zeros((1, *t.shape[1:]))])

    q_ext, k_ext, v_ext = extend(q), extend(k), extend(v)
    use_ts = ts_bias is not None
    ts_ext = extend(timestamps) if use_ts else None
    qts_ext = extend(query_timestamps) if use_ts else None

    outputs, rows = [], []
    for bucket in buckets:
        seqs = list(bucket.sequences)
        seq_lengths = torch.tensor([lengths[b] for b in seqs], dtype=torch.int64)
        cols = torch.arange(bucket.width)
        index = torch.tensor([starts[b] for b in seqs])[:, None] + cols[None, :]
        inside = cols[None, :] < seq_lengths[:, None]
        index = torch.where(inside, index, total).to(q.device)
        inside = inside.to(q.device)
        targets = num_targets[seqs].long() if num_targets is not None else None
        for i0, i1 in _query_blocks(bucket.width):
            # Causal query block [i0, i1) sees keys [0, i1), unless contextual rows
            # (which see the whole history) are in it.
            kend = bucket.width if i0 < contextual_len else i1
            q_index, k_index = index[:, i0:i1], index[:, :kend]
            out = dense_hstu_attention(
                q_ext[q_index],
                k_ext[k_index],
                v_ext[k_index],
                seq_lengths,
                max_seq_len,
                alpha,
                pos_bias,
                ts_bias,
                ts_ext[k_index] if use_ts else None,
                qts_ext[q_index] if use_ts else None,
                targets,
                contextual_len,
                ts_bucket_divisor,
                query_start=i0,
            )
            block_inside = inside[:, i0:i1]
            outputs.append(out[block_inside])
            rows.append(q_index[block_inside])

    # Rows come out grouped by bucket; scatter them back to jagged order.
    out = torch.cat(outputs)
    order = torch.cat(rows)
    result = out.new_zeros(total, heads, dim_v)
    return result.index_copy(0, order, out)
