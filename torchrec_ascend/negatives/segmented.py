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


def _inverse_norm(rows: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(s, R, 1) 1 / max(|row|, eps), and the mask of rows whose norm is not clamped.

    Normalisation is folded into the small (s, R, K) logits and gradients instead of
    materialising normalised (s, R, D) rows.
    """
    norm = torch.linalg.vector_norm(rows, dim=-1, keepdim=True)
    return norm.clamp_min(eps).reciprocal(), norm > eps


class _SegmentedNegativeLogits(torch.autograd.Function):
    @staticmethod
    def forward(ctx, queries, rows, storage_dtype, segment_size, offload, eps):
        store = NegativeStore(rows, storage_dtype, offload)
        num_positions, num_negatives = rows.shape[0], rows.shape[1]
        logits = queries.new_empty(num_positions, num_negatives, queries.shape[1])
        for start, stop, segment in store.forward_segments(segment_size, queries.dtype):
            inverse, _ = _inverse_norm(segment, eps)
            raw = torch.bmm(segment, queries[start:stop].transpose(1, 2))
            torch.mul(raw, inverse, out=logits[start:stop])
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
            inverse, unclamped = _inverse_norm(segment, eps)
            # Gradient with respect to the raw dot products <row, query>.
            grad = grad_logits[start:stop] * inverse
            if need_queries:
                grad_queries[start:stop] = torch.bmm(grad.transpose(1, 2), segment)
            if need_rows:
                # d(x / max(|x|, eps)): the radial part is removed only where the
                # norm is not clamped; with g = dL/d<x, q>:
                # dL/dx = g q - x (x . g q) / |x|^2.
                grad_direct = torch.bmm(grad, queries[start:stop])
                radial = (segment * grad_direct).sum(-1, keepdim=True)
                radial *= inverse.square() * unclamped
                torch.addcmul(
                    grad_direct, segment, radial, value=-1, out=grad_rows[start:stop]
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
