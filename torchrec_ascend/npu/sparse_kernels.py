"""NPU kernels for fbgemm's sparse (KJT) operators, written with ATen ops only.

Each function has exactly the signature and results of the fbgemm operator it serves,
so the same function is registered for the PrivateUse1 key and tested on CPU against
fbgemm's CPU kernel.
"""

import torch

from torchrec_ascend.npu._segments import complete_cumsum, gather_segments, segment_of


def asynchronous_complete_cumsum(t_in: torch.Tensor) -> torch.Tensor:
    """(N,) -> (N+1,) inclusive sum with a leading 0; (R, N) -> (R, N+1) per row."""
    if t_in.dim() not in (1, 2):
        raise ValueError(f"t_in must be 1-D or 2-D, got shape {tuple(t_in.shape)}")
    return complete_cumsum(t_in)


def asynchronous_inclusive_cumsum(t_in: torch.Tensor) -> torch.Tensor:
    """(N,) -> (N,) running sum, same dtype."""
    return torch.cumsum(t_in, dim=0).to(t_in.dtype)


def asynchronous_exclusive_cumsum(t_in: torch.Tensor) -> torch.Tensor:
    """(N,) -> (N,) running sum of the elements before each position."""
    return complete_cumsum(t_in)[:-1]


def _permute_segments(
    permute: torch.Tensor,
    segment_lengths: torch.Tensor,
    values: torch.Tensor,
    weights: torch.Tensor | None,
    permuted_lengths_sum: int | None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    _, source = gather_segments(segment_lengths, permute, permuted_lengths_sum)
    permuted_weights = None if weights is None else weights.index_select(0, source)
    return values.index_select(0, source), permuted_weights


def permute_1D_sparse_data(
    permute: torch.Tensor,
    lengths: torch.Tensor,
    values: torch.Tensor,
    weights: torch.Tensor | None = None,
    permuted_lengths_sum: int | None = None,
):
    """Reorders bags: bag ``permute[i]`` of ``lengths`` becomes bag i.

    Args:
        permute: (S',) x int32/int64 source bag of each output bag.
        lengths: (S,) bag lengths.
        values: (sum(lengths),) bag contents; ``weights`` likewise, optional.

    Returns:
        ((S',) permuted lengths, permuted values, permuted weights or None).
    """
    new_values, new_weights = _permute_segments(
        permute, lengths, values, weights, permuted_lengths_sum
    )
    return lengths.index_select(0, permute.long()), new_values, new_weights


def permute_2D_sparse_data(
    permute: torch.Tensor,
    lengths: torch.Tensor,
    values: torch.Tensor,
    weights: torch.Tensor | None = None,
    permuted_lengths_sum: int | None = None,
):
    """Reorders features of a KJT: feature ``permute[i]`` becomes feature i.

    Args:
        permute: (T',) x int32/int64 source feature of each output feature.
        lengths: (T, B) bag lengths per feature and sample.
        values: (sum(lengths),) feature-major contents; ``weights`` likewise.

    Returns:
        ((T', B) permuted lengths, permuted values, permuted weights or None).
    """
    if lengths.dim() != 2:
        raise ValueError(f"lengths must be (T, B), got shape {tuple(lengths.shape)}")
    new_values, new_weights = _permute_segments(
        permute, lengths.sum(dim=1), values, weights, permuted_lengths_sum
    )
    return lengths.index_select(0, permute.long()), new_values, new_weights


def segment_sum_csr(batch_size: int, csr_seg: torch.Tensor, values: torch.Tensor):
    """Sums ``values`` over segments ``[csr_seg[i], csr_seg[i+1]) * batch_size``.

    Returns:
        (S,) sums, same dtype as ``values``, for (S+1,) ``csr_seg``.
    """
    bounds = csr_seg.long() * batch_size
    count = csr_seg.numel() - 1
    out = torch.zeros(count, dtype=values.dtype, device=values.device)
    if values.numel() == 0 or count == 0:
        return out
    positions = torch.arange(values.numel(), device=values.device)
    inside = (positions >= bounds[0]) & (positions < bounds[-1])
    seg = segment_of(bounds, positions).clamp(0, count - 1)
    return out.index_add_(0, seg, torch.where(inside, values, values.new_zeros(())))


def offsets_range(offsets: torch.Tensor, range_size: int) -> torch.Tensor:
    """Position of each element inside its segment; segments start at ``offsets``.

    Args:
        offsets: (S,) start of each segment (the last one ends at ``range_size``).
        range_size: total number of elements.

    Returns:
        (range_size,) same dtype as ``offsets``.
    """
    positions = torch.arange(range_size, device=offsets.device)
    if offsets.numel() == 0:
        return positions.to(offsets.dtype)
    seg = (torch.searchsorted(offsets.long(), positions, right=True) - 1).clamp(min=0)
    return (positions - offsets.long().index_select(0, seg)).to(offsets.dtype)


def invert_permute(permute: torch.Tensor) -> torch.Tensor:
    """``out[permute[i]] = i``, same dtype."""
    out = torch.empty_like(permute)
    positions = torch.arange(
        permute.numel(), device=permute.device, dtype=permute.dtype
    )
    return out.index_copy_(0, permute.long(), positions)


def expand_into_jagged_permute(
    permute: torch.Tensor,
    input_offset: torch.Tensor,
    output_offset: torch.Tensor,
    output_size: int,
) -> torch.Tensor:
    """Element-level permutation from a segment-level one.

    Output segment t (``output_offset[t]:output_offset[t+1]``) takes the elements that
    start at ``input_offset[permute[t]]``.

    Returns:
        (output_size,) source element of each output element, dtype of ``permute``.
    """
    positions = torch.arange(output_size, device=permute.device)
    seg = segment_of(output_offset, positions)
    starts = input_offset.long().index_select(0, permute.long())
    shift = starts - output_offset.long()[: permute.numel()]
    return (positions + shift.index_select(0, seg)).to(permute.dtype)


def permute_pooled_embs(
    pooled_embs: torch.Tensor,
    offset_dim_list: torch.Tensor,
    permute_list: torch.Tensor,
    inv_offset_dim_list: torch.Tensor,
    inv_permute_list: torch.Tensor,
) -> torch.Tensor:
    """Reorders the column blocks of (B, sum D) pooled embeddings.

    Block ``permute_list[i]`` (columns ``offset_dim_list[p]:offset_dim_list[p+1]``)
    becomes block i; the inverse lists are only needed by the backward.
    """
    if pooled_embs.numel() == 0:
        return pooled_embs.clone()
    dims = offset_dim_list.long()[1:] - offset_dim_list.long()[:-1]
    _, columns = gather_segments(dims, permute_list, pooled_embs.shape[-1])
    return pooled_embs.index_select(-1, columns)
