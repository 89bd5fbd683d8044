"""PyTorch datasets, collate functions and data loaders over a split."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from torchrec_ascend.data.batches import ITEM_KEY, SequenceBatch
from torchrec_ascend.data.examples import (
    EvalExample,
    TrainExample,
    make_eval_example,
    make_train_example,
)
from torchrec_ascend.data.splits import LeaveOneOutSplit

logger = logging.getLogger(__name__)


class TrainSequences(Dataset):
    """One training example per user whose training sequence has >= 2 items.

    Args:
        split: The split whose ``train`` sequences are used.
        max_seq_len: Longest input sequence; older items are dropped.
    """

    def __init__(self, split: LeaveOneOutSplit, max_seq_len: int) -> None:
        if max_seq_len < 1:
            raise ValueError(f"max_seq_len must be >= 1, got {max_seq_len}")
        self.split = split
        self.max_seq_len = max_seq_len
        lengths = np.fromiter((len(s) for s in split.train), dtype=np.int64)
        # (N,) x int64 user index of each example.
        self.user_index = np.flatnonzero(lengths >= 2).astype(np.int64)
        skipped = split.num_users - len(self.user_index)
        if skipped:
            logger.info(
                "%s: %d of %d users have fewer than 2 training items and get no "
                "training example",
                split.name,
                skipped,
                split.num_users,
            )

    def __len__(self) -> int:
        return len(self.user_index)

    def __getitem__(self, index: int) -> TrainExample:
        u = int(self.user_index[index])
        times = self.split.train_timestamps
        example = make_train_example(
            u,
            self.split.train[u],
            None if times is None else times[u],
            self.max_seq_len,
        )
        assert example is not None  # only users with >= 2 items are indexed
        return example


class EvalSequences(Dataset):
    """One evaluation example per user of ``split.valid`` or ``split.test``.

    Args:
        split: The split.
        which: ``"valid"`` or ``"test"``.
        max_seq_len: Longest history kept; older items are dropped.
    """

    def __init__(self, split: LeaveOneOutSplit, which: str, max_seq_len: int) -> None:
        if max_seq_len < 1:
            raise ValueError(f"max_seq_len must be >= 1, got {max_seq_len}")
        self.split = split
        self.which = which
        self.eval_set = split.eval_set(which)
        self.max_seq_len = max_seq_len

    def __len__(self) -> int:
        return len(self.eval_set)

    def __getitem__(self, index: int) -> EvalExample:
        es = self.eval_set
        with_times = es.history_timestamps is not None
        return make_eval_example(
            int(es.user_index[index]),
            es.histories[index],
            es.history_timestamps[index] if with_times else None,
            int(es.targets[index]),
            int(es.target_timestamps[index]) if with_times else None,
            self.max_seq_len,
        )


def collate_train(examples: Sequence[TrainExample]) -> SequenceBatch:
    """Concatenates training examples into a SequenceBatch (targets (L,)).

    Args:
        examples: B >= 1 examples, all with or all without timestamps.

    Returns:
        The batch.
    """
    _check_not_empty(examples)
    return _collate(examples, np.concatenate([e.targets for e in examples]))


def collate_eval(examples: Sequence[EvalExample]) -> SequenceBatch:
    """Concatenates evaluation examples into a SequenceBatch (targets (B,)).

    Args:
        examples: B >= 1 examples, all with or all without timestamps.

    Returns:
        The batch.
    """
    _check_not_empty(examples)
    targets = np.fromiter((e.target for e in examples), np.int64, len(examples))
    return _collate(examples, targets)


def _check_not_empty(examples: Sequence[object]) -> None:
    if len(examples) == 0:
        raise ValueError("cannot collate an empty list of examples")


def _collate(
    examples: Sequence[TrainExample] | Sequence[EvalExample], targets: np.ndarray
) -> SequenceBatch:
    values = np.concatenate([e.items for e in examples])
    lengths = np.fromiter((len(e.items) for e in examples), np.int64, len(examples))
    users = np.fromiter((e.user_index for e in examples), np.int64, len(examples))
    timestamps = query = None
    if examples[0].timestamps is not None:
        timestamps = torch.from_numpy(np.concatenate([e.timestamps for e in examples]))
        query = torch.from_numpy(np.concatenate([e.query_timestamps for e in examples]))
    features = KeyedJaggedTensor.from_lengths_sync(
        keys=[ITEM_KEY],
        values=torch.from_numpy(values),
        lengths=torch.from_numpy(lengths),
    )
    return SequenceBatch(
        features=features,
        timestamps=timestamps,
        query_timestamps=query,
        targets=torch.from_numpy(targets),
        user_index=torch.from_numpy(users),
    )


def make_train_loader(
    split: LeaveOneOutSplit,
    max_seq_len: int,
    batch_size: int,
    seed: int,
    epoch: int,
    shuffle: bool = True,
    drop_last: bool = False,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """A loader of training SequenceBatches, one example per eligible user.

    The shuffling order comes from a ``torch.Generator`` seeded with
    ``seed + epoch``, so it is the same on every run and differs between epochs.

    Args:
        split: The split to train on.
        max_seq_len: Longest input sequence.
        batch_size: Sequences per batch.
        seed: Base seed of the run.
        epoch: Epoch number, added to ``seed``.
        shuffle: Whether to shuffle users.
        drop_last: Whether to drop a last, smaller batch.
        num_workers: DataLoader worker processes.
        pin_memory: Whether batches are placed in pinned host memory.

    Returns:
        A DataLoader yielding SequenceBatch.

    Raises:
        ValueError: If no user has a training example.
    """
    dataset = TrainSequences(split, max_seq_len)
    if len(dataset) == 0:
        raise ValueError(f"{split.name}: no user has >= 2 training items")
    generator = torch.Generator()
    generator.manual_seed(seed + epoch)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=drop_last,
        collate_fn=collate_train,
        generator=generator,
        num_workers=num_workers,
        pin_memory=pin_memory,
    )


def make_eval_loader(
    split: LeaveOneOutSplit,
    which: str,
    max_seq_len: int,
    batch_size: int,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """A loader of evaluation SequenceBatches in user-index order, none dropped.

    Args:
        split: The split to evaluate.
        which: ``"valid"`` or ``"test"``.
        max_seq_len: Longest history kept.
        batch_size: Sequences per batch.
        num_workers: DataLoader worker processes.
        pin_memory: Whether batches are placed in pinned host memory.

    Returns:
        A DataLoader yielding SequenceBatch.
    """
    return DataLoader(
        EvalSequences(split, which, max_seq_len),
        batch_size=batch_size,
        shuffle=False,
        drop_last=False,
        collate_fn=collate_eval,
        num_workers=num_workers,
        pin_memory=pin_memory,
    )
