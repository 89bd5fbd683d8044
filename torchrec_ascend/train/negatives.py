"""Uniform negative sampling of item ids on the host, optionally in the background."""

from collections.abc import Iterable

import torch

from torchrec_ascend.negatives import BackgroundNegativeSampler, sample_valid_positions


class UniformNegativeSampler:
    """Draws negative item ids uniformly from 1..num_items.

    Args:
        num_items: item ids are 1..num_items.
        num_negatives: R, negatives per token (or per batch when ``shared``).
        shared: one (R,) set for the whole batch instead of (T, R).
        seed: seeds the private generator, so runs repeat exactly.
    """

    def __init__(
        self, num_items: int, num_negatives: int, shared: bool, seed: int
    ) -> None:
        if num_items < 1 or num_negatives < 1:
            raise ValueError(
                "need num_items >= 1 and num_negatives >= 1, "
                f"got {num_items}, {num_negatives}"
            )
        self.num_items = num_items
        self.num_negatives = num_negatives
        self.shared = shared
        self.generator = torch.Generator().manual_seed(seed)

    def sample(self, num_tokens: int) -> torch.Tensor:
        """(T, R) or, when shared, (R,) x int64 ids in [1, num_items]."""
        shape = (
            (self.num_negatives,) if self.shared else (num_tokens, self.num_negatives)
        )
        return torch.randint(1, self.num_items + 1, shape, generator=self.generator)

    def sample_batch(self, batch) -> torch.Tensor:
        """Ids for one ``SequenceBatch``: (R,) when shared, else one row per valid
        (jagged) position, (sum(lengths), R)."""
        if self.shared:
            return self.sample(0)
        return sample_valid_positions(
            batch.lengths, self.num_negatives, self.num_items, self.generator
        )

    def in_background(self, batches: Iterable, depth: int = 2):
        """Iterates ``(batch, negative_ids)`` with the ids drawn by a worker thread
        ``depth`` batches ahead (see :class:`BackgroundNegativeSampler`)."""
        return BackgroundNegativeSampler(batches, self.sample_batch, depth=depth)
