"""Bytes a training step moves over each link tier, for a sharding plan and a batch.

The model follows what TorchRec's sharded embedding modules send for table-wise and
row-wise shards, plus the cross-group row all-reduce of hierarchical sparse
parallelism (HSP):

* input dist: every id travels (int64) from the rank whose batch holds it to the
  rank owning its row; every other rank of the group also receives that rank's
  per-sample lengths (int64) for the feature;
* output dist: sequence features return one (D,) float32 row per id; pooled
  features return one (B, D) float32 block per (feature, shard rank);
* backward: the same embedding bytes again, in the opposite direction;
* HSP sync: per shard, the replica group all-gathers its active-id counts (int64)
  and padded ids (int64), then ring-all-reduces the (U, D) float32 gradient rows.

Messages a rank sends to itself cost nothing and are not counted. Small metadata
(the split sizes TorchRec exchanges before each all-to-all) is left out; the tests
bound the gap to the bytes counted on the wire.
"""

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from torchrec_ascend.planner.topology import INTER_NODE, INTRA_NODE, ClusterTopology

logger = logging.getLogger(__name__)

_ID_BYTES = 8
_LENGTH_BYTES = 8
_VALUE_BYTES = 4


@dataclass(frozen=True)
class TableLayout:
    """Where a table's rows live inside one shard group.

    Attributes:
        name: table name.
        dim: embedding dimension D.
        pooled: True for EmbeddingBag tables (one pooled row per sample).
        features: feature names that look the table up.
        row_blocks: per shard, (group rank, first row, end row); a table-wise
            table has one block covering all rows.
    """

    name: str
    dim: int
    pooled: bool
    features: tuple[str, ...]
    row_blocks: tuple[tuple[int, int, int], ...]

    def owners(self, ids: torch.Tensor) -> torch.Tensor:
        """(L,) x int64 ids -> (L,) x int64 group rank owning each row."""
        starts = torch.tensor([b[1] for b in self.row_blocks], dtype=torch.int64)
        ranks = torch.tensor([b[0] for b in self.row_blocks], dtype=torch.int64)
        block = torch.searchsorted(starts, ids.to(torch.int64), right=True) - 1
        return ranks[block.clamp(min=0)]


@dataclass
class StepTraffic:
    """Bytes per training step summed over all ranks, per link tier."""

    a2a: dict[str, int]
    sync: dict[str, int]

    @property
    def a2a_total(self) -> int:
        return sum(self.a2a.values())

    @property
    def sync_total(self) -> int:
        return sum(self.sync.values())


def _empty() -> dict[str, int]:
    return {INTRA_NODE: 0, INTER_NODE: 0}


def ring_bytes(
    ranks: Sequence[int], nbytes_per_rank: float, topology: ClusterTopology
) -> dict[str, int]:
    """Bytes a ring over `ranks` moves when each rank sends `nbytes_per_rank`."""
    out = _empty()
    if len(ranks) < 2:
        return out
    ordered = sorted(ranks)
    for i, src in enumerate(ordered):
        dst = ordered[(i + 1) % len(ordered)]
        out[topology.tier(src, dst)] += int(nbytes_per_rank)
    return out


def step_traffic(
    layouts: Sequence[TableLayout],
    batches: Sequence[dict[str, torch.Tensor]],
    batch_size: int,
    topology: ClusterTopology,
    group_size: int,
    hsp_sync: bool,
) -> StepTraffic:
    """Bytes of one step for ids `batches[r][feature]` ((L,) x int64) on rank r.

    Args:
        layouts: tables of one shard group (group ranks 0..group_size-1).
        batches: per global rank, the ids of each feature in its local batch.
        batch_size: samples per rank (B).
        topology: rank -> host mapping and tiers.
        group_size: ranks per shard group (world size for global sharding).
        hsp_sync: count the cross-group all-gather + all-reduce of active rows.
    """
    world = len(batches)
    if world % group_size:
        raise ValueError(f"world ({world}) must be a multiple of group_size")
    a2a = _empty()
    for rank, batch in enumerate(batches):
        base = rank - rank % group_size
        for table in layouts:
            shard_ranks = sorted({b[0] for b in table.row_blocks})
            for feature in table.features:
                ids = batch.get(feature)
                if ids is None:
                    continue
                owners = table.owners(ids)
                counts = torch.bincount(owners, minlength=group_size)
                for local_dst in shard_ranks:
                    dst = base + local_dst
                    if dst == rank:
                        continue
                    n = int(counts[local_dst])
                    tier = topology.tier(rank, dst)
                    sent = n * _ID_BYTES + batch_size * _LENGTH_BYTES
                    if table.pooled:
                        emb = batch_size * table.dim * _VALUE_BYTES
                    else:
                        emb = n * table.dim * _VALUE_BYTES
                    # forward: ids out, rows back; backward: row gradients out.
                    a2a[tier] += sent + 2 * emb

    sync = _empty()
    if hsp_sync and world > group_size:
        for local in range(group_size):
            replicas = list(range(local, world, group_size))
            for table in layouts:
                for owner, start, end in table.row_blocks:
                    if owner != local:
                        continue
                    active = []
                    for r in replicas:
                        group_ids = [
                            batches[g][f]
                            for g in range(r - local, r - local + group_size)
                            for f in table.features
                            if f in batches[g]
                        ]
                        ids = torch.cat(group_ids) if group_ids else torch.empty(0)
                        ids = ids[(ids >= start) & (ids < end)]
                        active.append(torch.unique(ids))
                    union = torch.unique(torch.cat(active)).numel()
                    pad = max(a.numel() for a in active)
                    m = len(replicas)
                    gather = (m - 1) * (_ID_BYTES + pad * _ID_BYTES)
                    reduce = 2 * (m - 1) / m * union * table.dim * _VALUE_BYTES
                    for tier, b in ring_bytes(
                        replicas, gather + reduce, topology
                    ).items():
                        sync[tier] += b
    return StepTraffic(a2a=a2a, sync=sync)


def latency_hops(world: int, group_size: int, a2a_calls: int, hsp_sync: bool) -> int:
    """Message start-ups one rank pays per step (the alpha term of alpha-beta).

    A pairwise all-to-all over g ranks costs g - 1 start-ups, so TorchRec's global
    all-to-alls cost O(N) and HSP's O(I); the HSP sync adds two ring all-gathers
    (M - 1 each) and one ring all-reduce (2 (M - 1)) per step and table shard.
    """
    hops = a2a_calls * (group_size - 1)
    groups = world // group_size
    if hsp_sync and groups > 1:
        hops += 4 * (groups - 1)
    return hops


def projected_comm_seconds(
    traffic: StepTraffic,
    topology: ClusterTopology,
    hops: int,
    dense_allreduce_bytes: int = 0,
) -> float:
    """Step communication time from per-tier bytes, bandwidths and start-ups.

    Every rank sends its share in parallel on its own links, so a tier's time is its
    per-rank bytes (the all-rank total over N; balanced shards) over the per-device
    bandwidth. The two tiers are added, not overlapped (a pessimistic bound), plus
    `hops` start-ups of `topology.latency_s`. Dense data-parallel gradients
    (`dense_allreduce_bytes` per rank, ring over the world, 2 (N - 1) start-ups) are
    added on top; they are the same for global sharding and HSP.
    """
    world = topology.world_size
    seconds = hops * topology.latency_s
    for tier in (INTRA_NODE, INTER_NODE):
        per_rank = (traffic.a2a[tier] + traffic.sync[tier]) / world
        seconds += per_rank / topology.bandwidth(tier)
    if dense_allreduce_bytes and world > 1:
        # A ring all-reduce runs at the pace of its slowest hop.
        slowest = INTER_NODE if topology.num_hosts > 1 else INTRA_NODE
        ring_share = 2 * (world - 1) / world * dense_allreduce_bytes
        seconds += ring_share / topology.bandwidth(slowest)
        seconds += 2 * (world - 1) * topology.latency_s
    return seconds
