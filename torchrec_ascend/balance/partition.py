"""Splitting a global batch into equal-cost parts without splitting any sequence.

This is multiway number partitioning (NP-hard); two classic heuristics are offered:

* ``"lpt"``: longest-processing-time greedy (sort by cost, give each sample to the
  lightest part), followed by pairwise move/swap refinement of the heaviest part.
* ``"kk"``: the multiway Karmarkar-Karp largest-differencing method, followed by the
  same refinement.

Both are deterministic: every rank that partitions the same costs gets the same answer,
so no rank needs to broadcast the result.
"""

from __future__ import annotations

import heapq
import logging

import numpy as np

logger = logging.getLogger(__name__)

PARTITION_METHODS = ("lpt", "kk")


def imbalance(loads: np.ndarray) -> float:
    """(max - mean) / max of per-part loads: the fraction of the slowest part's time
    that the average part spends waiting at the barrier (0 when all are equal).

    Args:
        loads: (R,) per-part cost.
    """
    loads = np.asarray(loads, dtype=np.float64)
    peak = float(loads.max()) if loads.size else 0.0
    if peak <= 0.0:
        return 0.0
    return (peak - float(loads.mean())) / peak


def _check_costs(costs: np.ndarray, num_parts: int) -> np.ndarray:
    costs = np.asarray(costs, dtype=np.float64)
    if costs.ndim != 1:
        raise ValueError(f"costs must be 1-D (B,), got shape {tuple(costs.shape)}")
    if num_parts < 1:
        raise ValueError(f"num_parts must be >= 1, got {num_parts}")
    if costs.size and not (np.isfinite(costs).all() and costs.min() >= 0):
        raise ValueError("costs must be finite and >= 0")
    return costs


def partition_lpt(costs: np.ndarray, num_parts: int) -> np.ndarray:
    """Greedy sorted assignment: heaviest sample first, each to the lightest part.

    Args:
        costs: (B,) x float64 cost of each sample, >= 0.
        num_parts: R.

    Returns:
        (B,) x int64 part of each sample, in [0, R).
    """
    costs = _check_costs(costs, num_parts)
    assignment = np.empty(costs.size, dtype=np.int64)
    # Ties on load go to the lower part index so the result is reproducible.
    heap = [(0.0, part) for part in range(num_parts)]
    for i in np.argsort(-costs, kind="stable"):
        load, part = heapq.heappop(heap)
        assignment[i] = part
        heapq.heappush(heap, (load + costs[i], part))
    return assignment


def partition_karmarkar_karp(costs: np.ndarray, num_parts: int) -> np.ndarray:
    """Multiway largest-differencing (Karmarkar-Karp) assignment.

    Every sample starts as an R-way partial partition (its cost in one part). The two
    partials with the largest spread (max - min load) are merged, pairing the heaviest
    part of one with the lightest of the other, until one partial is left.

    Args:
        costs: (B,) x float64 cost of each sample, >= 0.
        num_parts: R.

    Returns:
        (B,) x int64 part of each sample, in [0, R).
    """
    costs = _check_costs(costs, num_parts)
    if costs.size == 0:
        return np.empty(0, dtype=np.int64)
    # A partial is (loads sorted descending, member lists aligned with the loads).
    heap: list[tuple[float, int, np.ndarray, list[list[int]]]] = []
    for i, c in enumerate(costs):
        loads = np.zeros(num_parts)
        loads[0] = c
        members: list[list[int]] = [[int(i)]] + [[] for _ in range(num_parts - 1)]
        heap.append((-float(c), int(i), loads, members))
    heapq.heapify(heap)
    while len(heap) > 1:
        _, tie, loads_a, members_a = heapq.heappop(heap)
        _, _, loads_b, members_b = heapq.heappop(heap)
        # Heaviest of one with lightest of the other.
        loads = loads_a + loads_b[::-1]
        members = [a + b for a, b in zip(members_a, members_b[::-1])]
        order = np.argsort(-loads, kind="stable")
        loads = loads[order] - loads[order[-1]]
        members = [members[k] for k in order]
        heapq.heappush(heap, (-float(loads[0]), tie, loads, members))
    assignment = np.empty(costs.size, dtype=np.int64)
    for part, members in enumerate(heap[0][3]):
        assignment[members] = part
    return assignment


def refine_by_swaps(
    costs: np.ndarray, assignment: np.ndarray, num_parts: int, max_rounds: int = 64
) -> np.ndarray:
    """Lowers the heaviest part by moving one sample out of it or swapping two.

    Each round takes the heaviest part and, over every other part, the single move
    or swap that brings the pair's loads closest together; it stops when the heaviest
    part cannot be lowered or after ``max_rounds`` rounds.

    Args:
        costs: (B,) x float64.
        assignment: (B,) x int64 part of each sample; not modified.
        num_parts: R.
        max_rounds: Bound on the number of improving steps.

    Returns:
        (B,) x int64 refined assignment; its largest load is never higher.
    """
    costs = _check_costs(costs, num_parts)
    assignment = np.asarray(assignment, dtype=np.int64).copy()
    if assignment.shape != costs.shape:
        raise ValueError(
            f"assignment must have shape {tuple(costs.shape)}, "
            f"got {tuple(assignment.shape)}"
        )
    loads = np.bincount(assignment, weights=costs, minlength=num_parts)
    for _ in range(max_rounds):
        heavy = int(np.argmax(loads))
        in_heavy = np.flatnonzero(assignment == heavy)
        best = None  # (new pair max, light part, sample out, sample in or -1)
        for light in np.argsort(loads):
            light = int(light)
            gap = loads[heavy] - loads[light]
            if light == heavy or gap <= 0:
                continue
            in_light = np.flatnonzero(assignment == light)
            # A move is a swap with a zero-cost sample: delta = cost out - cost in.
            incoming = np.concatenate([costs[in_light], [0.0]])
            delta = costs[in_heavy][:, None] - incoming[None, :]
            pair_max = np.maximum(loads[heavy] - delta, loads[light] + delta)
            useful = (delta > 0) & (delta < gap)
            if not useful.any():
                continue
            pair_max = np.where(useful, pair_max, np.inf)
            k = int(np.argmin(pair_max))
            out_k, in_k = divmod(k, incoming.size)
            if best is None or pair_max.flat[k] < best[0]:
                sample_in = int(in_light[in_k]) if in_k < in_light.size else -1
                best = (float(pair_max.flat[k]), light, int(in_heavy[out_k]), sample_in)
        if best is None or best[0] >= loads[heavy]:
            break
        _, light, sample_out, sample_in = best
        assignment[sample_out] = light
        loads[heavy] -= costs[sample_out]
        loads[light] += costs[sample_out]
        if sample_in >= 0:
            assignment[sample_in] = heavy
            loads[heavy] += costs[sample_in]
            loads[light] -= costs[sample_in]
    return assignment


def balanced_partition(
    costs: np.ndarray, num_parts: int, method: str = "lpt", refine: bool = True
) -> list[np.ndarray]:
    """Splits samples into ``num_parts`` groups of nearly equal total cost.

    Args:
        costs: (B,) x float64 cost of each sample, >= 0.
        num_parts: R.
        method: ``"lpt"`` or ``"kk"`` (see the module docstring).
        refine: Whether to run :func:`refine_by_swaps` afterwards.

    Returns:
        R arrays of sample positions in ``costs`` (int64, increasing); every position
        appears in exactly one array; an array is empty when B < R.

    Example::

        >>> parts = balanced_partition(np.array([5.0, 4, 3, 3, 3]), 2)
        >>> [float(np.array([5.0, 4, 3, 3, 3])[p].sum()) for p in parts]
        [9.0, 9.0]
    """
    if method == "lpt":
        assignment = partition_lpt(costs, num_parts)
    elif method == "kk":
        assignment = partition_karmarkar_karp(costs, num_parts)
    else:
        raise ValueError(f"method must be one of {PARTITION_METHODS}, got {method!r}")
    if refine and len(assignment):
        assignment = refine_by_swaps(costs, assignment, num_parts)
    order = np.argsort(assignment, kind="stable")
    cuts = np.searchsorted(assignment[order], np.arange(1, num_parts))
    return np.split(order, cuts)
