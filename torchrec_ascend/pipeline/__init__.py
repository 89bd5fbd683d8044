"""Pipelined, semi-asynchronous training for TorchRec models on CPU, NPU and CUDA."""

from torchrec_ascend.pipeline.dedup import DedupPlan, dedup_features
from torchrec_ascend.pipeline.distributed import (
    DenseGroupDataParallelWrapper,
    shard_embeddings,
)
from torchrec_ascend.pipeline.model_io import find_sparse_modules
from torchrec_ascend.pipeline.retrieval import (
    RetrievalBatch,
    RetrievalBatchPreparer,
    RetrievalTrainModule,
    item_features,
    padding_batch,
)
from torchrec_ascend.pipeline.streams import DeviceStreams
from torchrec_ascend.pipeline.timeline import StageTimeline
from torchrec_ascend.pipeline.train_pipeline import MODES, TrainPipeline

__all__ = [
    "MODES",
    "DedupPlan",
    "DenseGroupDataParallelWrapper",
    "DeviceStreams",
    "RetrievalBatch",
    "RetrievalBatchPreparer",
    "RetrievalTrainModule",
    "StageTimeline",
    "TrainPipeline",
    "dedup_features",
    "find_sparse_modules",
    "item_features",
    "padding_batch",
    "shard_embeddings",
]
