"""Private helpers that turn flat interaction logs into per-user sequences."""

from __future__ import annotations

import numpy as np


def _remap_contiguous(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Renumbers ids to ``1..n`` in increasing order of the original id.

    Args:
        ids: (N,) x int64 original ids, any values.

    Returns:
        ``(new_ids, originals)``: (N,) x int64 ids in ``1..n`` and (n,) x int64
        sorted distinct originals, so that ``originals[new_ids - 1] == ids``.
    """
    originals, inverse = np.unique(ids, return_inverse=True)
    return inverse.reshape(-1).astype(np.int64) + 1, originals.astype(np.int64)


def _group_by_user(
    users: np.ndarray, items: np.ndarray, times: np.ndarray | None = None
) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray] | None]:
    """Groups a flat log into per-user sequences ordered by time.

    Within a user, rows are ordered by ``times`` and ties keep their order in the
    input (stable sort); without ``times`` the input order is kept.

    Args:
        users: (N,) x int64 user id of each row.
        items: (N,) x int64 item id of each row.
        times: (N,) x int64 time of each row, or ``None``.

    Returns:
        ``(user_ids, item_seqs, time_seqs)``: (U,) x int64 distinct user ids in
        increasing order; U arrays (n_u,) x int64 of items; U arrays of times or
        ``None``. The per-user arrays are views into one contiguous array.
    """
    if len(users) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, [], (None if times is None else [])
    if times is None:
        order = np.argsort(users, kind="stable")
    else:
        order = np.argsort(times, kind="stable")
        order = order[np.argsort(users[order], kind="stable")]
    sorted_users = users[order]
    user_ids, starts = np.unique(sorted_users, return_index=True)
    cuts = starts[1:]
    item_seqs = np.split(np.ascontiguousarray(items[order], dtype=np.int64), cuts)
    time_seqs = None
    if times is not None:
        time_seqs = np.split(np.ascontiguousarray(times[order], dtype=np.int64), cuts)
    return user_ids.astype(np.int64), item_seqs, time_seqs
