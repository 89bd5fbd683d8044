"""Dynamic jagged load balancing across data-parallel ranks.

A sample's cost is its training FLOPs (:class:`SampleCostModel`, from
``models/flops.py``). A :class:`BalancedSampler` decides which samples each rank trains
at each step (fixed baseline, token-aware dynamic batches, or global reallocation by a
cost partition that never splits a sequence); :class:`BalancedTrainBatches` collates
them, planning step i+1 in a background thread while step i trains.

Typical use (one rank of R)::

    lengths = train_lengths(dataset)
    sampler = BalancedSampler(lengths, SampleCostModel(config), R, rank,
                              local_batch_size=8, strategy="global")
    for batch in BalancedTrainBatches(dataset, sampler):
        ...
"""

from torchrec_ascend.balance.collate import (
    BalancedTrainBatches,
    empty_batch,
    train_lengths,
)
from torchrec_ascend.balance.cost import SampleCostModel
from torchrec_ascend.balance.partition import (
    PARTITION_METHODS,
    balanced_partition,
    imbalance,
    partition_karmarkar_karp,
    partition_lpt,
    refine_by_swaps,
)
from torchrec_ascend.balance.prefetch import Prefetcher
from torchrec_ascend.balance.sampler import (
    STRATEGIES,
    BalancedSampler,
    LengthExchange,
    epoch_permutation,
    pack_by_budget,
)

__all__ = [
    "PARTITION_METHODS",
    "STRATEGIES",
    "BalancedSampler",
    "BalancedTrainBatches",
    "LengthExchange",
    "Prefetcher",
    "SampleCostModel",
    "balanced_partition",
    "empty_batch",
    "epoch_permutation",
    "imbalance",
    "pack_by_budget",
    "partition_karmarkar_karp",
    "partition_lpt",
    "refine_by_swaps",
    "train_lengths",
]
