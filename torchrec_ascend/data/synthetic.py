"""Synthetic data shaped like real logs, for benchmarks and tests."""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta, timezone
from os import PathLike
from pathlib import Path

import numpy as np

from torchrec_ascend.data.kuairand import KUAIRAND_LOG_COLUMNS
from torchrec_ascend.data.sequences import SequenceDataset

logger = logging.getLogger(__name__)

# KuaiRand logs are stamped in Beijing time.
_KUAIRAND_TZ = timezone(timedelta(hours=8))


def kuairand_like_lengths(
    num_users: int,
    cap: int | None,
    seed: int,
    median: float = 8591,
    max_len: int = 228000,
    mean: float = 11796,
    min_len: int = 100,
) -> np.ndarray:
    """Samples heavy-tailed sequence lengths resembling KuaiRand-27K users.

    Lengths are log-normal with median ``median`` and mean ``mean`` (so
    ``sigma = sqrt(2 ln(mean / median))``, about 0.80 with the defaults, which
    also puts the expected maximum over 27K users near 25 times the median, as
    in KuaiRand-27K), rounded, clipped to ``[min_len, max_len]`` and finally
    capped at ``cap``.

    Args:
        num_users: Number of lengths to draw.
        cap: Largest length kept (e.g. the model's 2048 or 4096), or ``None``.
        seed: Seed of the numpy generator.
        median: Median before clipping.
        max_len: Largest length before capping.
        mean: Mean before clipping; must exceed ``median``.
        min_len: Smallest length.

    Returns:
        (num_users,) x int64 lengths.
    """
    if not 0 < median < mean:
        raise ValueError(f"need 0 < median < mean, got {median} and {mean}")
    if not 1 <= min_len <= max_len:
        raise ValueError(f"need 1 <= min_len <= max_len, got {min_len}, {max_len}")
    sigma = math.sqrt(2.0 * math.log(mean / median))
    rng = np.random.default_rng(seed)
    raw = rng.lognormal(mean=math.log(median), sigma=sigma, size=num_users)
    lengths = np.clip(np.rint(raw), min_len, max_len).astype(np.int64)
    if cap is not None:
        if cap < 1:
            raise ValueError(f"cap must be >= 1, got {cap}")
        lengths = np.minimum(lengths, cap)
    return lengths


def synthetic_sequence_dataset(
    num_users: int,
    num_items: int,
    lengths: int | np.ndarray,
    seed: int,
    with_timestamps: bool = True,
    name: str = "synthetic",
    zipf_exponent: float = 1.0,
) -> SequenceDataset:
    """Generates random user sequences with a skewed item popularity.

    Item popularity follows ``1 / rank ** zipf_exponent`` over a random
    permutation of the ids, so popular items are spread over the id range. Each
    user's timestamps start at a random second of 2020 and grow by 1 second to
    2 hours per interaction (strictly increasing).

    Args:
        num_users: U, number of users (user ids ``1..U``).
        num_items: Item ids are ``1..num_items``.
        lengths: One length for all users, or (U,) x int64 lengths, all >= 1.
        seed: Seed of the numpy generator.
        with_timestamps: Whether to generate timestamps.
        name: Dataset name.
        zipf_exponent: Popularity skew; 0 is uniform.

    Returns:
        A validated SequenceDataset.
    """
    if num_items < 1:
        raise ValueError(f"num_items must be >= 1, got {num_items}")
    lengths = np.broadcast_to(np.asarray(lengths, dtype=np.int64), (num_users,))
    if num_users and int(lengths.min()) < 1:
        raise ValueError("every sequence length must be >= 1")
    rng = np.random.default_rng(seed)
    total = int(lengths.sum())
    weights = 1.0 / np.arange(1, num_items + 1, dtype=np.float64) ** zipf_exponent
    ranks = rng.choice(num_items, size=total, p=weights / weights.sum())
    id_of_rank = rng.permutation(num_items).astype(np.int64) + 1
    cuts = np.cumsum(lengths)[:-1]
    items = np.split(id_of_rank[ranks], cuts) if num_users else []
    timestamps = None
    if with_timestamps and num_users:
        starts = rng.integers(1_577_836_800, 1_609_459_200, size=num_users)
        gaps = rng.integers(1, 7201, size=total, dtype=np.int64)
        first = np.concatenate([[0], cuts])
        gaps[first] = 0
        elapsed = np.cumsum(gaps)
        times = elapsed - np.repeat(elapsed[first] - starts, lengths)
        timestamps = np.split(times.astype(np.int64), cuts)
    elif with_timestamps:
        timestamps = []
    dataset = SequenceDataset(
        name=name,
        num_items=num_items,
        user_ids=np.arange(1, num_users + 1, dtype=np.int64),
        item_ids=items,
        timestamps=timestamps,
    )
    logger.debug("generated %s", dataset.summary())
    return dataset.validate()


def write_kuairand_log(
    path: str | PathLike[str], rows: Iterable[Mapping[str, int]]
) -> Path:
    """Writes rows as a CSV file in the KuaiRand log layout.

    Each row needs ``user_id``, ``video_id`` and ``time_ms``; ``date`` and
    ``hourmin`` default to the Beijing-time date (``YYYYMMDD``) and hour-minute
    (``HHMM``) of ``time_ms``; every other column defaults to 0.

    Args:
        path: File to create (overwritten if present).
        rows: Mappings from column name to integer value.

    Returns:
        ``path`` as a Path.

    Raises:
        ValueError: If a row lacks a required column or has an unknown one.
    """
    path = Path(path)
    known = set(KUAIRAND_LOG_COLUMNS)
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(KUAIRAND_LOG_COLUMNS)
        for k, row in enumerate(rows):
            unknown = set(row) - known
            missing = {"user_id", "video_id", "time_ms"} - set(row)
            if unknown or missing:
                raise ValueError(
                    f"row {k}: unknown columns {sorted(unknown)}, "
                    f"missing columns {sorted(missing)}"
                )
            when = datetime.fromtimestamp(row["time_ms"] / 1000, tz=_KUAIRAND_TZ)
            full = {c: 0 for c in KUAIRAND_LOG_COLUMNS}
            full["date"] = int(when.strftime("%Y%m%d"))
            full["hourmin"] = int(when.strftime("%H%M"))
            full.update(row)
            writer.writerow([full[c] for c in KUAIRAND_LOG_COLUMNS])
    return path
