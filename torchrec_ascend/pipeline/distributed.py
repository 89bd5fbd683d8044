"""Process groups for pipelined training: sparse collectives apart from dense ones."""

from __future__ import annotations

from typing import Any

import torch
from torchrec.distributed.model_parallel import DefaultDataParallelWrapper
from torchrec.distributed.types import ShardingEnv


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
