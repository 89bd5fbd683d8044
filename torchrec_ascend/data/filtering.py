"""Iterative k-core filtering of a user-item interaction log."""

from __future__ import annotations

import logging

import numpy as np

logger = logging.getLogger(__name__)


def k_core_mask(users: np.ndarray, items: np.ndarray, min_count: int = 5) -> np.ndarray:
    """Selects the rows of the k-core of an interaction log.

    Rows of users with fewer than ``min_count`` rows, and rows of items with fewer
    than ``min_count`` rows, are removed; removing some can push others under the
    threshold, so this repeats until nothing changes. Repeated (user, item) rows
    each count.

    Args:
        users: (N,) x int64 user id of each row (any non-negative or negative ids).
        items: (N,) x int64 item id of each row.
        min_count: Smallest number of rows a kept user or item must have;
            values <= 1 keep everything.

    Returns:
        (N,) x bool, ``True`` for rows that survive.
    """
    if users.shape != items.shape or users.ndim != 1:
        raise ValueError("users and items must be 1-D arrays of the same length")
    keep = np.ones(len(users), dtype=bool)
    if min_count <= 1 or len(keep) == 0:
        return keep
    _, user_codes = np.unique(users, return_inverse=True)
    _, item_codes = np.unique(items, return_inverse=True)
    user_codes = user_codes.reshape(-1)
    item_codes = item_codes.reshape(-1)
    rounds = 0
    while True:
        rounds += 1
        user_counts = np.bincount(user_codes[keep], minlength=user_codes.max() + 1)
        item_counts = np.bincount(item_codes[keep], minlength=item_codes.max() + 1)
        new_keep = (
            keep
            & (user_counts[user_codes] >= min_count)
            & (item_counts[item_codes] >= min_count)
        )
        if np.array_equal(new_keep, keep):
            break
        keep = new_keep
    logger.debug(
        "%d-core: kept %d of %d rows after %d rounds",
        min_count,
        int(keep.sum()),
        len(keep),
        rounds,
    )
    return keep
