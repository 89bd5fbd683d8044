"""Turning one user's sequence into a model input example (numpy, unbatched)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class TrainExample(NamedTuple):
    """Next-item prediction at every position of one user's recent history.

    Attributes:
        user_index: User index in the dataset.
        items: (n,) x int64 input items, oldest first, 1 <= n <= max_seq_len.
        targets: (n,) x int64 ``targets[i]`` is the item following ``items[i]``.
        timestamps: (n,) x int64 time of each input item, or ``None``.
        query_timestamps: (n,) x int64 time of each target, or ``None``.
    """

    user_index: int
    items: np.ndarray
    targets: np.ndarray
    timestamps: np.ndarray | None
    query_timestamps: np.ndarray | None


class EvalExample(NamedTuple):
    """Prediction of one held-out item from the history preceding it.

    Attributes:
        user_index: User index in the dataset.
        items: (n,) x int64 the last ``n <= max_seq_len`` history items.
        target: The held-out item.
        timestamps: (n,) x int64 time of each history item, or ``None``.
        query_timestamps: (n,) x int64 the history times shifted left by one,
            with the target's time last, or ``None``.
    """

    user_index: int
    items: np.ndarray
    target: int
    timestamps: np.ndarray | None
    query_timestamps: np.ndarray | None


def make_train_example(
    user_index: int,
    items: np.ndarray,
    timestamps: np.ndarray | None,
    max_seq_len: int,
) -> TrainExample | None:
    """Builds the training example of one user.

    Only the most recent ``max_seq_len + 1`` items are used: positions ``0..n-1``
    are inputs and positions ``1..n`` their targets.

    Args:
        user_index: User index in the dataset.
        items: (m,) x int64 the user's training sequence, oldest first.
        timestamps: (m,) x int64 its times, or ``None``.
        max_seq_len: Longest input sequence, >= 1.

    Returns:
        The example, or ``None`` when ``m < 2`` (nothing to predict).
    """
    _check_max_seq_len(max_seq_len)
    if len(items) < 2:
        return None
    window = items[-(max_seq_len + 1) :]
    ts_input = ts_query = None
    if timestamps is not None:
        ts_window = timestamps[-(max_seq_len + 1) :]
        ts_input, ts_query = ts_window[:-1], ts_window[1:]
    return TrainExample(
        user_index=int(user_index),
        items=window[:-1],
        targets=window[1:],
        timestamps=ts_input,
        query_timestamps=ts_query,
    )


def make_eval_example(
    user_index: int,
    history: np.ndarray,
    history_timestamps: np.ndarray | None,
    target: int,
    target_timestamp: int | None,
    max_seq_len: int,
) -> EvalExample:
    """Builds the evaluation example of one user.

    Args:
        user_index: User index in the dataset.
        history: (h,) x int64 items before the target, oldest first, h >= 1.
        history_timestamps: (h,) x int64 their times, or ``None``.
        target: The held-out item.
        target_timestamp: Its time, or ``None`` (only if history times are).
        max_seq_len: Longest input sequence, >= 1.

    Returns:
        The example, with the history cut to its last ``max_seq_len`` items.
    """
    _check_max_seq_len(max_seq_len)
    if len(history) == 0:
        raise ValueError(f"user index {user_index}: empty evaluation history")
    items = history[-max_seq_len:]
    ts_input = ts_query = None
    if history_timestamps is not None:
        if target_timestamp is None:
            raise ValueError("history timestamps given without a target timestamp")
        ts_input = history_timestamps[-max_seq_len:]
        ts_query = np.empty_like(ts_input)
        ts_query[:-1] = ts_input[1:]
        ts_query[-1] = target_timestamp
    return EvalExample(
        user_index=int(user_index),
        items=items,
        target=int(target),
        timestamps=ts_input,
        query_timestamps=ts_query,
    )


def _check_max_seq_len(max_seq_len: int) -> None:
    if max_seq_len < 1:
        raise ValueError(f"max_seq_len must be >= 1, got {max_seq_len}")
