"""Leave-one-out train / validation / test split of per-user sequences."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from torchrec_ascend.data.sequences import SequenceDataset

logger = logging.getLogger(__name__)

MIN_EVAL_LENGTH = 3
"""Users need at least this many items to get a validation and a test example."""


@dataclass
class EvalSet:
    """Next-item examples for evaluation, one per user that has one.

    Attributes:
        user_index: (E,) x int64 user index (position in the SequenceDataset) of
            each example, increasing.
        histories: E arrays (h_e,) x int64, the items seen before the target,
            oldest first, never empty. Evaluation masks these items out of the
            ranking for that user.
        history_timestamps: E arrays shaped like ``histories`` (int64 seconds),
            or ``None`` without timestamps.
        targets: (E,) x int64 item to predict.
        target_timestamps: (E,) x int64 time of the target, or ``None``.
    """

    user_index: np.ndarray
    histories: list[np.ndarray]
    history_timestamps: list[np.ndarray] | None
    targets: np.ndarray
    target_timestamps: np.ndarray | None

    def __len__(self) -> int:
        return len(self.user_index)


@dataclass
class LeaveOneOutSplit:
    """Leave-one-out split: the last item tests, the one before validates.

    For a user with items ``s`` (length n >= 3): training uses ``s[:-2]``,
    validation predicts ``s[-2]`` from ``s[:-2]`` and test predicts ``s[-1]``
    from ``s[:-1]``. Users with n < 3 train on their whole sequence and have no
    validation or test example.

    Attributes:
        name: Name of the source dataset.
        num_items: Item ids are ``1..num_items``.
        train: U arrays, the training sequence of every user index (n_u >= 1).
        train_timestamps: U arrays shaped like ``train``, or ``None``.
        valid: Validation examples.
        test: Test examples, for the same users as ``valid``.
        num_short_users: Users with fewer than 3 items (train only).
    """

    name: str
    num_items: int
    train: list[np.ndarray]
    train_timestamps: list[np.ndarray] | None
    valid: EvalSet
    test: EvalSet
    num_short_users: int

    @property
    def num_users(self) -> int:
        """Number of users (training sequences)."""
        return len(self.train)

    @property
    def has_timestamps(self) -> bool:
        """Whether timestamps are available."""
        return self.train_timestamps is not None

    def eval_set(self, which: str) -> EvalSet:
        """Returns ``valid`` or ``test`` by name.

        Raises:
            ValueError: If ``which`` is neither ``"valid"`` nor ``"test"``.
        """
        if which == "valid":
            return self.valid
        if which == "test":
            return self.test
        raise ValueError(f"which must be 'valid' or 'test', got {which!r}")


def leave_one_out(dataset: SequenceDataset) -> LeaveOneOutSplit:
    """Splits every user's sequence leave-one-out.

    Arrays in the result are views into the dataset's arrays, not copies.

    Args:
        dataset: The sequences to split.

    Returns:
        The LeaveOneOutSplit described on that class.
    """
    items = dataset.item_ids
    times = dataset.timestamps
    lengths = dataset.lengths()
    long_users = np.flatnonzero(lengths >= MIN_EVAL_LENGTH).astype(np.int64)
    num_short = dataset.num_users - len(long_users)
    if num_short:
        logger.info(
            "%s: %d of %d users have fewer than %d items and are used for "
            "training only (no validation/test example)",
            dataset.name,
            num_short,
            dataset.num_users,
            MIN_EVAL_LENGTH,
        )
    train = [s[:-2] if len(s) >= MIN_EVAL_LENGTH else s for s in items]
    train_times = None
    if times is not None:
        train_times = [t[:-2] if len(t) >= MIN_EVAL_LENGTH else t for t in times]
    return LeaveOneOutSplit(
        name=dataset.name,
        num_items=dataset.num_items,
        train=train,
        train_timestamps=train_times,
        valid=_eval_set(items, times, long_users, held_out=2),
        test=_eval_set(items, times, long_users, held_out=1),
        num_short_users=num_short,
    )


def _eval_set(
    items: list[np.ndarray],
    times: list[np.ndarray] | None,
    users: np.ndarray,
    held_out: int,
) -> EvalSet:
    """Targets are item ``-held_out`` of each user; history is what precedes it."""
    histories = [items[u][:-held_out] for u in users]
    targets = np.fromiter(
        (items[u][-held_out] for u in users), dtype=np.int64, count=len(users)
    )
    history_times = None
    target_times = None
    if times is not None:
        history_times = [times[u][:-held_out] for u in users]
        target_times = np.fromiter(
            (times[u][-held_out] for u in users), dtype=np.int64, count=len(users)
        )
    return EvalSet(
        user_index=users,
        histories=histories,
        history_timestamps=history_times,
        targets=targets,
        target_timestamps=target_times,
    )
