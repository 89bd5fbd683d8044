"""Sampled softmax over uniformly sampled negatives, with accidental hits masked."""

import torch
import torch.nn.functional as F
from torch import nn

from torchrec_ascend.negatives import (
    build_sharing_plan,
    gather_borrowed,
    round_negatives,
    segmented_negative_logits,
)
from torchrec_ascend.negatives import negative_dtype as dtype_named

_EPS = 1e-6


def _check_shapes(queries, positives, positive_ids, negatives, negative_ids) -> None:
    if queries.dim() != 2 or positives.shape != queries.shape:
        raise ValueError(
            "queries and positives must both be (T, D); got "
            f"{tuple(queries.shape)} and {tuple(positives.shape)}"
        )
    num_tokens, dim = queries.shape
    if positive_ids.shape != (num_tokens,):
        raise ValueError(
            f"positive_ids must be ({num_tokens},), got {tuple(positive_ids.shape)}"
        )
    if negatives.dim() not in (2, 3) or negatives.shape[-1] != dim:
        raise ValueError(
            f"negatives must be (T, R, {dim}) or (R, {dim}), "
            f"got {tuple(negatives.shape)}"
        )
    if negatives.dim() == 3 and negatives.shape[0] != num_tokens:
        raise ValueError(
            f"per-token negatives must have T={num_tokens} rows, "
            f"got {tuple(negatives.shape)}"
        )
    if negative_ids.shape != negatives.shape[:-1]:
        raise ValueError(
            f"negative_ids must be {tuple(negatives.shape[:-1])} to match negatives, "
            f"got {tuple(negative_ids.shape)}"
        )


class SampledSoftmaxLoss(nn.Module):
    """Cross-entropy of the positive against sampled negatives, per target token.

    Logits are dot products of L2-normalised embeddings divided by ``temperature``.
    A negative whose id equals the token's positive id is masked out, so the model is
    never pushed away from the item it should predict.

    Args:
        temperature: logits are cosine similarities divided by this.
        expansion: intra-batch logit sharing factor k (per-token negatives only):
            each token also scores the negatives of k - 1 other tokens of the batch.
        negative_dtype: "float32", "float16" or "bfloat16"; precision the negative
            rows are kept and computed from (positives and the loss stay fp32).
        offload_negatives: compute per-token negative logits segment by segment with
            recomputation in backward (rows in pinned host memory on accelerators).
        segment_size: valid positions per segment when offloading.

    Example::

        >>> loss_fn = SampledSoftmaxLoss(0.05, expansion=2)
        >>> q = F.normalize(torch.randn(6, 8), dim=-1)
        >>> loss = loss_fn(q, q, torch.arange(6), torch.randn(6, 4, 8),
        ...                torch.randint(0, 50, (6, 4)))
    """

    def __init__(
        self,
        temperature: float,
        *,
        expansion: int = 1,
        negative_dtype: str = "float32",
        offload_negatives: bool = False,
        segment_size: int = 256,
    ) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if expansion < 1:
            raise ValueError(f"expansion must be >= 1, got {expansion}")
        if segment_size < 1:
            raise ValueError(f"segment_size must be >= 1, got {segment_size}")
        self.temperature = temperature
        self.expansion = expansion
        # None: keep the rows' own dtype (fp32 training, fp64 in references).
        dtype = dtype_named(negative_dtype)
        self.storage_dtype = None if dtype == torch.float32 else dtype
        self.offload_negatives = offload_negatives
        self.segment_size = segment_size

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
            queries: (T, D) x float32 normalised encoder outputs.
            positives: (T, D) x float32 normalised positive item embeddings.
            positive_ids: (T,) x int64.
            negatives: (T, R, D) per-token or (R, D) shared negative embeddings,
                raw lookup rows (they are normalised here; normalised input is
                left unchanged).
            negative_ids: (T, R) or (R,) x int64, matching ``negatives``.

        Returns:
            () scalar loss.
        """
        _check_shapes(queries, positives, positive_ids, negatives, negative_ids)
        if queries.shape[0] == 0:
            # Keeps both inputs in the graph so backward yields zero gradients.
            return (queries.sum() + negatives.sum()) * 0.0

        positive_logit = (queries * positives).sum(-1, keepdim=True)
        if negatives.dim() == 2:
            negative_logits, candidate_ids = self._shared_logits(
                queries, negatives, negative_ids
            )
        else:
            negative_logits, candidate_ids = self._per_token_logits(
                queries, negatives, negative_ids
            )
        accidental = positive_ids[:, None] == candidate_ids
        negative_logits = negative_logits.masked_fill(accidental, float("-inf"))
        logits = torch.cat([positive_logit, negative_logits], dim=-1) / self.temperature
        # The positive sits in column 0.
        return -F.log_softmax(logits, dim=-1)[:, 0].mean()

    def _shared_logits(self, queries, negatives, negative_ids):
        unit = F.normalize(self._round(negatives), dim=-1, eps=_EPS)
        return queries @ unit.t(), negative_ids[None, :]

    def _round(self, negatives: torch.Tensor) -> torch.Tensor:
        if self.storage_dtype is None:
            return negatives
        return round_negatives(negatives, self.storage_dtype)

    def _per_token_logits(self, queries, negatives, negative_ids):
        num_tokens = queries.shape[0]
        plan = None
        if self.expansion > 1:
            plan = build_sharing_plan(num_tokens, self.expansion, queries.device)
            paired_queries = queries[plan.users]
        else:
            paired_queries = queries[:, None, :]

        if self.offload_negatives:
            logits = segmented_negative_logits(
                paired_queries,
                negatives,
                storage_dtype=self.storage_dtype or negatives.dtype,
                segment_size=self.segment_size,
                eps=_EPS,
            )
        else:
            unit = F.normalize(self._round(negatives), dim=-1, eps=_EPS)
            logits = torch.bmm(unit, paired_queries.transpose(1, 2))

        if plan is None:
            return logits[..., 0], negative_ids
        borrowed_ids = negative_ids[plan.lenders].reshape(num_tokens, -1)
        return gather_borrowed(logits, plan), borrowed_ids
