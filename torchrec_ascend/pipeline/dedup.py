"""Host-side id deduplication for embedding collections whose features share tables.

Sequence models look the same ids up many times per batch: a history and its
next-item targets are the same sequence shifted by one, and shared negatives repeat in
every bag. Looking up each distinct id once per table shrinks the input all-to-all,
the lookup, the output all-to-all and the gradient all-to-all alike; the full
per-feature rows are rebuilt after the lookup by an index gather whose backward sums
the gradients of repeated ids.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchrec.sparse.jagged_tensor import JaggedTensor, KeyedJaggedTensor


@dataclass
class DedupPlan:
    """How to rebuild per-feature rows from the rows of the deduplicated lookup.

    Attributes:
        source_key: for each original key, the key whose output holds its rows.
        inverse: for each original key, (L_f,) x int64 row of each id in the
            source key's (U, D) output.
        lengths: for each original key, (B,) its original bag lengths.
    """

    source_key: dict[str, str]
    inverse: dict[str, torch.Tensor]
    lengths: dict[str, torch.Tensor]

    def to(self, device: torch.device, non_blocking: bool = False) -> DedupPlan:
        return DedupPlan(
            source_key=self.source_key,
            inverse={
                k: v.to(device, non_blocking=non_blocking)
                for k, v in self.inverse.items()
            },
            lengths={
                k: v.to(device, non_blocking=non_blocking)
                for k, v in self.lengths.items()
            },
        )

    def expand(self, out: dict[str, JaggedTensor]) -> dict[str, JaggedTensor]:
        """Per-feature JaggedTensors in the original layout from the deduped output."""
        return {
            key: JaggedTensor(
                values=out[source].values().index_select(0, self.inverse[key]),
                lengths=self.lengths[key],
            )
            for key, source in self.source_key.items()
        }


def dedup_features(
    features: KeyedJaggedTensor, table_features: list[list[str]]
) -> tuple[KeyedJaggedTensor, DedupPlan]:
    """Replaces the ids of each table by its distinct ids.

    The deduplicated KJT keeps the keys and the batch size, so a sharded module accepts
    it unchanged: the first key of each table carries the table's distinct ids in its
    first bag; every other bag is empty.

    Args:
        features: KJT with keys K and stride B >= 1; values (L,) x int.
        table_features: for each table, the feature names that look it up.

    Returns:
        The deduplicated KJT and the plan to rebuild the original rows.
    """
    keys = features.keys()
    stride = features.stride()
    if stride < 1:
        raise ValueError(f"dedup needs a batch of >= 1 bags, got stride {stride}")
    by_key = features.to_dict()
    source_key: dict[str, str] = {}
    groups: dict[str, list[str]] = {}
    for names in table_features:
        present = [k for k in keys if k in names]
        if present:
            groups[present[0]] = present
            for k in present:
                source_key[k] = present[0]
    for k in keys:
        if k not in source_key:
            source_key[k] = k
            groups[k] = [k]

    inverse: dict[str, torch.Tensor] = {}
    lengths: dict[str, torch.Tensor] = {}
    new_values: list[torch.Tensor] = []
    new_lengths: list[torch.Tensor] = []
    for k in keys:
        lengths[k] = by_key[k].lengths()
        bag_lengths = torch.zeros(stride, dtype=features.lengths().dtype)
        if k in groups:
            members = groups[k]
            ids = torch.cat([by_key[m].values() for m in members])
            unique, inv = torch.unique(ids, sorted=True, return_inverse=True)
            for m, part in zip(
                members, inv.split([by_key[m].values().numel() for m in members])
            ):
                inverse[m] = part
            new_values.append(unique)
            bag_lengths[0] = unique.numel()
        new_lengths.append(bag_lengths)
    deduped = KeyedJaggedTensor(
        keys=keys,
        values=torch.cat(new_values) if new_values else features.values()[:0],
        lengths=torch.cat(new_lengths),
        stride=stride,
    )
    return deduped, DedupPlan(source_key, inverse, lengths)
