"""Device-generic jagged index arithmetic shared by the NPU kernels.

Everything here is ATen tensor ops (searchsorted, cumsum, index arithmetic), so it runs
unchanged on CPU, CUDA and NPU, with no host synchronisation unless a size is unknown.
"""

import torch


def complete_cumsum(lengths: torch.Tensor) -> torch.Tensor:
    """(N,) -> (N+1,) with a leading zero, same dtype; (R, N) -> (R, N+1) per row."""
    zero = torch.zeros(
        (*lengths.shape[:-1], 1), dtype=lengths.dtype, device=lengths.device
    )
    return torch.cat([zero, torch.cumsum(lengths, dim=-1).to(lengths.dtype)], dim=-1)


def segment_of(offsets: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Segment index of each position for (S+1,) offsets; empty segments are skipped.

    Args:
        offsets: (S+1,) x int32/int64, non-decreasing.
        positions: (P,) x int64 positions in ``[offsets[0], offsets[-1])``.

    Returns:
        (P,) x int64, ``offsets[s] <= position < offsets[s+1]``.
    """
    return torch.searchsorted(offsets.long(), positions, right=True) - 1


def gather_segments(
    segment_lengths: torch.Tensor,
    order: torch.Tensor,
    total: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Source positions that lay the segments ``order[0], order[1], ...`` end to end.

    Args:
        segment_lengths: (S,) lengths of the source segments.
        order: (S',) x int segment indices, repeats allowed.
        total: sum of the selected lengths if known (saves a host sync).

    Returns:
        ((S',) selected lengths, (total,) x int64 source positions).
    """
    lengths = segment_lengths.long()
    starts = complete_cumsum(lengths)[:-1]
    order = order.long()
    picked = lengths.index_select(0, order)
    out_offsets = complete_cumsum(picked)
    if total is None:
        total = int(out_offsets[-1])
    out_pos = torch.arange(total, device=lengths.device)
    seg = segment_of(out_offsets, out_pos)
    shift = starts.index_select(0, order) - out_offsets[:-1]
    return picked, out_pos + shift.index_select(0, seg)


def dense_rows(
    offsets: list[torch.Tensor],
    max_lengths: list[int],
    total: int,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Where each jagged row lands in the padded dense tensor.

    For K jagged dimensions, ``offsets[k]`` splits the items of level k into segments
    of level k-1; the dense tensor is (B, max_lengths[0], ..., max_lengths[K-1], ...).

    Args:
        offsets: K tensors, outermost first, each (S_k+1,) x int32/int64.
        max_lengths: K padded sizes.
        total: number of jagged rows (items of the innermost level).

    Returns:
        ((total,) x int64 flat dense row of each jagged row, (total,) x bool row fits
        inside the padding, number B of outermost segments).
    """
    if len(offsets) != len(max_lengths):
        raise ValueError(
            f"offsets has {len(offsets)} levels but max_lengths has {len(max_lengths)}"
        )
    device = offsets[0].device
    index = torch.arange(total, device=device)
    positions = []
    for level_offsets in reversed(offsets):
        seg = segment_of(level_offsets, index)
        positions.append(index - level_offsets.long().index_select(0, seg))
        index = seg
    positions.reverse()

    flat = index
    fits = torch.ones(total, dtype=torch.bool, device=device)
    for pos, width in zip(positions, max_lengths):
        fits = fits & (pos < width)
        flat = flat * width + pos
    return flat, fits, offsets[0].numel() - 1
