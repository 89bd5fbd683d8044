"""Count the bytes every collective of a step sends, per link tier, on the wire.

`CommCounter` wraps `torch.distributed`'s collectives for the duration of a `with`
block. TorchRec's sharded modules call them through the `torch.distributed` module
at call time, so their input/output all-to-alls are seen, as are the HSP row
all-reduce and the dense gradient all-reduce.

What one rank sends, and to whom, is the model of
:mod:`torchrec_ascend.distributed.collective_bytes`.

Bytes are keyed by a category: the phase set with `comm_phase(...)` if any, else
"a2a" (all-to-all and reduce-scatter, the embedding exchange) or "allreduce".
Inside the block every collective runs synchronously (async callers get a finished
handle), so the time per category is the whole collective; this removes whatever
overlap the job had, which on gloo loopback is little.
"""

import contextlib
import contextvars
import logging
import time
from collections import defaultdict
from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch._C._distributed_c10d import _create_work_from_future

from torchrec_ascend.distributed.collective_bytes import bind_call, sends
from torchrec_ascend.planner.topology import INTER_NODE, INTRA_NODE, ClusterTopology

logger = logging.getLogger(__name__)

_PHASE: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "torchrec_ascend_comm_phase", default=None
)


@contextlib.contextmanager
def comm_phase(name: str) -> Iterator[None]:
    """Label the collectives issued inside the block (e.g. "sparse_sync")."""
    token = _PHASE.set(name)
    try:
        yield
    finally:
        _PHASE.reset(token)


def _completed_work() -> dist.Work:
    future = torch.futures.Future()
    future.set_result(None)
    return _create_work_from_future(future)


class CommCounter:
    """Bytes (per category and tier) and seconds (per category) of collectives.

    Args:
        topology: maps global ranks to hosts, hence to tiers.

    Example::

        >>> with CommCounter(topology) as counter:
        ...     loss = model(batch); loss.backward()
        >>> counter.bytes["a2a"]["inter"]
    """

    _PATCHED = (
        "all_to_all_single",
        "all_reduce",
        "all_gather",
        "reduce_scatter_tensor",
    )

    def __init__(self, topology: ClusterTopology) -> None:
        self.topology = topology
        self.bytes: dict[str, dict[str, int]] = defaultdict(
            lambda: {INTRA_NODE: 0, INTER_NODE: 0}
        )
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._saved: dict[str, object] = {}

    # -- accounting ----------------------------------------------------------------

    def _count(self, op: str, call: dict) -> str:
        exchange = op in ("all_to_all_single", "reduce_scatter_tensor")
        category = _PHASE.get() or ("a2a" if exchange else "allreduce")
        me = dist.get_rank()
        for dst, nbytes in sends(op, call):
            if dst != me and nbytes:
                self.bytes[category][self.topology.tier(me, dst)] += int(nbytes)
        self.calls[category] += 1
        return category

    def _wrap(self, op: str, fn):
        def wrapped(*args, **kwargs):
            category = self._count(op, bind_call(fn, args, kwargs))
            # Run every collective to completion so its time is measured whole;
            # callers that asked for async get an already-finished dist.Work
            # (TorchRec checks the type).
            asked_async = bool(kwargs.pop("async_op", False))
            start = time.perf_counter()
            fn(*args, **kwargs)
            self.seconds[category] += time.perf_counter() - start
            return _completed_work() if asked_async else None

        return wrapped

    # -- context -------------------------------------------------------------------

    def __enter__(self) -> "CommCounter":
        for op in self._PATCHED:
            fn = getattr(dist, op)
            self._saved[op] = fn
            setattr(dist, op, self._wrap(op, fn))
        return self

    def __exit__(self, *exc) -> None:
        for op, fn in self._saved.items():
            setattr(dist, op, fn)
        self._saved.clear()

    def totals(
        self,
        categories: tuple[str, ...] = ("a2a", "allreduce", "sparse_sync", "dense"),
        group=None,
    ) -> dict[str, dict[str, int]]:
        """Bytes per category and tier summed over the ranks of `group`.

        Collective: every rank of `group` must call it with the same categories.
        """
        names = list(categories)
        flat = torch.tensor(
            [self.bytes[c][t] for c in names for t in (INTRA_NODE, INTER_NODE)],
            dtype=torch.int64,
        )
        dist.all_reduce(flat, group=group)
        out = {}
        for i, c in enumerate(names):
            out[c] = {INTRA_NODE: int(flat[2 * i]), INTER_NODE: int(flat[2 * i + 1])}
        return out
