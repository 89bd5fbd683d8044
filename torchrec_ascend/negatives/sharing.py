"""Intra-batch logit sharing: each token also scores other tokens' negatives.

With expansion factor k, token t keeps its own R negatives and borrows the R
negatives of k - 1 other tokens, so it sees k R negatives for R lookups. Which
tokens lend to which is a token-level shuffle redrawn every step: tokens are put in
a random cyclic order and each borrows from the next k - 1 tokens in that order, so
neighbouring positions of one sequence (whose negatives would be scored against
near-identical queries) are not systematically paired.

All k R logits come from one batched matmul: position u's negatives are scored
against the k queries that use them, ``(T, R, D) x (T, D, k)``, instead of gathering
other tokens' (R, D) negatives per borrower (which would copy the largest tensor).
"""

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SharingPlan:
    """Who uses whose negatives in one step.

    Attributes:
        users: (T, k) x int64; ``users[u, m]`` is the token scoring position u's
            negatives in slot m (slot 0 is u itself).
        lenders: (T, k) x int64; ``lenders[t, m]`` is the position whose negatives
            token t borrows in slot m (slot 0 is t itself); ``users[lenders[t, m],
            m] == t``.
    """

    users: torch.Tensor
    lenders: torch.Tensor

    @property
    def expansion(self) -> int:
        return int(self.users.shape[1])


def build_sharing_plan(
    num_tokens: int,
    expansion: int,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
) -> SharingPlan:
    """Draws the token-level shuffle of one step.

    Args:
        num_tokens: T, valid target positions in the batch.
        expansion: k >= 1; capped at T so no token borrows from itself.
        device: where the index tensors live.
        generator: RNG of the shuffle (default: torch's global one).

    Returns:
        A :class:`SharingPlan` with k' = min(k, T) slots (k' = 1 when T <= 1).
    """
    if expansion < 1:
        raise ValueError(f"expansion must be >= 1, got {expansion}")
    slots = max(1, min(expansion, num_tokens))
    order = torch.randperm(num_tokens, generator=generator).to(device)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(num_tokens, device=device)
    shifts = torch.arange(slots, device=device)
    if num_tokens == 0:
        empty = torch.zeros(0, slots, dtype=torch.long, device=device)
        return SharingPlan(users=empty, lenders=empty)
    users = order[(rank[:, None] - shifts[None, :]) % num_tokens]
    lenders = order[(rank[:, None] + shifts[None, :]) % num_tokens]
    return SharingPlan(users=users, lenders=lenders)


def gather_borrowed(per_position: torch.Tensor, plan: SharingPlan) -> torch.Tensor:
    """Rearranges per-position, per-slot values into per-token order.

    Args:
        per_position: (T, R, k) values of position u's negatives in slot m
            (logits or ids broadcast over slots).
        plan: the step's sharing plan.

    Returns:
        (T, k R): row t holds slot 0 (its own R negatives) then the R negatives
        borrowed in each slot m = 1..k-1.
    """
    num_tokens, num_negatives, slots = per_position.shape
    slot = torch.arange(slots, device=per_position.device)
    # (T, k, R): token t, slot m -> values of lender position in that slot.
    borrowed = per_position.permute(0, 2, 1)[plan.lenders, slot[None, :]]
    return borrowed.reshape(num_tokens, slots * num_negatives)
