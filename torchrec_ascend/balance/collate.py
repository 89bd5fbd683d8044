"""Turning a rank's planned sample ids into a SequenceBatch, empty ones included."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from torchrec_ascend.balance.prefetch import Prefetcher
from torchrec_ascend.balance.sampler import BalancedSampler
from torchrec_ascend.data import ITEM_KEY, SequenceBatch, TrainSequences, collate_train

logger = logging.getLogger(__name__)


def empty_batch(with_timestamps: bool) -> SequenceBatch:
    """A batch of B = 0 sequences, for a rank with nothing to train at a step.

    The rank still runs the step (its loss is 0 and weighs 0 in the gradient mean),
    so every rank issues the same collectives and none can hang.
    """
    none = torch.zeros(0, dtype=torch.int64)
    features = KeyedJaggedTensor.from_lengths_sync(
        keys=[ITEM_KEY], values=none.clone(), lengths=none.clone()
    )
    times = none.clone() if with_timestamps else None
    return SequenceBatch(
        features=features,
        timestamps=times,
        query_timestamps=None if times is None else none.clone(),
        targets=none.clone(),
        user_index=none.clone(),
    )


def train_lengths(dataset: TrainSequences) -> np.ndarray:
    """(N,) x int64 input length of every training example of ``dataset``."""
    full = np.fromiter(
        (len(dataset.split.train[u]) for u in dataset.user_index),
        dtype=np.int64,
        count=len(dataset),
    )
    # An example of m items has m - 1 inputs, cut to the newest max_seq_len.
    return np.minimum(full - 1, dataset.max_seq_len)


class BalancedTrainBatches:
    """One rank's training batches of an epoch, planned and collated ahead of time.

    Iterating yields exactly ``len(self)`` SequenceBatches (the same count on every
    rank); a batch may be empty. Planning (exchange, partition) and collation of step
    i+1 run in a background thread while step i trains.

    Args:
        dataset: The training examples.
        sampler: This rank's :class:`BalancedSampler` over ``train_lengths(dataset)``.
        prefetch: Steps planned ahead; 0 plans in the training thread.

    Attributes:
        prefetcher: The last epoch's :class:`Prefetcher` (timings), or ``None``.
    """

    def __init__(
        self, dataset: TrainSequences, sampler: BalancedSampler, prefetch: int = 1
    ) -> None:
        if sampler.num_samples != len(dataset):
            raise ValueError(
                f"sampler covers {sampler.num_samples} samples but the dataset has "
                f"{len(dataset)}"
            )
        self.dataset = dataset
        self.sampler = sampler
        self.prefetch = prefetch
        self.with_timestamps = dataset.split.has_timestamps
        self.prefetcher: Prefetcher | None = None

    def __len__(self) -> int:
        return len(self.sampler)

    def _collated(self) -> Iterator[SequenceBatch]:
        for ids in self.sampler:
            if len(ids) == 0:
                yield empty_batch(self.with_timestamps)
            else:
                yield collate_train([self.dataset[int(i)] for i in ids])

    def __iter__(self) -> Iterator[SequenceBatch]:
        if self.prefetch == 0:
            yield from self._collated()
            return
        self.prefetcher = Prefetcher(self._collated(), depth=self.prefetch)
        try:
            yield from self.prefetcher
        finally:
            self.prefetcher.close()
