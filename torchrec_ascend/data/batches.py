"""The jagged (unpadded) batch of item sequences fed to the model."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

ITEM_KEY = "item"
"""The only key of ``SequenceBatch.features``."""


@dataclass
class SequenceBatch:
    """B user sequences concatenated without padding (L tokens in total).

    Training batches predict the next item at every position; evaluation
    batches predict one item after the last position of each sequence.

    Attributes:
        features: One key ``"item"``; values (L,) x int64 input item ids,
            lengths (B,) x int64.
        timestamps: (L,) x int64 time of each input item, aligned with
            ``features.values()``, or ``None`` when the dataset has no times.
        query_timestamps: (L,) x int64 time of the item each position must
            predict (its target's time), or ``None``.
        targets: (L,) x int64 next item at every position in training batches;
            (B,) x int64 one target per sequence in evaluation batches.
        user_index: (B,) x int64 user index of each sequence.
    """

    features: KeyedJaggedTensor
    timestamps: torch.Tensor | None
    query_timestamps: torch.Tensor | None
    targets: torch.Tensor
    user_index: torch.Tensor

    @property
    def lengths(self) -> torch.Tensor:
        """(B,) x int64 number of tokens of each sequence."""
        return self.features.lengths()

    @property
    def offsets(self) -> torch.Tensor:
        """(B+1,) x int64 start of each sequence in the values, then L."""
        return self.features.offsets()

    @property
    def values(self) -> torch.Tensor:
        """(L,) x int64 input item ids."""
        return self.features.values()

    @property
    def batch_size(self) -> int:
        """B, the number of sequences."""
        return int(self.user_index.numel())

    @property
    def num_tokens(self) -> int:
        """L, the number of input items over all sequences."""
        return int(self.features.values().numel())

    def to(
        self, device: torch.device | str, non_blocking: bool = False
    ) -> SequenceBatch:
        """Copies every tensor to ``device``.

        Args:
            device: Target device.
            non_blocking: Passed to the tensor copies; only asynchronous from
                pinned host memory.

        Returns:
            A new SequenceBatch on ``device`` (``self`` is unchanged).
        """

        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device, non_blocking=non_blocking)

        return SequenceBatch(
            features=self.features.to(device, non_blocking=non_blocking),
            timestamps=move(self.timestamps),
            query_timestamps=move(self.query_timestamps),
            targets=self.targets.to(device, non_blocking=non_blocking),
            user_index=self.user_index.to(device, non_blocking=non_blocking),
        )

    def pin_memory(self) -> SequenceBatch:
        """Returns a copy in pinned host memory (used by ``DataLoader``)."""

        def pin(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.pin_memory()

        return SequenceBatch(
            features=KeyedJaggedTensor.from_lengths_sync(
                keys=self.features.keys(),
                values=self.features.values().pin_memory(),
                lengths=self.features.lengths().pin_memory(),
            ),
            timestamps=pin(self.timestamps),
            query_timestamps=pin(self.query_timestamps),
            targets=self.targets.pin_memory(),
            user_index=self.user_index.pin_memory(),
        )
