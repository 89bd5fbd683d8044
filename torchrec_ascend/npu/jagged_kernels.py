"""NPU kernels for fbgemm's jagged <-> padded dense operators, ATen ops only.

fbgemm's composite front-ends (``jagged_to_padded_dense``, ``dense_to_jagged``)
decompose into the ``*_forward`` / ``*_backward`` operators served here, and fbgemm's
autograd kernels for the ``*_forward`` operators call the ``*_backward`` ones, so
gradients flow on the NPU through these kernels.
"""

import math

import torch

from torchrec_ascend.npu._segments import dense_rows


def _check_offsets(offsets: list[torch.Tensor], name: str) -> None:
    if not offsets:
        raise ValueError(f"{name} must hold at least one offsets tensor")
    for level, level_offsets in enumerate(offsets):
        if level_offsets.dim() != 1 or level_offsets.dtype not in (
            torch.int32,
            torch.int64,
        ):
            raise ValueError(
                f"{name}[{level}] must be 1-D int32/int64, got shape "
                f"{tuple(level_offsets.shape)} x {level_offsets.dtype}"
            )


def jagged_to_padded_dense_forward(
    values: torch.Tensor,
    offsets: list[torch.Tensor],
    max_lengths: list[int],
    padding_value: float = 0.0,
) -> torch.Tensor:
    """Pads jagged rows into a dense tensor, cutting rows past ``max_lengths``.

    Args:
        values: (L, *feature) jagged rows.
        offsets: K offsets tensors, outermost first; the first is (B+1,).
        max_lengths: K padded sizes.
        padding_value: value of the padding slots.

    Returns:
        (B, max_lengths[0], ..., max_lengths[K-1], *feature).
    """
    _check_offsets(offsets, "offsets")
    max_lengths = [int(m) for m in max_lengths]
    flat, fits, batch = dense_rows(offsets, max_lengths, values.shape[0])
    feature = values.shape[1:]
    dense = values.new_full((batch * math.prod(max_lengths), *feature), padding_value)
    dense.index_copy_(0, flat[fits], values[fits])
    return dense.view(batch, *max_lengths, *feature)


def jagged_to_padded_dense_backward(
    grad_output: torch.Tensor,
    offsets: list[torch.Tensor],
    total_L: int,
) -> torch.Tensor:
    """Gradient of :func:`jagged_to_padded_dense_forward` w.r.t. ``values``.

    Returns:
        (total_L, *feature); rows cut off by the padding get zero gradient.
    """
    _check_offsets(offsets, "offsets")
    levels = len(offsets)
    max_lengths = list(grad_output.shape[1 : 1 + levels])
    feature = grad_output.shape[1 + levels :]
    return _gather_rows(grad_output, offsets, max_lengths, feature, int(total_L))


def dense_to_jagged_forward(
    dense: torch.Tensor,
    x_offsets: list[torch.Tensor],
    total_L: int | None = None,
) -> torch.Tensor:
    """Reads the jagged rows out of a padded dense tensor.

    Args:
        dense: (B, N_1, ..., N_K, *feature).
        x_offsets: K offsets tensors, outermost first.
        total_L: number of jagged rows if known (saves a host sync).

    Returns:
        (total_L, *feature); rows beyond the padded sizes read as zero.
    """
    _check_offsets(x_offsets, "x_offsets")
    if total_L is None:
        total_L = int(x_offsets[-1][-1])
    levels = len(x_offsets)
    max_lengths = list(dense.shape[1 : 1 + levels])
    feature = dense.shape[1 + levels :]
    return _gather_rows(dense, x_offsets, max_lengths, feature, int(total_L))


def _gather_rows(dense, offsets, max_lengths, feature, total):
    flat, fits, _ = dense_rows(offsets, max_lengths, total)
    table = dense.reshape(-1, *feature)
    if table.shape[0] == 0:
        return dense.new_zeros((total, *feature))
    # Rows outside the padding are masked afterwards; clamping keeps their (unused)
    # gather index in range.
    rows = table.index_select(0, flat.clamp(max=table.shape[0] - 1))
    keep = fits.view(-1, *([1] * len(feature)))
    return torch.where(keep, rows, rows.new_zeros(()))
