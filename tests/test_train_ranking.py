"""Full-ranking metrics against a naive per-user loop."""

import math

import torch

from torchrec_ascend.train.ranking import metrics_from_ranks, target_ranks


def naive_rank(scores, target, excluded):
    target_score = scores[target]
    rank = 0
    for item in range(1, scores.numel()):
        if item == target or item in excluded:
            continue
        rank += int(scores[item] > target_score)
    return rank


def test_target_ranks_match_naive_loop():
    gen = torch.Generator().manual_seed(0)
    scores = torch.randn(6, 30, generator=gen)
    scores[2, 5] = scores[2, 7]  # a tie never counts as "higher"
    targets = torch.tensor([1, 29, 5, 3, 10, 12])
    excluded = [
        torch.tensor([2, 3, 4]),
        torch.tensor([], dtype=torch.int64),
        torch.tensor([7, 8]),
        torch.tensor([3, 9]),  # the target itself is in the history
        torch.arange(1, 30)[torch.arange(1, 30) != 10],
        torch.tensor([12, 12, 13]),
    ]
    got = target_ranks(scores, targets, excluded)
    want = [
        naive_rank(scores[b], int(targets[b]), set(excluded[b].tolist()))
        for b in range(6)
    ]
    assert got.tolist() == want
    assert got[4] == 0  # every other item was excluded


def test_metrics_from_ranks_formulas():
    ranks = torch.tensor([0, 3, 9, 10, 49, 50, 199, 500])
    m = metrics_from_ranks(ranks, ks=(10, 50, 200))
    n = len(ranks)
    assert math.isclose(m["hr@10"], 3 / n)
    assert math.isclose(m["hr@50"], 5 / n)
    assert math.isclose(m["hr@200"], 7 / n)
    want_ndcg10 = (1 / math.log2(2) + 1 / math.log2(5) + 1 / math.log2(11)) / n
    assert math.isclose(m["ndcg@10"], want_ndcg10)
    assert math.isclose(m["mrr"], sum(1 / (r + 1) for r in ranks.tolist()) / n)
