"""Which samples each rank trains at each step: fixed, token-budget or global plans.

All ranks walk the same epoch permutation (seeded by ``seed + epoch``), so they agree
on the global batches and on the number of steps without talking to each other.

* ``"fixed"``: global batch ``i`` is ``R * b`` consecutive samples of the permutation
  and rank ``r`` takes its ``r``-th slice of ``b`` (data-parallel baseline).
* ``"global"`` (global token reallocation, for long sequences and small batches):
  the same global batch is re-split by cost with :func:`balanced_partition`; no
  sequence is ever split; sample counts per rank differ.
* ``"token_budget"`` (token-aware dynamic batch scaling, for short sequences): rank
  ``r`` reads its own shard (every ``R``-th sample) and fills each batch up to a cost
  budget of ``b`` average samples instead of a fixed count. Ranks run out at
  different steps, so the last partial batches of all ranks are pooled and re-split
  by cost over the remaining steps; a rank may still get an empty batch there.

Each sample of the epoch lands in exactly one (step, rank) batch: none is dropped or
repeated, whatever the ragged tail.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator

import numpy as np
import torch

from torchrec_ascend.balance.partition import PARTITION_METHODS, balanced_partition

logger = logging.getLogger(__name__)

STRATEGIES = ("fixed", "global", "token_budget")

CostFn = Callable[[np.ndarray], np.ndarray]
"""(B,) integer lengths -> (B,) x float64 costs."""


def epoch_permutation(num_samples: int, seed: int, epoch: int) -> np.ndarray:
    """(N,) x int64 shuffled sample order of an epoch, identical on every rank."""
    generator = torch.Generator().manual_seed(seed + epoch)
    return torch.randperm(num_samples, generator=generator).numpy()


def pack_by_budget(ids: np.ndarray, costs: np.ndarray, budget: float) -> list:
    """Cuts a sample stream into consecutive batches of total cost <= ``budget``.

    A batch closes when the next sample would overflow it; a sample costing more than
    the budget on its own forms a batch alone.

    Args:
        ids: (n,) x int64 sample ids in stream order.
        costs: (n,) x float64 their costs.
        budget: Cost limit per batch, > 0.

    Returns:
        Arrays of ids, in order, that concatenate back to ``ids``.
    """
    if budget <= 0:
        raise ValueError(f"budget must be > 0, got {budget}")
    batches, start, load = [], 0, 0.0
    for k, c in enumerate(costs):
        if k > start and load + c > budget:
            batches.append(ids[start:k])
            start, load = k, 0.0
        load += c
    if start < len(ids):
        batches.append(ids[start:])
    return batches


class BalancedSampler:
    """Per-step sample ids of one rank under a balancing strategy.

    Args:
        lengths: (N,) x int64 token count of every sample of the dataset.
        cost_fn: Maps lengths to costs, e.g. a :class:`SampleCostModel`.
        num_ranks: R, data-parallel world size.
        rank: This rank, in [0, R).
        local_batch_size: b, samples per rank per step of the fixed baseline.
        strategy: ``"fixed"``, ``"global"`` or ``"token_budget"``.
        partition_method: ``"lpt"`` or ``"kk"`` for the global strategy.
        seed: Base seed; the epoch order uses ``seed + epoch``.
        exchange: Optional :class:`LengthExchange`; when given, the global strategy
            learns the other ranks' samples only through it (ids and lengths), as a
            multi-host loader must; without it every rank reads ``lengths`` directly.
        window: Global batches the global strategy re-splits together (>= 1). With
            a window of K, K * R parts are balanced at once, which evens out steps
            whose batch drew many sequences at the length cap (a sample may then
            train a few steps earlier or later than its fixed-plan step).

    Example::

        >>> sampler = BalancedSampler(np.array([3, 9, 1, 4]), lambda n: n * n,
        ...                           num_ranks=2, rank=0, local_batch_size=2)
        >>> [ids.tolist() for ids in sampler]   # one step: the three short ones
        [[0, 3, 2]]
    """

    def __init__(
        self,
        lengths: np.ndarray,
        cost_fn: CostFn,
        num_ranks: int,
        rank: int,
        local_batch_size: int,
        strategy: str = "global",
        partition_method: str = "lpt",
        seed: int = 0,
        exchange: LengthExchange | None = None,
        window: int = 1,
    ) -> None:
        lengths = np.asarray(lengths)
        if lengths.ndim != 1 or not np.issubdtype(lengths.dtype, np.integer):
            raise ValueError(
                "lengths must be a 1-D integer array (N,), got shape "
                f"{lengths.shape} dtype {lengths.dtype}"
            )
        if not 0 <= rank < num_ranks:
            raise ValueError(f"need 0 <= rank < num_ranks, got {rank}, {num_ranks}")
        if local_batch_size < 1:
            raise ValueError(f"local_batch_size must be >= 1, got {local_batch_size}")
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
        if partition_method not in PARTITION_METHODS:
            raise ValueError(
                f"partition_method must be one of {PARTITION_METHODS}, "
                f"got {partition_method!r}"
            )
        self.lengths = lengths.astype(np.int64)
        self.cost_fn = cost_fn
        self.num_ranks = num_ranks
        self.rank = rank
        self.local_batch_size = local_batch_size
        self.strategy = strategy
        self.partition_method = partition_method
        self.seed = seed
        self.exchange = exchange
        self.window = window if strategy == "global" else 1
        self.epoch = 0
        self.partition_seconds: list[float] = []
        costs = np.asarray(cost_fn(self.lengths), dtype=np.float64)
        # The token budget is what a fixed batch of b average samples costs.
        self.budget = local_batch_size * float(costs.mean()) if costs.size else 1.0
        self._costs = costs
        self._budget_batches: list[np.ndarray] | None = None
        self._budget_steps = 0
        self._budget_tail: tuple[int, list] = (0, [])

    @property
    def num_samples(self) -> int:
        return int(self.lengths.size)

    @property
    def global_batch_size(self) -> int:
        return self.num_ranks * self.local_batch_size

    def set_epoch(self, epoch: int) -> None:
        """Selects the epoch whose order the next iteration walks."""
        self.epoch = epoch
        self._budget_batches = None

    # -- token budget ----------------------------------------------------------------

    def _shard(self, order: np.ndarray, rank: int) -> np.ndarray:
        return order[rank :: self.num_ranks]

    def _budget_all_ranks(self, order: np.ndarray) -> list[list[np.ndarray]]:
        """Every rank's budget-packed batches, each rank reading only its shard."""
        return [
            pack_by_budget(shard, self._costs[shard], self.budget)
            for shard in (self._shard(order, r) for r in range(self.num_ranks))
        ]

    def _prepare_budget(self) -> None:
        """This rank's batches for every step of the epoch, tail included.

        Ranks run out of samples at different steps, and their last batches are
        partial; from the step before the first rank runs out, the leftover samples
        of all ranks are pooled and re-split by cost (as in the global plan) over
        the remaining steps, so the tail is as balanced as the rest.
        """
        order = epoch_permutation(self.num_samples, self.seed, self.epoch)
        if self.exchange is None:
            packed = self._budget_all_ranks(order)
            counts = [len(p) for p in packed]
            first, steps = min(counts), max(counts)
            tail_start = max(first - 1, 0)
            mine = packed[self.rank]
            pool = [
                np.concatenate(p[tail_start:] or [np.empty(0, np.int64)])
                for p in packed
            ]
            ids = np.concatenate(pool)
            lengths = self.lengths[ids]
        else:
            shard = self._shard(order, self.rank)
            mine = pack_by_budget(shard, self._costs[shard], self.budget)
            first = -self.exchange.max_int(-len(mine))
            steps = self.exchange.max_int(len(mine))
            tail_start = max(first - 1, 0)
            own = np.concatenate(mine[tail_start:] or [np.empty(0, np.int64)])
            ids, lengths = self.exchange.all_gather(
                own, self.lengths[own], self.exchange.max_int(len(own))
            )
        tail = (
            self.split_window(ids, lengths, steps - tail_start)
            if steps > tail_start
            else []
        )
        self._budget_batches = mine[:tail_start] + [
            per_rank[self.rank] for per_rank in tail
        ]
        self._budget_tail = (tail_start, tail)
        self._budget_steps = steps

    # -- steps -----------------------------------------------------------------------

    def __len__(self) -> int:
        """Number of steps of the current epoch (the same on every rank)."""
        if self.strategy == "token_budget":
            if self._budget_batches is None:
                self._prepare_budget()
            return self._budget_steps
        return -(-self.num_samples // self.global_batch_size)

    def global_batch(self, order: np.ndarray, step: int) -> np.ndarray:
        """(<= R*b,) ids of global batch ``step`` of the fixed and global plans."""
        g = self.global_batch_size
        return order[step * g : (step + 1) * g]

    def _window_steps(self, window_index: int) -> range:
        first = window_index * self.window
        return range(first, min(first + self.window, len(self)))

    def _local_window(self, order: np.ndarray, window_index: int, rank: int):
        """Rank ``rank``'s fixed slices of the window's global batches, in order."""
        b = self.local_batch_size
        slices = [
            self.global_batch(order, step)[rank * b : (rank + 1) * b]
            for step in self._window_steps(window_index)
        ]
        return np.concatenate(slices) if slices else np.empty(0, np.int64)

    def split_window(
        self, ids: np.ndarray, lengths: np.ndarray, num_steps: int
    ) -> list[list[np.ndarray]]:
        """Re-splits the samples of ``num_steps`` global batches by cost.

        The samples are partitioned into ``num_steps * R`` parts of nearly equal
        cost; the parts are then sorted by cost and step ``s`` of the window gives
        the ``s``-th group of R consecutive parts to its ranks, so the parts that
        share a barrier are as close in cost as the partition allows.

        Args:
            ids: (B,) x int64 sample ids of the window, in rank-major order.
            lengths: (B,) x int64 their lengths.
            num_steps: Global batches in the window, >= 1.

        Returns:
            For each step of the window, R id arrays.
        """
        start = time.perf_counter()
        costs = np.asarray(self.cost_fn(lengths), dtype=np.float64)
        parts = balanced_partition(
            costs, num_steps * self.num_ranks, self.partition_method
        )
        loads = np.array([costs[p].sum() for p in parts])
        parts = [parts[k] for k in np.argsort(loads, kind="stable")]
        self.partition_seconds.append(time.perf_counter() - start)
        r = self.num_ranks
        return [[ids[p] for p in parts[s * r : (s + 1) * r]] for s in range(num_steps)]

    def _plan_window(self, order: np.ndarray, window_index: int) -> list:
        """All ranks' ids for each step of a window, from ``lengths`` directly."""
        steps = self._window_steps(window_index)
        if self.strategy == "fixed":
            b = self.local_batch_size
            return [
                [
                    self.global_batch(order, step)[r * b : (r + 1) * b]
                    for r in range(self.num_ranks)
                ]
                for step in steps
            ]
        ids = np.concatenate(
            [self._local_window(order, window_index, r) for r in range(self.num_ranks)]
        )
        return self.split_window(ids, self.lengths[ids], len(steps))

    def _budget_tail_plan(self) -> tuple[int, list]:
        if self.exchange is not None:
            raise RuntimeError("whole-epoch plans are simulated without an exchange")
        self._prepare_budget()
        return self._budget_tail

    def iter_plans(self) -> Iterator[list[np.ndarray]]:
        """R id arrays of every rank for each step of the epoch (simulation)."""
        order = epoch_permutation(self.num_samples, self.seed, self.epoch)
        if self.strategy == "token_budget":
            packed = self._budget_all_ranks(order)
            tail_start, tail = self._budget_tail_plan()
            for step in range(tail_start):
                yield [p[step] for p in packed]
            yield from tail
            return
        for window_index in range(-(-len(self) // self.window)):
            yield from self._plan_window(order, window_index)

    def plan_step(self, step: int) -> list:
        """R id arrays of every rank at ``step`` (simulation; no exchange used)."""
        order = epoch_permutation(self.num_samples, self.seed, self.epoch)
        if self.strategy == "token_budget":
            return list(self.iter_plans())[step]
        window_index = step // self.window
        return self._plan_window(order, window_index)[step % self.window]

    def __iter__(self) -> Iterator[np.ndarray]:
        num_steps = len(self)
        if self.strategy == "token_budget":
            batches = self._budget_batches or []
            for step in range(num_steps):
                yield batches[step] if step < len(batches) else np.empty(0, np.int64)
            self._budget_batches = None
            return
        order = epoch_permutation(self.num_samples, self.seed, self.epoch)
        for window_index in range(-(-num_steps // self.window)):
            if self.exchange is not None and self.strategy == "global":
                mine = self._local_window(order, window_index, self.rank)
                ids, lengths = self.exchange.all_gather(
                    mine, self.lengths[mine], self.window * self.local_batch_size
                )
                plan = self.split_window(
                    ids, lengths, len(self._window_steps(window_index))
                )
            else:
                plan = self._plan_window(order, window_index)
            for per_rank in plan:
                yield per_rank[self.rank]


# Limitation: after the exchange every rank reads its share straight from the
# (map-style, fully readable) dataset; a loader whose shards live on one host only
# would need a point-to-point fetch of the sequences, which is not implemented.
class LengthExchange:
    """Collectives the global plan needs: share (ids, lengths), agree on a count.

    Runs on its own gloo group so a background planning thread never interleaves with
    the training collectives of the default group (and works whatever device trains).

    Args:
        group: A process group, normally ``dist.new_group(backend="gloo")``.
    """

    def __init__(self, group) -> None:
        self.group = group

    def all_gather(
        self, ids: np.ndarray, lengths: np.ndarray, pad_to: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Concatenates every rank's ``(ids, lengths)`` in rank order.

        Args:
            ids: (n,) x int64 this rank's sample ids, n <= ``pad_to``.
            lengths: (n,) x int64 their lengths.
            pad_to: Largest n of any rank (the local batch size).

        Returns:
            (ids, lengths) of all ranks, padding removed.
        """
        import torch.distributed as dist

        n = len(ids)
        if n > pad_to or len(lengths) != n:
            raise ValueError(
                f"need len(ids) == len(lengths) <= pad_to, got {n}, "
                f"{len(lengths)}, {pad_to}"
            )
        local = torch.full((2, pad_to), -1, dtype=torch.int64)
        local[0, :n] = torch.from_numpy(np.asarray(ids, dtype=np.int64))
        local[1, :n] = torch.from_numpy(np.asarray(lengths, dtype=np.int64))
        gathered = [torch.empty_like(local) for _ in range(dist.get_world_size())]
        dist.all_gather(gathered, local, group=self.group)
        both = torch.cat(gathered, dim=1)
        keep = both[0] >= 0
        return both[0, keep].numpy(), both[1, keep].numpy()

    def max_int(self, value: int) -> int:
        """The largest ``value`` over all ranks."""
        import torch.distributed as dist

        t = torch.tensor([value], dtype=torch.int64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.group)
        return int(t.item())
