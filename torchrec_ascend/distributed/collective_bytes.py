"""What one rank sends for one ``torch.distributed`` collective, to whom.

The byte model shared by :class:`~torchrec_ascend.distributed.CommCounter` (bytes per
link tier) and :class:`~torchrec_ascend.distributed.EmulatedLink` (time on a modelled
link):

* all_to_all_single / all_to_all: split j of the input goes to group rank j (nothing
  to itself; without splits, equal splits);
* all_reduce / all_gather / reduce_scatter: a ring over the group's ranks in order,
  each rank sending 2(n-1)/n, (n-1)/n and (n-1)/n of the full buffer to its
  successor (the algorithm gloo, HCCL and NCCL use for large tensors).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist

COLLECTIVES = (
    "all_to_all_single",
    "all_to_all",
    "all_reduce",
    "all_gather",
    "all_gather_into_tensor",
    "reduce_scatter",
    "reduce_scatter_tensor",
)

# Argument names of the gathered / scattered buffers in torch.distributed.
_BUFFERS = (
    "tensor_list",
    "tensor",
    "output_tensor",
    "input_tensor",
    "output",
    "input",
    "input_list",
)


def nbytes(tensors: Any) -> int:
    """Bytes of a tensor or a list of tensors."""
    if isinstance(tensors, torch.Tensor):
        return tensors.numel() * tensors.element_size()
    return sum(nbytes(t) for t in tensors)


def bind_call(fn: Callable, args: tuple, kwargs: dict) -> dict[str, Any]:
    """The collective's arguments by name, however the caller passed them."""
    return inspect.signature(fn).bind(*args, **kwargs).arguments


def group_ranks(group: Any) -> list[int]:
    """Global ranks of ``group`` (None: the default group), in group order."""
    if group is None or group is dist.GroupMember.WORLD:
        return list(range(dist.get_world_size()))
    return dist.get_process_group_ranks(group)


def sends(op: str, call: dict[str, Any]) -> list[tuple[int, int]]:
    """(destination global rank, bytes) this rank sends for collective ``op`` called
    with the named arguments ``call`` (see :func:`bind_call`)."""
    ranks = group_ranks(call.get("group"))
    me = dist.get_rank()
    n = len(ranks)
    if n <= 1:
        return []
    if op == "all_to_all_single":
        source = call["input"]
        rows = source.shape[0] if source.dim() else 0
        row_bytes = nbytes(source) // max(1, rows)
        splits = call.get("input_split_sizes") or [rows // n] * n
        return [(d, s * row_bytes) for d, s in zip(ranks, splits) if d != me]
    if op == "all_to_all":
        inputs = call["input_tensor_list"]
        return [(d, nbytes(t)) for d, t in zip(ranks, inputs) if d != me]
    successor = ranks[(ranks.index(me) + 1) % n]
    if op == "all_reduce":
        return [(successor, round(2 * (n - 1) / n * nbytes(call["tensor"])))]
    # Gathers and reduce-scatters move (n - 1)/n of the full buffer per rank.
    full = max(nbytes(v) for k, v in call.items() if k in _BUFFERS)
    return [(successor, round((n - 1) / n * full))]
