"""Jagged utility ops (C++, ``src_cpp/jagged_ops.cpp``): fake kernels, autograd and
front-ends for concat/split of jagged tensors and selecting whole sequences.

jagged <-> padded front-ends live in :mod:`torchrec_ascend.ops.jagged`. All ops take
int32 or int64 offsets and return offsets of the same dtype.
"""

import torch

_OP = torch.ops.torchrec_ascend


def _dynamic_rows() -> int:
    return torch.library.get_ctx().new_dynamic_size()


@torch.library.register_fake("torchrec_ascend::jagged_to_padded")
def _to_padded_fake(values, offsets, max_len, padding_value):
    return values.new_empty((offsets.shape[0] - 1, max_len, *values.shape[1:]))


@torch.library.register_fake("torchrec_ascend::padded_to_jagged")
def _to_jagged_fake(padded, offsets):
    return padded.new_empty((_dynamic_rows(), *padded.shape[2:]))


@torch.library.register_fake("torchrec_ascend::jagged_concat")
def _concat_fake(a, a_offsets, b, b_offsets):
    rows = a.shape[0] + b.shape[0]
    return a.new_empty((rows, *a.shape[1:])), torch.empty_like(a_offsets)


@torch.library.register_fake("torchrec_ascend::jagged_split")
def _split_fake(values, offsets, first_lengths):
    feature = values.shape[1:]
    return (
        values.new_empty((_dynamic_rows(), *feature)),
        torch.empty_like(offsets),
        values.new_empty((_dynamic_rows(), *feature)),
        torch.empty_like(offsets),
    )


@torch.library.register_fake("torchrec_ascend::jagged_index_select")
def _index_select_fake(values, offsets, indices):
    return (
        values.new_empty((_dynamic_rows(), *values.shape[1:])),
        offsets.new_empty((indices.shape[0] + 1,)),
    )


@torch.library.register_fake("torchrec_ascend::jagged_index_select_backward")
def _index_select_backward_fake(grad, offsets, indices, num_rows):
    return grad.new_empty((num_rows, *grad.shape[1:]))


def _to_padded_setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[1])


def _to_padded_backward(ctx, grad):
    (offsets,) = ctx.saved_tensors
    return _OP.padded_to_jagged(grad, offsets), None, None, None


def _to_jagged_setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[1])
    ctx.max_len = inputs[0].shape[1]


def _to_jagged_backward(ctx, grad):
    (offsets,) = ctx.saved_tensors
    return _OP.jagged_to_padded(grad, offsets, ctx.max_len, 0.0), None


def _concat_setup(ctx, inputs, output):
    a, a_offsets, _, _ = inputs
    ctx.save_for_backward(a_offsets, output[1])


def _concat_backward(ctx, grad_values, _grad_offsets):
    a_offsets, out_offsets = ctx.saved_tensors
    first = a_offsets[1:] - a_offsets[:-1]
    grad_a, _, grad_b, _ = _OP.jagged_split(grad_values, out_offsets, first)
    return grad_a, None, grad_b, None


def _split_setup(ctx, inputs, output):
    _, head_offsets, _, tail_offsets = output
    ctx.save_for_backward(head_offsets, tail_offsets)
    ctx.head_rows, ctx.tail_rows = output[0].shape[0], output[2].shape[0]
    ctx.feature = inputs[0].shape[1:]


def _split_backward(ctx, grad_head, _g1, grad_tail, _g3):
    head_offsets, tail_offsets = ctx.saved_tensors
    if grad_head is None:
        grad_head = grad_tail.new_zeros((ctx.head_rows, *ctx.feature))
    if grad_tail is None:
        grad_tail = grad_head.new_zeros((ctx.tail_rows, *ctx.feature))
    values, _ = _OP.jagged_concat(grad_head, head_offsets, grad_tail, tail_offsets)
    return values, None, None


def _index_select_setup(ctx, inputs, output):
    values, offsets, indices = inputs
    ctx.save_for_backward(offsets, indices)
    ctx.num_rows = values.shape[0]


def _index_select_backward(ctx, grad_values, _grad_offsets):
    offsets, indices = ctx.saved_tensors
    grad = _OP.jagged_index_select_backward(grad_values, offsets, indices, ctx.num_rows)
    return grad, None, None


for _name, _backward, _setup in (
    ("jagged_to_padded", _to_padded_backward, _to_padded_setup),
    ("padded_to_jagged", _to_jagged_backward, _to_jagged_setup),
    ("jagged_concat", _concat_backward, _concat_setup),
    ("jagged_split", _split_backward, _split_setup),
    ("jagged_index_select", _index_select_backward, _index_select_setup),
):
    torch.library.register_autograd(
        f"torchrec_ascend::{_name}", _backward, setup_context=_setup
    )


def jagged_concat(
    a: torch.Tensor, a_offsets: torch.Tensor, b: torch.Tensor, b_offsets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenates two jagged tensors sequence by sequence: ``[a_0, b_0, a_1, ...]``.

    Args:
        a: (L_a, *feature) rows; a_offsets: (B+1,) x int32/int64.
        b: (L_b, *feature) rows, same dtype; b_offsets: (B+1,).

    Returns:
        ((L_a + L_b, *feature) rows, (B+1,) offsets of a_offsets' dtype).

    Example::

        >>> v, o = jagged_concat(torch.arange(3.0)[:, None], torch.tensor([0, 1, 3]),
        ...                      torch.tensor([[9.0]]), torch.tensor([0, 1, 1]))
        >>> v.flatten().tolist(), o.tolist()
        ([0.0, 9.0, 1.0, 2.0], [0, 2, 4])
    """
    return _OP.jagged_concat(a, a_offsets, b, b_offsets)


def jagged_split(
    values: torch.Tensor, offsets: torch.Tensor, first_lengths: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Splits every sequence after its first ``first_lengths[b]`` rows.

    Args:
        values: (L, *feature); offsets: (B+1,) x int32/int64.
        first_lengths: (B,) x int32/int64, each in [0, length of sequence b].

    Returns:
        (head rows, head offsets, tail rows, tail offsets); the inverse of
        :func:`jagged_concat`.
    """
    return _OP.jagged_split(values, offsets, first_lengths)


def jagged_index_select(
    values: torch.Tensor, offsets: torch.Tensor, indices: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Selects whole sequences (repeats allowed), in the order of ``indices``.

    Args:
        values: (L, *feature); offsets: (B+1,) x int32/int64.
        indices: (K,) x int32/int64 sequence indices in [0, B).

    Returns:
        ((L', *feature) rows of the selected sequences, (K+1,) offsets).
    """
    return _OP.jagged_index_select(values, offsets, indices)
