"""Process groups of hierarchical sparse parallelism (HSP).

N ranks form M groups of I = N / M consecutive ranks. Each group holds a full
replica of the embedding tables, sharded over its I ranks (the *shard* group: all
embedding all-to-alls stay inside it). Ranks with the same position in every group
hold the same shard (the *replica* group: the active gradient rows of that shard
are all-reduced over it). With I = devices per host, all-to-alls never leave a host.
`HSPModelParallel` fills this in from TorchRec's 2D device mesh.
"""

import logging
from dataclasses import dataclass

import torch.distributed as dist

logger = logging.getLogger(__name__)


@dataclass
class HSPGroups:
    """This rank's place in the HSP layout and its process groups.

    Attributes:
        world_size: N.
        group_size: I, ranks per shard group.
        rank: global rank.
        group_index: which of the M groups this rank is in.
        group_rank: position inside its group (also its shard's index).
        shard_pg: the I ranks of this rank's group.
        replica_pg: the M ranks holding the same shard as this rank.
    """

    world_size: int
    group_size: int
    rank: int
    group_index: int
    group_rank: int
    shard_pg: dist.ProcessGroup
    replica_pg: dist.ProcessGroup

    @property
    def num_groups(self) -> int:
        return self.world_size // self.group_size

    def shard_ranks(self) -> list[int]:
        start = self.group_index * self.group_size
        return list(range(start, start + self.group_size))

    def replica_ranks(self) -> list[int]:
        return list(range(self.group_rank, self.world_size, self.group_size))
