"""Full-ranking retrieval metrics: HR@K, NDCG@K and MRR from target ranks."""

import torch

DEFAULT_KS = (10, 50, 200)


def target_ranks(
    scores: torch.Tensor, targets: torch.Tensor, excluded: list[torch.Tensor]
) -> torch.Tensor:
    """0-based rank of each target among all items, excluding seen items.

    Args:
        scores: (B, num_items + 1) scores; column 0 is the unused padding id.
        targets: (B,) x int64 target item ids.
        excluded: B tensors of item ids to drop from that row's candidates (the
            user's history); the target itself is never dropped.

    Returns:
        (B,) x int64: how many candidates score strictly higher than the target.
    """
    target_scores = scores.gather(1, targets[:, None])
    scores = scores.clone()
    scores[:, 0] = float("-inf")
    if excluded:
        rows = torch.repeat_interleave(
            torch.arange(len(excluded)), torch.tensor([e.numel() for e in excluded])
        )
        scores[rows, torch.cat(excluded)] = float("-inf")
    # Strictly greater: a masked target (it was also in the history) still ranks.
    return (scores > target_scores).sum(dim=1)


def metrics_from_ranks(ranks: torch.Tensor, ks=DEFAULT_KS) -> dict[str, float]:
    """HR@K, NDCG@K (one relevant item) and MRR averaged over users."""
    ranks = ranks.double()
    if ranks.numel() == 0:
        raise ValueError("metrics_from_ranks needs at least one rank")
    out = {}
    for k in ks:
        hit = ranks < k
        out[f"hr@{k}"] = float(hit.double().mean())
        out[f"ndcg@{k}"] = float((hit.double() / torch.log2(ranks + 2.0)).mean())
    out["mrr"] = float((1.0 / (ranks + 1.0)).mean())
    return out
