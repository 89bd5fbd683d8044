"""Jagged embedding lookup with an optional fused row-wise Adagrad update.

TorchRec's batched embedding kernel treats every non-CUDA device as a CPU and calls
fbgemm's CPU kernels, which do not exist on an NPU. This lookup does the same work
with ATen ops: ids arrive as one jagged (KJT-like) tensor, feature by feature; the
ids of all features that share a table are looked up together, and the backward sums
the gradients of repeated ids per table before either returning dense weight
gradients or applying row-wise Adagrad in place (the fused optimizer of TorchRec's
``EmbeddingComputeKernel.FUSED`` tables).
"""

import dataclasses
from collections.abc import Sequence

import torch


@dataclasses.dataclass
class RowwiseAdagrad:
    """Row-wise Adagrad state for a fused lookup.

    For every row r touched in a step with summed gradient g (D,)::

        momentum[r] += mean(g * g)
        weight[r] -= learning_rate * g / (sqrt(momentum[r]) + eps)

    Attributes:
        learning_rate: step size.
        eps: added to the root of the accumulated squares.
        momentum: one (rows,) float tensor per table, updated in place.
    """

    learning_rate: float
    eps: float
    momentum: Sequence[torch.Tensor]


def _table_groups(
    feature_lengths: Sequence[int],
    feature_to_table: Sequence[int],
    num_tables: int,
    device: torch.device,
) -> list[torch.Tensor | None]:
    """(P_t,) x int64 positions of each table's ids in the jagged values, or None."""
    if len(feature_lengths) != len(feature_to_table):
        raise ValueError(
            f"feature_lengths has {len(feature_lengths)} features but "
            f"feature_to_table has {len(feature_to_table)}"
        )
    spans: list[list[tuple[int, int]]] = [[] for _ in range(num_tables)]
    start = 0
    for length, table in zip(feature_lengths, feature_to_table):
        if not 0 <= table < num_tables:
            raise ValueError(f"feature_to_table names table {table} of {num_tables}")
        if length:
            spans[table].append((start, start + length))
        start += length
    groups = []
    for table_spans in spans:
        if not table_spans:
            groups.append(None)
            continue
        parts = [torch.arange(a, b, device=device) for a, b in table_spans]
        groups.append(parts[0] if len(parts) == 1 else torch.cat(parts))
    return groups


def _check_ids(ids: torch.Tensor, rows: int, table: int) -> None:
    # One host sync per table: an out-of-range id would otherwise read or (in the
    # fused backward) write outside the table silently on some devices.
    low, high = int(ids.min()), int(ids.max())
    if low < 0 or high >= rows:
        raise ValueError(
            f"indices for table {table} must be in [0, {rows}), "
            f"got range [{low}, {high}]"
        )


class _JaggedLookup(torch.autograd.Function):
    @staticmethod
    def forward(ctx, anchor, indices, groups, optimizer, *weights):
        dim = weights[0].shape[1]
        out = weights[0].new_zeros((indices.numel(), dim))
        for table, positions in enumerate(groups):
            if positions is None:
                continue
            ids = indices.index_select(0, positions)
            _check_ids(ids, weights[table].shape[0], table)
            out.index_copy_(0, positions, weights[table].index_select(0, ids))
        ctx.groups = groups
        ctx.optimizer = optimizer
        ctx.shapes = [w.shape for w in weights]
        # The fused update writes the tables in place; holding them outside
        # save_for_backward lets several forwards share one table before their
        # backwards run (gradient accumulation), as fbgemm's fused kernel allows.
        ctx.tables = weights if optimizer is not None else None
        ctx.save_for_backward(indices)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        (indices,) = ctx.saved_tensors
        optimizer = ctx.optimizer
        weights = ctx.tables
        grads: list[torch.Tensor | None] = [None] * len(ctx.shapes)
        for table, positions in enumerate(ctx.groups):
            if positions is None:
                continue
            ids = indices.index_select(0, positions)
            rows, inverse = torch.unique(ids, return_inverse=True)
            summed = grad_out.new_zeros((rows.numel(), grad_out.shape[1]))
            summed.index_add_(0, inverse, grad_out.index_select(0, positions))
            if optimizer is None:
                grads[table] = torch.zeros(
                    ctx.shapes[table], dtype=grad_out.dtype, device=grad_out.device
                ).index_add_(0, rows, summed)
                continue
            _rowwise_adagrad_step(weights[table], optimizer, table, rows, summed)
        return (None, None, None, None, *grads)


def _rowwise_adagrad_step(weight, optimizer, table, rows, summed) -> None:
    with torch.no_grad():
        momentum = optimizer.momentum[table]
        squares = (summed.float() * summed.float()).mean(dim=1).to(momentum.dtype)
        updated = momentum.index_select(0, rows) + squares
        momentum.index_copy_(0, rows, updated)
        scale = optimizer.learning_rate / (torch.sqrt(updated) + optimizer.eps)
        step = (summed * scale.to(summed.dtype).unsqueeze(1)).to(weight.dtype)
        weight.index_copy_(0, rows, weight.index_select(0, rows) - step)


def jagged_embedding_lookup(
    indices: torch.Tensor,
    feature_lengths: Sequence[int],
    feature_to_table: Sequence[int],
    weights: Sequence[torch.Tensor],
    optimizer: RowwiseAdagrad | None = None,
) -> torch.Tensor:
    """Looks up one embedding row per id for jagged ids of several features.

    Args:
        indices: (N,) x int32/int64 ids, feature-major (all ids of feature 0, then
            feature 1, ...), as in ``KeyedJaggedTensor.values()``.
        feature_lengths: number of ids of each feature (sums to N).
        feature_to_table: table of each feature; tables may serve several features.
        weights: one (rows_t, D) tensor per table, all with the same D.
        optimizer: None for plain autograd (weights get dense gradients), or the
            row-wise Adagrad state to update the tables in place during backward
            (fused; the weights then get no gradient).

    Returns:
        (N, D) rows, row i for ``indices[i]``.

    Example::

        >>> table = torch.randn(10, 4, requires_grad=True)
        >>> rows = jagged_embedding_lookup(torch.tensor([1, 1, 3]), [2, 1], [0, 0],
        ...                                [table])
        >>> rows.sum().backward()   # table.grad[1] == 2, table.grad[3] == 1
    """
    if not weights:
        raise ValueError("weights must hold at least one table")
    dims = {w.shape[1] for w in weights if w.dim() == 2}
    if len(dims) != 1 or any(w.dim() != 2 for w in weights):
        raise ValueError(
            "weights must be 2-D tables with one embedding dim, got shapes "
            f"{[tuple(w.shape) for w in weights]}"
        )
    if indices.dim() != 1 or indices.dtype not in (torch.int32, torch.int64):
        raise ValueError(
            f"indices must be (N,) x int32/int64, got {tuple(indices.shape)} x "
            f"{indices.dtype}"
        )
    if sum(feature_lengths) != indices.numel():
        raise ValueError(
            f"feature_lengths sum to {sum(feature_lengths)} but indices has "
            f"{indices.numel()} ids"
        )
    if optimizer is not None and len(optimizer.momentum) != len(weights):
        raise ValueError(
            f"optimizer has {len(optimizer.momentum)} momentum tensors for "
            f"{len(weights)} tables"
        )
    groups = _table_groups(
        feature_lengths, feature_to_table, len(weights), indices.device
    )
    # The fused path needs some input that requires grad for autograd to call
    # backward at all; the tables themselves are updated in place, not differentiated.
    anchor = torch.zeros(0, device=indices.device, requires_grad=optimizer is not None)
    tables = [w.detach() for w in weights] if optimizer is not None else list(weights)
    return _JaggedLookup.apply(anchor, indices.long(), groups, optimizer, *tables)
