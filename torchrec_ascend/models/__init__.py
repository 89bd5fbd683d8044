"""Generative recommenders: HSTU and SASRec retrieval models and their configs."""

from torchrec_ascend.models.configs import (
    PRESETS,
    ZOO,
    ExperimentConfig,
    LossConfig,
    ModelConfig,
    TrainConfig,
    get_preset,
)
from torchrec_ascend.models.flops import (
    sample_train_flops,
    sequence_cost,
    train_step_flops,
)
from torchrec_ascend.models.hstu import HSTUEncoder, HSTULayer
from torchrec_ascend.models.losses import SampledSoftmaxLoss
from torchrec_ascend.models.retrieval import SequentialRetrieval
from torchrec_ascend.models.sasrec import SASRecEncoder

__all__ = [
    "PRESETS",
    "ZOO",
    "ExperimentConfig",
    "HSTUEncoder",
    "HSTULayer",
    "LossConfig",
    "ModelConfig",
    "SASRecEncoder",
    "SampledSoftmaxLoss",
    "SequentialRetrieval",
    "TrainConfig",
    "get_preset",
    "sample_train_flops",
    "sequence_cost",
    "train_step_flops",
]
