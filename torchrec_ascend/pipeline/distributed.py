"""Process groups for pipelined training: sparse collectives apart from dense ones."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from fbgemm_gpu.split_embedding_configs import EmbOptimType
from torch import nn
from torchrec.distributed.embedding import EmbeddingCollectionSharder
from torchrec.distributed.model_parallel import (
    DefaultDataParallelWrapper,
    DistributedModelParallel,
)
from torchrec.distributed.planner import EmbeddingShardingPlanner, Topology
from torchrec.distributed.planner.types import ParameterConstraints
from torchrec.distributed.types import ShardingEnv
from torchrec.modules.embedding_modules import (
    EmbeddingBagCollection,
    EmbeddingCollection,
)


class DenseGroupDataParallelWrapper(DefaultDataParallelWrapper):
    """DMP's data-parallel wrapper, with DDP's all-reduce on a group of its own.

    In a pipelined mode the sparse all-to-alls are issued from the pipeline's sparse
    thread while DDP all-reduces from the training thread. Collectives on one process
    group must be issued in the same order on every rank, which two threads do not
    guarantee; two groups make each order deterministic.

    Args:
        dense_group: the process group DDP uses (e.g. ``dist.new_group()``).
        **kwargs: passed to ``DefaultDataParallelWrapper``.

    Example::

        >>> sparse = dist.new_group(backend="gloo")
        >>> dmp = DistributedModelParallel(
        ...     model, env=ShardingEnv.from_process_group(sparse),
        ...     data_parallel_wrapper=DenseGroupDataParallelWrapper(dist.group.WORLD))
    """

    def __init__(self, dense_group: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.dense_group = dense_group

    def _ddp_wrap(
        self,
        dmp: Any,
        env: ShardingEnv,
        device: torch.device,
        ddp_ignore_param_names: set[str],
    ) -> None:
        super()._ddp_wrap(
            dmp,
            ShardingEnv.from_process_group(self.dense_group),
            device,
            ddp_ignore_param_names,
        )


def shard_embeddings(
    module: nn.Module,
    device: torch.device,
    sparse_group: Any,
    dense_group: Any,
    sharding_type: str = "row_wise",
    optimizer: str = "rowwise_adagrad",
    learning_rate: float = 0.05,
    index_dedup: bool = False,
) -> DistributedModelParallel:
    """Wraps ``module`` in DMP: embedding tables sharded on ``sparse_group`` with a
    fused optimizer, dense parameters in DDP on ``dense_group``.

    Args:
        module: a model whose EmbeddingCollections were built on the "meta" device.
        device: the training device.
        sparse_group, dense_group: process groups (may be the same object for the
            plain loop and TorchRec's single-threaded pipeline, must differ for the
            pipelined modes of :class:`TrainPipeline`).
        sharding_type: one TorchRec sharding type for every table.
        optimizer: fused table optimizer: "rowwise_adagrad", "adagrad", "sgd" (CPU
            tables), or "adam" (CUDA tables only in FBGEMM 1.8).
        learning_rate: its learning rate.
        index_dedup: TorchRec's own input dedup in the EmbeddingCollection sharder
            (``use_index_dedup``): each distinct id crosses the all-to-all once.
    """
    optim = {
        "adam": EmbOptimType.ADAM,
        "sgd": EmbOptimType.EXACT_SGD,
        "rowwise_adagrad": EmbOptimType.EXACT_ROWWISE_ADAGRAD,
        "adagrad": EmbOptimType.EXACT_ADAGRAD,
    }
    if optimizer not in optim:
        raise ValueError(f"optimizer must be one of {sorted(optim)}, got {optimizer!r}")
    tables = [
        config.name
        for m in module.modules()
        if isinstance(m, (EmbeddingCollection, EmbeddingBagCollection))
        for config in m.embedding_configs()
    ]
    world = dist.get_world_size(sparse_group)
    planner = EmbeddingShardingPlanner(
        topology=Topology(world_size=world, compute_device=device.type),
        constraints={
            t: ParameterConstraints(sharding_types=[sharding_type]) for t in tables
        },
    )
    # Limitation: only EmbeddingCollections get a sharder here; an
    # EmbeddingBagCollection would stay unsharded (data parallel).
    fused = {"optimizer": optim[optimizer], "learning_rate": learning_rate}
    sharders = [
        EmbeddingCollectionSharder(fused_params=fused, use_index_dedup=index_dedup)
    ]
    plan = planner.collective_plan(module, sharders, sparse_group)
    return DistributedModelParallel(
        module,
        env=ShardingEnv.from_process_group(sparse_group),
        device=device,
        plan=plan,
        sharders=sharders,
        data_parallel_wrapper=DenseGroupDataParallelWrapper(dense_group),
    )
