"""Full-ranking evaluation of a retrieval model on a leave-one-out split."""

import logging

import torch

from torchrec_ascend.data import LeaveOneOutSplit, make_eval_loader
from torchrec_ascend.models import SequentialRetrieval
from torchrec_ascend.train.ranking import DEFAULT_KS, metrics_from_ranks, target_ranks

logger = logging.getLogger(__name__)


@torch.no_grad()
def evaluate(
    model: SequentialRetrieval,
    split: LeaveOneOutSplit,
    which: str,
    batch_size: int,
    ks=DEFAULT_KS,
) -> dict[str, float]:
    """Ranks each user's held-out item against every item the user has not seen.

    Args:
        model: the retrieval model (switched to eval mode for the call).
        split: leave-one-out split; ``which`` picks "valid" or "test".
        batch_size: users per scoring step.

    Returns:
        {"hr@K", "ndcg@K" for K in ks, "mrr", "users"}.
    """
    was_training = model.training
    model.eval()
    examples = split.valid if which == "valid" else split.test
    max_seq_len = model.config.model.max_seq_len
    items = model.item_table()
    ranks, seen = [], 0
    for batch in make_eval_loader(split, which, max_seq_len, batch_size):
        users = model.user_embeddings(
            batch.features, batch.timestamps, batch.query_timestamps
        )
        scores = users @ items.t()
        size = batch.batch_size
        excluded = [
            torch.from_numpy(examples.histories[e]) for e in range(seen, seen + size)
        ]
        ranks.append(target_ranks(scores, batch.targets, excluded))
        seen += size
    model.train(was_training)
    metrics = metrics_from_ranks(torch.cat(ranks), ks)
    metrics["users"] = seen
    return metrics
