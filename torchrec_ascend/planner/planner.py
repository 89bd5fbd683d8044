"""A drop-in for TorchRec's `EmbeddingShardingPlanner` that knows link tiers and HSP.

The search itself (enumerate sharding options, estimate, propose, partition) is
TorchRec's; this planner decides *what* it searches over: the ranks of one shard
group (the whole world without HSP), our device-generic sharders, the topology's
bandwidths and capacities, and it names NPU placements `npu:<i>`.

Example::

    >>> planner = Planner(ascend_910b_nodes(4), num_groups=4, batch_size=256)
    >>> plan = planner.collective_plan(model, sharders, dist.GroupMember.WORLD)
    >>> model = DistributedModelParallel(model, plan=plan, sharders=sharders)
"""

import logging

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed._shard.sharding_spec import EnumerableShardingSpec
from torch.distributed.remote_device import _remote_device
from torchrec.distributed.planner import EmbeddingShardingPlanner
from torchrec.distributed.planner.types import ParameterConstraints
from torchrec.distributed.types import ModuleSharder, ShardingPlan, ShardingType
from torchrec.modules.embedding_modules import (
    EmbeddingBagCollection,
    EmbeddingCollection,
)

from torchrec_ascend.planner.sharders import default_sharders
from torchrec_ascend.planner.topology import ClusterTopology

logger = logging.getLogger(__name__)


def ensure_npu_device_name() -> None:
    """Make "npu" a device name torch parses, as torch_npu does on import.

    torch_npu registers the Ascend backend as PrivateUse1 renamed to "npu". Without
    it (planning on a CPU host for an NPU cluster) the same rename lets plans carry
    `npu:<i>` placements; renaming to the same name again is a no-op.
    """
    try:
        torch.device("npu:0")
    except RuntimeError:
        torch.utils.rename_privateuse1_backend("npu")


class Planner:
    """Plans embedding sharding for a TorchRec job, globally or per HSP group.

    Args:
        topology: hosts, devices per host, bandwidths and capacities.
        num_groups: M; 1 shards over the whole world (TorchRec's default layout),
            M > 1 plans one group of world/M ranks, and the same plan serves every
            group (each group holds a full replica of the tables).
        batch_size: samples per rank per step, for TorchRec's estimators.
        constraints: per-table `ParameterConstraints` (sharding types, kernels,
            pooling factors), passed to TorchRec unchanged.
    """

    def __init__(
        self,
        topology: ClusterTopology,
        num_groups: int = 1,
        batch_size: int | None = None,
        constraints: dict[str, ParameterConstraints] | None = None,
    ) -> None:
        world = topology.world_size
        if num_groups < 1 or world % num_groups:
            raise ValueError(
                f"num_groups must divide the world size {world}, got {num_groups}"
            )
        self.topology = topology
        self.num_groups = num_groups
        self.group_size = world // num_groups
        if (
            num_groups > 1
            and self.group_size % topology.devices_per_host
            and (topology.devices_per_host % self.group_size)
        ):
            logger.warning(
                "HSP groups of %d ranks straddle hosts of %d devices: group "
                "all-to-alls will cross the inter-node tier",
                self.group_size,
                topology.devices_per_host,
            )
        self._batch_size = batch_size
        self._constraints = dict(constraints or {})
        self._planner = EmbeddingShardingPlanner(
            topology=topology.to_torchrec(self.group_size),
            batch_size=batch_size,
            constraints=self._constraints or None,
            debug=False,
        )

    def _hsp_planner(self, module: nn.Module) -> EmbeddingShardingPlanner:
        # Limitation: under TorchRec 1.8's 2D environment on gloo, table-wise
        # shards end in a collective size mismatch, so HSP plans row-wise unless
        # the caller constrains a table explicitly.
        constraints = dict(self._constraints)
        for sub in module.modules():
            configs = []
            if isinstance(sub, EmbeddingCollection):
                configs = sub.embedding_configs()
            elif isinstance(sub, EmbeddingBagCollection):
                configs = sub.embedding_bag_configs()
            for cfg in configs:
                constraints.setdefault(
                    cfg.name,
                    ParameterConstraints(sharding_types=[ShardingType.ROW_WISE.value]),
                )
        return EmbeddingShardingPlanner(
            topology=self.topology.to_torchrec(self.group_size),
            batch_size=self._batch_size,
            constraints=constraints,
            debug=False,
        )

    def plan(
        self,
        module: nn.Module,
        sharders: list[ModuleSharder[nn.Module]] | None = None,
    ) -> ShardingPlan:
        """Plan on this process alone (every rank must get the same answer)."""
        sharders = default_sharders() if sharders is None else sharders
        planner = self._planner
        if self.num_groups > 1:
            planner = self._hsp_planner(module)
        plan = planner.plan(module, sharders)
        self._rename_devices(plan)
        return plan

    def collective_plan(
        self,
        module: nn.Module,
        sharders: list[ModuleSharder[nn.Module]] | None = None,
        pg: dist.ProcessGroup | None = None,
    ) -> ShardingPlan:
        """Plan on rank 0 of `pg` and broadcast, so every rank shards alike."""
        if pg is None:
            pg = dist.GroupMember.WORLD
        plan = self.plan(module, sharders) if dist.get_rank(pg) == 0 else None
        box = [plan]
        dist.broadcast_object_list(box, src=dist.get_global_rank(pg, 0), group=pg)
        return box[0]

    def _rename_devices(self, plan: ShardingPlan) -> None:
        """Point every shard at `<device_type>:<local index>` of its rank."""
        device_type = self.topology.device_type
        if device_type == "npu":
            ensure_npu_device_name()
        for module_plan in plan.plan.values():
            for sharding in module_plan.values():
                spec = sharding.sharding_spec
                if not isinstance(spec, EnumerableShardingSpec):
                    continue
                for shard in spec.shards:
                    rank = shard.placement.rank()
                    if device_type == "cpu":
                        device = "cpu"
                    else:
                        device = (
                            f"{device_type}:{rank % self.topology.devices_per_host}"
                        )
                    shard.placement = _remote_device(f"rank:{rank}/{device}")
