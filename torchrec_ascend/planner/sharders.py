"""Sharders that offer every model-parallel sharding type on CPU and NPU.

TorchRec 1.8's `EmbeddingBagCollectionSharder` offers row-wise, table-row-wise and
grid sharding only when the compute device is CUDA, although the sharded modules
and their fused TBE kernel (FBGEMM's CPU build, or torch_npu's port) are
device-generic: a 2-rank gloo run on CPU shards row-wise, table-row-wise and grid
and trains. These sharders lift the device gate and keep the kernel choice to the
fused TBE, the one kernel every backend has.

`EmbeddingCollectionSharder` (sequence embeddings) already offers table-wise,
column-wise and row-wise on every device; TorchRec has no table-row-wise or grid
sharding for sequence embeddings at all, so there is nothing to lift there.
"""

import logging
from typing import Any

from torch import nn
from torchrec.distributed.embedding import EmbeddingCollectionSharder
from torchrec.distributed.embedding_types import EmbeddingComputeKernel
from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
from torchrec.distributed.types import ModuleSharder, ShardingType

from torchrec_ascend.device import CUDA

logger = logging.getLogger(__name__)

_POOLED_TYPES = (
    ShardingType.DATA_PARALLEL,
    ShardingType.TABLE_WISE,
    ShardingType.COLUMN_WISE,
    ShardingType.TABLE_COLUMN_WISE,
    ShardingType.ROW_WISE,
    ShardingType.TABLE_ROW_WISE,
    ShardingType.GRID_SHARD,
)
_SEQUENCE_TYPES = (
    ShardingType.DATA_PARALLEL,
    ShardingType.TABLE_WISE,
    ShardingType.COLUMN_WISE,
    ShardingType.ROW_WISE,
)


def _kernels(sharding_type: str) -> list[str]:
    # Limitation: UVM caching, key-value and SSD kernels are CUDA-only in FBGEMM 1.8,
    # so CPU and NPU get the fused TBE (model-parallel) or dense (data-parallel).
    if sharding_type == ShardingType.DATA_PARALLEL.value:
        return [EmbeddingComputeKernel.DENSE.value]
    return [EmbeddingComputeKernel.FUSED.value]


class DeviceGenericEmbeddingBagCollectionSharder(EmbeddingBagCollectionSharder):
    """EBC sharder with row-wise, table-row-wise and grid sharding on any device.

    Example::

        >>> sharder = DeviceGenericEmbeddingBagCollectionSharder(
        ...     fused_params={"optimizer": EmbOptimType.EXACT_ROWWISE_ADAGRAD,
        ...                   "learning_rate": 0.05})
        >>> "row_wise" in sharder.sharding_types("cpu")
        True
    """

    def sharding_types(self, compute_device_type: str) -> list[str]:
        if compute_device_type == CUDA:
            return super().sharding_types(compute_device_type)
        return [t.value for t in _POOLED_TYPES]

    def compute_kernels(
        self, sharding_type: str, compute_device_type: str
    ) -> list[str]:
        if compute_device_type == CUDA:
            return super().compute_kernels(sharding_type, compute_device_type)
        return _kernels(sharding_type)


class DeviceGenericEmbeddingCollectionSharder(EmbeddingCollectionSharder):
    """EC sharder with the same kernel rule as the EBC one on CPU and NPU."""

    def sharding_types(self, compute_device_type: str) -> list[str]:
        return [t.value for t in _SEQUENCE_TYPES]

    def compute_kernels(
        self, sharding_type: str, compute_device_type: str
    ) -> list[str]:
        if compute_device_type == CUDA:
            return super().compute_kernels(sharding_type, compute_device_type)
        return _kernels(sharding_type)


def default_sharders(
    fused_params: dict[str, Any] | None = None,
) -> list[ModuleSharder[nn.Module]]:
    """The sharders to pass to the planner and to `DistributedModelParallel`."""
    return [
        DeviceGenericEmbeddingBagCollectionSharder(fused_params=fused_params),
        DeviceGenericEmbeddingCollectionSharder(fused_params=fused_params),
    ]
