"""Sampled softmax over uniformly sampled negatives, with accidental hits masked."""

import torch
import torch.nn.functional as F
from torch import nn


class SampledSoftmaxLoss(nn.Module):
    """Cross-entropy of the positive against sampled negatives, per target token.

    Logits are dot products of L2-normalised embeddings divided by ``temperature``.
    A negative whose id equals the token's positive id is masked out, so the model is
    never pushed away from the item it should predict.
    """

    def __init__(self, temperature: float) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(
        self,
        queries: torch.Tensor,
        positives: torch.Tensor,
        positive_ids: torch.Tensor,
        negatives: torch.Tensor,
        negative_ids: torch.Tensor,
    ) -> torch.Tensor:
        """Mean loss over tokens.

        Args:
            queries: (T, D) normalised encoder outputs.
            positives: (T, D) normalised positive item embeddings.
            positive_ids: (T,) x int64.
            negatives: (T, R, D) per-token or (R, D) shared normalised negatives.
            negative_ids: (T, R) or (R,) x int64, matching ``negatives``.

        Returns:
            () scalar loss.
        """
        if queries.shape[0] == 0:
            return queries.sum() * 0.0
        positive_logit = (queries * positives).sum(-1, keepdim=True)
        if negatives.dim() == 2:
            negative_logits = queries @ negatives.t()
            accidental = positive_ids[:, None] == negative_ids[None, :]
        else:
            negative_logits = torch.bmm(negatives, queries.unsqueeze(-1)).squeeze(-1)
            accidental = positive_ids[:, None] == negative_ids
        negative_logits = negative_logits.masked_fill(accidental, float("-inf"))
        logits = torch.cat([positive_logit, negative_logits], dim=-1) / self.temperature
        # The positive sits in column 0.
        return -F.log_softmax(logits, dim=-1)[:, 0].mean()
