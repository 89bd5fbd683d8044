"""Small jagged-tensor helpers shared by the ops and the models."""

import torch


def lengths_to_offsets(lengths: torch.Tensor) -> torch.Tensor:
    """Returns the complete cumulative sum of ``lengths`` with a leading zero.

    Args:
        lengths: (B,) x int32/int64, non-negative.

    Returns:
        (B+1,) x int64 offsets, ``offsets[0] == 0``.
    """
    offsets = torch.zeros(lengths.numel() + 1, dtype=torch.int64, device=lengths.device)
    torch.cumsum(lengths.reshape(-1), dim=0, out=offsets[1:])
    return offsets


def validate_offsets(offsets: torch.Tensor, total: int, name: str = "offsets") -> None:
    """Raises ValueError unless ``offsets`` is a valid (B+1,) jagged offsets tensor.

    Valid means 1-D int32/int64, starts at 0, non-decreasing and ends at ``total``
    (the number of jagged rows in ``values``).
    """
    if offsets.dim() != 1 or offsets.numel() < 1:
        raise ValueError(f"{name} must be 1-D (B+1,), got shape {tuple(offsets.shape)}")
    if offsets.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"{name} must be int32 or int64, got {offsets.dtype}")
    first, last = int(offsets[0]), int(offsets[-1])
    if first != 0:
        raise ValueError(f"{name}[0] must be 0, got {first}")
    if offsets.numel() > 1 and bool((offsets[1:] < offsets[:-1]).any()):
        bad = int(torch.nonzero(offsets[1:] < offsets[:-1])[0])
        raise ValueError(
            f"{name} must be non-decreasing, but {name}[{bad + 1}]="
            f"{int(offsets[bad + 1])} < {name}[{bad}]={int(offsets[bad])}"
        )
    if last != total:
        raise ValueError(
            f"{name}[-1]={last} must equal the number of jagged rows {total}"
        )


def segment_ids(offsets: torch.Tensor, total: int) -> torch.Tensor:
    """(L,) x int64: the sequence index of every jagged row."""
    lengths = (offsets[1:] - offsets[:-1]).long()
    return torch.repeat_interleave(
        torch.arange(lengths.numel(), device=offsets.device), lengths, output_size=total
    )


def positions_in_sequence(offsets: torch.Tensor, total: int) -> torch.Tensor:
    """(L,) x int64: each row's index inside its own sequence (0 for the first)."""
    seq = segment_ids(offsets, total)
    return torch.arange(total, device=offsets.device) - offsets.long()[seq]


def jagged_to_padded(
    values: torch.Tensor,
    offsets: torch.Tensor,
    max_len: int,
    padding_value: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pads jagged rows to a dense batch.

    Args:
        values: (L, *feature) jagged rows.
        offsets: (B+1,) x int32/int64.
        max_len: padded length N; every sequence must fit.
        padding_value: value of the padded slots.

    Returns:
        ((B, N, *feature) padded values, (B, N) x bool mask of real rows).
    """
    padded = torch.ops.torchrec_ascend.jagged_to_padded(
        values, offsets, max_len, padding_value
    )
    lengths = (offsets[1:] - offsets[:-1]).long()
    mask = torch.arange(max_len, device=values.device)[None, :] < lengths[:, None]
    return padded, mask


def padded_to_jagged(padded: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`jagged_to_padded`: (B, N, *feature) -> (L, *feature)."""
    return torch.ops.torchrec_ascend.padded_to_jagged(padded, offsets)
