"""A shard lookup that hands its row gradients back instead of updating rows.

TorchRec's fused TBE kernel applies the optimizer inside its backward, with the
gradient of one group only. HSP must first sum that gradient over all groups, so
each shard kernel's forward is replaced by a plain gather from the same weight
storage (the TBE's own per-table views, so checkpoints and `state_dict` still see
the trained rows). The gathered rows are autograd leaves; after backward their
`.grad` holds one gradient row per looked-up id, which `ShardGradients` sums per
unique row.

Works for sequence kernels (output (L, D): one row per id, features in KJT order)
and pooled kernels (output (B, sum D): sum or mean over each bag, optional
per-sample weights), on any device torch indexes on.
"""

import logging
from dataclasses import dataclass, field

import torch
from torchrec.modules.embedding_configs import PoolingType
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

logger = logging.getLogger(__name__)


@dataclass
class ShardGradients:
    """Ids and gradient leaves recorded for one table shard during a step.

    Attributes:
        table: table name.
        weight: (local rows, local cols) x float view of the shard's storage.
        row_offset: first global row of the shard.
        col_offset: first column of the shard.
    """

    table: str
    weight: torch.Tensor
    row_offset: int
    col_offset: int
    ids: list[torch.Tensor] = field(default_factory=list)
    rows: list[torch.Tensor] = field(default_factory=list)

    def clear(self) -> None:
        self.ids.clear()
        self.rows.clear()

    def summed(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Unique local ids (U,) x int64 and their summed gradients (U, D)."""
        dim = self.weight.shape[1]
        pairs = [(i, r.grad) for i, r in zip(self.ids, self.rows) if r.grad is not None]
        if not pairs:
            empty = torch.empty(0, dtype=torch.int64, device=self.weight.device)
            return empty, self.weight.new_zeros(0, dim)
        ids = torch.cat([p[0] for p in pairs]).to(torch.int64)
        grads = torch.cat([p[1] for p in pairs])
        unique, inverse = torch.unique(ids, return_inverse=True)
        summed = grads.new_zeros(unique.numel(), dim).index_add_(0, inverse, grads)
        return unique, summed


class SparseGradLookup:
    """Replacement `forward` for one TorchRec TBE kernel module."""

    def __init__(self, kernel: torch.nn.Module, pooled: bool) -> None:
        tables = kernel._config.embedding_tables
        weights = kernel.split_embedding_weights()
        if len(weights) != len(tables):
            raise ValueError(
                f"kernel has {len(tables)} tables but {len(weights)} weight views"
            )
        self.pooled = pooled
        self.shards = [
            ShardGradients(
                table=t.name,
                weight=w,
                row_offset=t.local_metadata.shard_offsets[0] if t.local_metadata else 0,
                col_offset=t.local_metadata.shard_offsets[1] if t.local_metadata else 0,
            )
            for t, w in zip(tables, weights)
        ]
        self.mean_pooling = [t.pooling == PoolingType.MEAN for t in tables]
        self.feature_table = [
            i for i, t in enumerate(tables) for _ in range(t.num_features())
        ]

    def __call__(self, features: KeyedJaggedTensor, *args, **kwargs) -> torch.Tensor:
        per_key = features.length_per_key()
        if len(per_key) != len(self.feature_table):
            raise ValueError(
                f"kernel expects {len(self.feature_table)} features, got {len(per_key)}"
            )
        values = torch.split(features.values(), per_key)
        weights = features.weights_or_none()
        if weights is not None and not torch.is_floating_point(weights):
            # Integer "weights" are bucket positions from the input dist, not
            # per-sample weights.
            weights = None
        if weights is not None:
            weights = torch.split(weights, per_key)
        lengths = features.lengths().view(len(per_key), -1) if self.pooled else None

        outputs = []
        for f, table_idx in enumerate(self.feature_table):
            shard = self.shards[table_idx]
            ids = values[f].to(torch.int64)
            rows = shard.weight.detach().index_select(0, ids).requires_grad_(True)
            shard.ids.append(ids)
            shard.rows.append(rows)
            if not self.pooled:
                outputs.append(rows)
                continue
            bag_lengths = lengths[f]
            batch = bag_lengths.numel()
            bag = torch.repeat_interleave(
                torch.arange(batch, device=ids.device), bag_lengths
            )
            contrib = rows if weights is None else rows * weights[f].unsqueeze(1)
            pooled = rows.new_zeros(batch, rows.shape[1]).index_add(0, bag, contrib)
            if self.mean_pooling[table_idx]:
                pooled = pooled / bag_lengths.clamp(min=1).unsqueeze(1).to(pooled.dtype)
            outputs.append(pooled)

        if self.pooled:
            return torch.cat(outputs, dim=1)
        if not outputs:
            return features.values().new_zeros(0, dtype=torch.float32)
        return torch.cat(outputs, dim=0)


def install_sparse_grad_lookup(
    kernel: torch.nn.Module, pooled: bool
) -> SparseGradLookup:
    """Route `kernel`'s forward through a `SparseGradLookup` and return it."""
    lookup = SparseGradLookup(kernel, pooled)
    # An instance attribute shadows the class method for nn.Module.__call__.
    kernel.forward = lookup
    return lookup
