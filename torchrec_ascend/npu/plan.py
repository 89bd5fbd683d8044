"""Moves a TorchRec sharding plan's shard placements onto NPU devices.

TorchRec's planner only knows host, CUDA and MTIA compute devices, so a plan for
an NPU job is made with a host topology and then re-placed: every shard
keeps its rank and layout and is put on ``npu:<local rank>`` instead.
"""

import copy

import torch
from torch.distributed import _remote_device

from torchrec_ascend.device import NPU


def place_plan_on_device(plan, device_type: str = NPU, local_world_size: int = 1):
    """Returns a copy of ``plan`` whose shards live on ``device_type`` devices.

    Args:
        plan: ``torchrec.distributed.types.ShardingPlan`` from any planner.
        device_type: target device type, e.g. "npu".
        local_world_size: ranks per host; rank r goes to device index
            ``r % local_world_size``.

    Returns:
        A new ``ShardingPlan``; the input is not modified.
    """
    if local_world_size < 1:
        raise ValueError(f"local_world_size must be >= 1, got {local_world_size}")
    torch.device(device_type)  # fails early on an unknown device type
    placed = copy.deepcopy(plan)
    for module_plan in placed.plan.values():
        for sharding in module_plan.values():
            spec = getattr(sharding, "sharding_spec", None)
            if spec is None:
                continue
            for shard in spec.shards:
                rank = shard.placement.rank()
                shard.placement = _remote_device(
                    f"rank:{rank}/{device_type}:{rank % local_world_size}"
                )
    return placed
