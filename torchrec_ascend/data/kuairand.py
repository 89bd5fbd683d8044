"""Reader for KuaiRand interaction logs (``log_standard_*.csv``, ``log_random_*``)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from os import PathLike
from pathlib import Path

import numpy as np

from torchrec_ascend.data._grouping import _group_by_user, _remap_contiguous
from torchrec_ascend.data._parsing import (
    _INT64_MAX,
    _check_row_width,
    _column_positions,
    _csv_rows,
    _parse_int,
)
from torchrec_ascend.data.errors import DataFormatError
from torchrec_ascend.data.filtering import k_core_mask
from torchrec_ascend.data.sequences import SequenceDataset

logger = logging.getLogger(__name__)

KUAIRAND_LOG_COLUMNS: tuple[str, ...] = (
    "user_id",
    "video_id",
    "date",
    "hourmin",
    "time_ms",
    "is_click",
    "is_like",
    "is_follow",
    "is_comment",
    "is_forward",
    "is_hate",
    "long_view",
    "play_time_ms",
    "duration_ms",
    "profile_stay_time",
    "comment_stay_time",
    "is_profile_enter",
    "is_rand",
    "tab",
)
"""Column names of the KuaiRand log files, in file order."""

_POSITIVE = (
    "is_click",
    "is_like",
    "is_follow",
    "is_comment",
    "is_forward",
    "long_view",
)
_USED = ("user_id", "video_id", "time_ms", *_POSITIVE, "is_hate")

PathArg = str | PathLike[str]


def load_kuairand_logs(
    paths: PathArg | Sequence[PathArg], min_count: int = 5, name: str = "kuairand"
) -> SequenceDataset:
    """Loads KuaiRand log files as chronological positive-interaction sequences.

    A row is kept when it has a positive action (any of ``is_click``,
    ``is_like``, ``is_follow``, ``is_comment``, ``is_forward``, ``long_view``
    non-zero) and ``is_hate`` is zero. Rows of all files are pooled, each user's
    rows are ordered by ``time_ms`` (ties keep file order, files in the order
    given), an iterative ``min_count``-core filter is applied to users and
    videos, and both are renumbered to ``1..n`` in increasing order of their
    KuaiRand id (inverse maps: ``original_user_ids``, ``original_item_ids``).
    Only the columns used are required in the header; others are ignored.

    Args:
        paths: One log file or a sequence of them.
        min_count: Core size: kept users and videos have at least this many
            kept rows.
        name: Dataset name.

    Returns:
        A validated SequenceDataset with timestamps ``time_ms // 1000`` seconds.

    Raises:
        DataFormatError: If a file is missing, unreadable or empty, its header
            lacks a used column, a row has the wrong number of fields, or a used
            field is not a non-negative integer.
        ValueError: If no paths are given or no interaction survives filtering.
    """
    # Limitation: rows are parsed by the csv module into Python lists (about 250k
    # rows/s on one core); fine for KuaiRand-Pure and KuaiRand-1K (minutes), too
    # slow and memory-hungry for the 300M+ rows of KuaiRand-27K, which needs a
    # chunked numpy reader first.
    if isinstance(paths, str | PathLike):
        paths = [paths]
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("load_kuairand_logs needs at least one log file")
    users: list[int] = []
    videos: list[int] = []
    times: list[int] = []
    total = 0
    for path in paths:
        total += _read_log(path, users, videos, times)
    user_arr = np.asarray(users, dtype=np.int64)
    video_arr = np.asarray(videos, dtype=np.int64)
    time_arr = np.asarray(times, dtype=np.int64)
    keep = k_core_mask(user_arr, video_arr, min_count)
    logger.info(
        "KuaiRand %s: %d rows, %d positive, %d left after %d-core",
        ", ".join(str(p) for p in paths),
        total,
        len(user_arr),
        int(keep.sum()),
        min_count,
    )
    if not keep.any():
        raise ValueError(
            f"no interactions left in {', '.join(str(p) for p in paths)} after the "
            f"positive-action filter and the {min_count}-core filter"
        )
    new_users, user_originals = _remap_contiguous(user_arr[keep])
    new_videos, video_originals = _remap_contiguous(video_arr[keep])
    user_ids, item_seqs, time_seqs = _group_by_user(
        new_users, new_videos, time_arr[keep]
    )
    dataset = SequenceDataset(
        name=name,
        num_items=len(video_originals),
        user_ids=user_ids,
        item_ids=item_seqs,
        timestamps=[t // 1000 for t in time_seqs],
        original_item_ids=video_originals,
        original_user_ids=user_originals,
    )
    logger.info("read KuaiRand: %s", dataset.summary())
    return dataset.validate()


def _read_log(path: Path, users: list[int], videos: list[int], times: list[int]) -> int:
    """Appends the positive rows of one file to the lists; returns its row count."""
    rows = _csv_rows(path)
    first = next(rows, None)
    if first is None:
        raise DataFormatError(path, 1, "file is empty (expected a header line)")
    header_line, header = first
    pos = _column_positions(path, header_line, header, _USED)
    width = len(header)
    i_user, i_video, i_time = pos["user_id"], pos["video_id"], pos["time_ms"]
    i_pos = [pos[c] for c in _POSITIVE]
    i_hate = pos["is_hate"]
    count = 0
    for line, row in rows:
        count += 1
        _check_row_width(path, line, row, width)
        try:
            user, video, time = int(row[i_user]), int(row[i_video]), int(row[i_time])
            flags = [int(row[i]) for i in i_pos]
            hate = int(row[i_hate])
            if (
                min(user, video, time, hate, *flags) < 0
                or max(user, video, time) > _INT64_MAX
                or "_" in "".join(row)
            ):
                raise ValueError
            positive = any(flags)
        except ValueError:
            user, video, time, positive, hate = _parse_slowly(path, line, row, pos)
        if positive and not hate:
            users.append(user)
            videos.append(video)
            times.append(time)
    if count == 0:
        raise DataFormatError(path, header_line + 1, "no rows after the header")
    return count


def _parse_slowly(
    path: Path, line: int, row: list[str], pos: dict[str, int]
) -> tuple[int, int, int, bool, int]:
    """Re-parses a row field by field to raise a precise DataFormatError."""
    values = {c: _parse_int(row[pos[c]], path, line, c, minimum=0) for c in _USED}
    positive = any(values[c] for c in _POSITIVE)
    return (
        values["user_id"],
        values["video_id"],
        values["time_ms"],
        positive,
        values["is_hate"],
    )
