"""Per-token negative logits computed segment by segment, with exact gradients.

The (T, R, D) negative tensor is the largest thing in a per-token sampled softmax.
Autograd through ``F.normalize`` and ``bmm`` keeps the rows, their normalised copy
and, in backward, two more (T, R, D) gradients alive. Here the rows are stored once
(in their storage dtype, off the device when offloading), normalisation and the dot
products run on one segment of valid positions at a time, and backward recomputes
each segment's normalisation instead of saving it. The only (T, R, D) tensor made in
backward is the gradient the embedding lookup needs anyway.
"""

import torch

from torchrec_ascend.negatives.streaming import NegativeStore


def _normalize(rows: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    norm = rows.norm(dim=-1, keepdim=True)
    return rows / norm.clamp_min(eps), norm


class _SegmentedNegativeLogits(torch.autograd.Function):
    @staticmethod
    def forward(ctx, queries, rows, storage_dtype, segment_size, offload, eps):
        store = NegativeStore(rows, storage_dtype, offload)
        num_positions, num_negatives = rows.shape[0], rows.shape[1]
        logits = queries.new_empty(num_positions, num_negatives, queries.shape[1])
        for start, stop, segment in store.forward_segments(segment_size, queries.dtype):
            unit, _ = _normalize(segment, eps)
            logits[start:stop] = torch.bmm(unit, queries[start:stop].transpose(1, 2))
        ctx.save_for_backward(queries)
        # Not in save_for_backward: it may live on the host in another dtype.
        ctx.store = store
        ctx.rows_dtype = rows.dtype
        ctx.segment_size, ctx.eps = segment_size, eps
        return logits

    @staticmethod
    def backward(ctx, grad_logits):
        (queries,) = ctx.saved_tensors
        store, eps = ctx.store, ctx.eps
        need_queries, need_rows = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_queries = torch.zeros_like(queries) if need_queries else None
        grad_rows = None
        if need_rows:
            grad_rows = grad_logits.new_empty(
                (*store.rows.shape[:2], queries.shape[-1]), dtype=ctx.rows_dtype
            )
        for start, stop, segment in store.segments(ctx.segment_size, queries.dtype):
            unit, norm = _normalize(segment, eps)
            grad = grad_logits[start:stop]
            if need_queries:
                grad_queries[start:stop] = torch.bmm(grad.transpose(1, 2), unit)
            if need_rows:
                grad_unit = torch.bmm(grad, queries[start:stop])
                # Derivative of x / max(|x|, eps): the radial part vanishes only
                # where the norm is not clamped.
                radial = (unit * grad_unit).sum(-1, keepdim=True) * (norm > eps)
                grad_rows[start:stop] = (grad_unit - unit * radial) / norm.clamp_min(
                    eps
                )
        ctx.store = None
        return grad_queries, grad_rows, None, None, None, None


def segmented_negative_logits(
    queries: torch.Tensor,
    rows: torch.Tensor,
    *,
    storage_dtype: torch.dtype = torch.float32,
    segment_size: int = 256,
    offload: bool = True,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Cosine logits of each position's negatives against K query vectors.

    ``logits[t, r, m] = <normalize(rows[t, r]), queries[t, m]>``. With K = 1 and
    ``queries[t, 0]`` the query of token t this is the per-token sampled-softmax
    logit; K > 1 serves intra-batch logit sharing, where ``queries[t, m]`` is the
    query of another token that reuses position t's negatives.

    Args:
        queries: (T, K, D) x float32 query vectors paired with each position.
        rows: (T, R, D) x float32 raw (unnormalised) negative embeddings, e.g. the
            output of the item-table lookup.
        storage_dtype: dtype the rows are kept in between forward and backward and
            computed from (float16/bfloat16 round them; the math stays fp32).
        segment_size: valid positions per segment; bounds the working set.
        offload: on an accelerator, keep the stored rows in pinned host memory and
            stream them back double-buffered.
        eps: normalisation floor, as in ``F.normalize``.

    Returns:
        (T, R, K) x queries.dtype logits (not divided by a temperature).
    """
    if queries.dim() != 3 or rows.dim() != 3:
        raise ValueError(
            "queries must be (T, K, D) and rows (T, R, D); got "
            f"{tuple(queries.shape)} and {tuple(rows.shape)}"
        )
    if queries.shape[0] != rows.shape[0] or queries.shape[2] != rows.shape[2]:
        raise ValueError(
            f"queries {tuple(queries.shape)} and rows {tuple(rows.shape)} must agree "
            "on T (dim 0) and D (dim 2)"
        )
    if queries.device != rows.device:
        raise ValueError(
            f"queries on {queries.device} but rows on {rows.device}; the lookup "
            "output and the encoder output must share a device"
        )
    if segment_size < 1:
        raise ValueError(f"segment_size must be >= 1, got {segment_size}")
    return _SegmentedNegativeLogits.apply(
        queries, rows, storage_dtype, segment_size, offload, eps
    )
