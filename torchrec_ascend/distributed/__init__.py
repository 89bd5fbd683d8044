"""Hierarchical sparse parallelism (HSP) runtime: shard inside a group, replicate
across groups, all-reduce only the active embedding rows; plus exact per-tier
collective byte counting; an emulated network link for benchmarks on one machine."""

from torchrec_ascend.distributed.comm_counter import CommCounter, comm_phase
from torchrec_ascend.distributed.emulated_link import EmulatedLink
from torchrec_ascend.distributed.groups import HSPGroups
from torchrec_ascend.distributed.hsp import HSPModelParallel
from torchrec_ascend.distributed.lookup import (
    ShardGradients,
    SparseGradLookup,
    install_sparse_grad_lookup,
)
from torchrec_ascend.distributed.sparse_optim import (
    Adagrad,
    Adam,
    RowSparseOptimizer,
    RowwiseAdagrad,
)

__all__ = [
    "Adagrad",
    "Adam",
    "CommCounter",
    "EmulatedLink",
    "HSPGroups",
    "HSPModelParallel",
    "RowSparseOptimizer",
    "RowwiseAdagrad",
    "ShardGradients",
    "SparseGradLookup",
    "comm_phase",
    "install_sparse_grad_lookup",
]
