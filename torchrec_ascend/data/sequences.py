"""In-memory container for per-user chronological interaction sequences."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)


@dataclass
class SequenceDataset:
    """Chronological item sequences, one per user.

    Users are addressed by their *user index* ``u`` in ``range(num_users)``, the
    position in ``user_ids`` / ``item_ids``; ``user_ids[u]`` is only a label.

    Attributes:
        name: Short dataset name, e.g. ``"beauty"``.
        num_items: Item ids are ``1..num_items``; id 0 is reserved (padding or
            "no item") and never appears in ``item_ids``.
        user_ids: (U,) x int64 user id of each user index.
        item_ids: U arrays, each (n_u,) x int64, oldest interaction first.
        timestamps: ``None`` when the source has no times, otherwise U arrays
            shaped like ``item_ids``, int64 seconds, non-decreasing per user.
        original_item_ids: ``None`` when item ids are the source's ids, otherwise
            (num_items,) x int64 where entry ``i - 1`` is the source id of item
            ``i``.
        original_user_ids: ``None`` when ``user_ids`` are the source's ids,
            otherwise (U,) x int64 source id of each user index.
    """

    name: str
    num_items: int
    user_ids: np.ndarray
    item_ids: list[np.ndarray]
    timestamps: list[np.ndarray] | None = None
    original_item_ids: np.ndarray | None = None
    original_user_ids: np.ndarray | None = None

    @property
    def num_users(self) -> int:
        """Number of users (sequences)."""
        return len(self.item_ids)

    @property
    def num_interactions(self) -> int:
        """Total number of items over all sequences."""
        return int(sum(len(s) for s in self.item_ids))

    @property
    def has_timestamps(self) -> bool:
        """Whether per-interaction timestamps are available."""
        return self.timestamps is not None

    def lengths(self) -> np.ndarray:
        """Sequence length of every user.

        Returns:
            (U,) x int64 number of interactions per user index.
        """
        return np.fromiter(
            (len(s) for s in self.item_ids), dtype=np.int64, count=self.num_users
        )

    def validate(self) -> SequenceDataset:
        """Checks shapes, dtypes, id ranges and time order.

        Returns:
            ``self``, so that loaders can ``return dataset.validate()``.

        Raises:
            ValueError: If any invariant documented on the class does not hold.
        """
        if self.num_items < 1:
            raise ValueError(
                f"{self.name}: num_items must be >= 1, got {self.num_items}"
            )
        users = self.user_ids
        if not isinstance(users, np.ndarray) or users.ndim != 1:
            raise ValueError(f"{self.name}: user_ids must be a 1-D numpy array")
        if users.dtype != np.int64:
            raise ValueError(f"{self.name}: user_ids must be int64, got {users.dtype}")
        if len(users) != self.num_users:
            raise ValueError(
                f"{self.name}: {len(users)} user_ids but {self.num_users} sequences"
            )
        if len(np.unique(users)) != len(users):
            raise ValueError(f"{self.name}: user_ids contain duplicates")
        if self.timestamps is not None and len(self.timestamps) != self.num_users:
            raise ValueError(
                f"{self.name}: {len(self.timestamps)} timestamp arrays but "
                f"{self.num_users} sequences"
            )
        for u, items in enumerate(self.item_ids):
            self._validate_user(u, items)
        for field in ("original_item_ids", "original_user_ids"):
            self._validate_mapping(field)
        return self

    def _validate_user(self, u: int, items: np.ndarray) -> None:
        label = f"{self.name}: user index {u} (id {self.user_ids[u]})"
        if not isinstance(items, np.ndarray) or items.ndim != 1:
            raise ValueError(f"{label}: item ids must be a 1-D numpy array")
        if items.dtype != np.int64:
            raise ValueError(f"{label}: item ids must be int64, got {items.dtype}")
        if len(items) == 0:
            raise ValueError(f"{label}: empty sequence")
        low, high = int(items.min()), int(items.max())
        if low < 1 or high > self.num_items:
            raise ValueError(
                f"{label}: item ids must lie in 1..{self.num_items}, "
                f"found range {low}..{high}"
            )
        if self.timestamps is None:
            return
        times = self.timestamps[u]
        if not isinstance(times, np.ndarray) or times.shape != items.shape:
            raise ValueError(f"{label}: timestamps must match the item ids' shape")
        if times.dtype != np.int64:
            raise ValueError(f"{label}: timestamps must be int64, got {times.dtype}")
        if len(times) > 1 and bool(np.any(np.diff(times) < 0)):
            raise ValueError(f"{label}: timestamps are not in chronological order")

    def _validate_mapping(self, field: str) -> None:
        mapping = getattr(self, field)
        if mapping is None:
            return
        expected = self.num_items if field == "original_item_ids" else self.num_users
        if not isinstance(mapping, np.ndarray) or mapping.shape != (expected,):
            raise ValueError(f"{self.name}: {field} must have shape ({expected},)")
        if len(np.unique(mapping)) != expected:
            raise ValueError(f"{self.name}: {field} is not one-to-one")

    def summary(self) -> str:
        """One-line human-readable description, for logs."""
        lengths = self.lengths()
        median = float(np.median(lengths)) if len(lengths) else 0.0
        return (
            f"{self.name}: {self.num_users} users, {self.num_items} items, "
            f"{self.num_interactions} interactions, median length {median:g}, "
            f"timestamps={'yes' if self.has_timestamps else 'no'}"
        )
