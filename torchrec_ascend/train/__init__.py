"""Training and evaluation: the loop, full-ranking metrics, checkpoints, the CLI."""

from torchrec_ascend.train.evaluate import evaluate
from torchrec_ascend.train.loop import RunSpec, Trainer, train
from torchrec_ascend.train.negatives import UniformNegativeSampler
from torchrec_ascend.train.ranking import metrics_from_ranks, target_ranks

__all__ = [
    "RunSpec",
    "Trainer",
    "UniformNegativeSampler",
    "evaluate",
    "metrics_from_ranks",
    "target_ranks",
    "train",
]
