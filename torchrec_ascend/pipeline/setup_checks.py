"""Checks and choices made once when a :class:`TrainPipeline` is built: which
process group agrees on uneven data, and which setups would deadlock or race."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


def agreement_group(stages: dict[str, Any], group: Any) -> Any:
    """The group whose ranks agree every step on who still has data; None alone.

    Default: the sharded embedding modules' group, else the world.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return None
    if group is None:
        for stage in stages.values():
            env = getattr(stage.module, "_env", None)
            if env is not None and getattr(env, "process_group", None) is not None:
                group = env.process_group
                break
    if dist.get_world_size(group) == 1:
        return None
    return group if group is not None else dist.group.WORLD


def check_separate_dense_group(model: nn.Module, stages: dict[str, Any]) -> None:
    """Sparse collectives run on the worker thread while the dense all-reduce runs
    on the calling thread; on one process group their order could differ between
    ranks and the job would deadlock."""
    sparse_groups = {
        id(getattr(getattr(s.module, "_env", None), "process_group", None))
        for s in stages.values()
        if s.sharded
    }
    for name, module in model.named_modules():
        if isinstance(module, DistributedDataParallel):
            if id(module.process_group) in sparse_groups:
                raise ValueError(
                    f"{name or 'model'}: DDP all-reduces on the same process "
                    "group as the sharded embeddings; in a pipelined mode they run "
                    "on different threads, so give DDP its own group (see "
                    "torchrec_ascend.pipeline.DenseGroupDataParallelWrapper)"
                )


def check_local_tables_not_in(
    optimizer: torch.optim.Optimizer,
    stages: dict[str, Any],
    sparse_optimizer: torch.optim.Optimizer | None,
) -> None:
    """Local tables are updated on the sparse thread, concurrently with the dense
    step, so the dense optimizer must not own them."""
    dense = {id(p) for group in optimizer.param_groups for p in group["params"]}
    for stage in stages.values():
        if stage.sharded:
            continue
        for name, param in stage.module.named_parameters():
            if id(param) in dense:
                raise ValueError(
                    f"{stage.fqn}.{name} is a local embedding table but is in the "
                    "dense optimizer; give it to sparse_optimizer instead"
                )
        if sparse_optimizer is None and any(
            p.requires_grad for p in stage.module.parameters()
        ):
            raise ValueError(
                f"{stage.fqn} is a local (unsharded) embedding module; pass a "
                "sparse_optimizer for its parameters"
            )
