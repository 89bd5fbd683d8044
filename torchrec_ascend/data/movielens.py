"""Reader for MovieLens ``ratings.csv`` files as implicit-feedback sequences."""

from __future__ import annotations

import logging
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
from torchrec_ascend.data.sequences import SequenceDataset

logger = logging.getLogger(__name__)

_COLUMNS = ("userId", "movieId", "rating", "timestamp")


def load_movielens_ratings(
    path: str | PathLike[str], name: str = "ml-latest-small"
) -> SequenceDataset:
    """Loads a MovieLens ``ratings.csv`` as chronological implicit interactions.

    Every rating counts as one interaction, whatever its value. Each user's
    ratings are ordered by timestamp; ratings with equal timestamps keep their
    order in the file. Movie ids are renumbered to ``1..n`` in increasing order of
    the MovieLens id (the inverse map is ``original_item_ids``); user ids are
    kept. Columns are found by name in the header, so their order does not matter.

    Args:
        path: The ``ratings.csv`` file (header ``userId,movieId,rating,timestamp``).
        name: Dataset name.

    Returns:
        A validated SequenceDataset with timestamps in seconds.

    Raises:
        DataFormatError: If the file is missing, unreadable or empty, the header
            lacks a column, a row has the wrong number of fields, an id is not a
            positive integer, the timestamp is not an integer or the rating is
            not a number.
    """
    path = Path(path)
    rows = _csv_rows(path)
    first = next(rows, None)
    if first is None:
        raise DataFormatError(path, 1, "file is empty (expected a header line)")
    header_line, header = first
    pos = _column_positions(path, header_line, header, _COLUMNS)
    width = len(header)
    iu, im, ir, it = (pos[c] for c in _COLUMNS)
    users: list[int] = []
    movies: list[int] = []
    times: list[int] = []
    for line, row in rows:
        _check_row_width(path, line, row, width)
        try:
            user, movie, time = int(row[iu]), int(row[im]), int(row[it])
            float(row[ir])
            if (
                user < 1
                or movie < 1
                or max(user, movie, abs(time)) > _INT64_MAX
                or "_" in row[iu] + row[im] + row[it]
            ):
                raise ValueError
        except ValueError:
            user, movie, time = _parse_slowly(path, line, row, iu, im, ir, it)
        users.append(user)
        movies.append(movie)
        times.append(time)
    if not users:
        raise DataFormatError(path, header_line + 1, "no ratings after the header")
    user_arr = np.asarray(users, dtype=np.int64)
    movie_arr = np.asarray(movies, dtype=np.int64)
    time_arr = np.asarray(times, dtype=np.int64)
    new_movies, originals = _remap_contiguous(movie_arr)
    user_ids, item_seqs, time_seqs = _group_by_user(user_arr, new_movies, time_arr)
    dataset = SequenceDataset(
        name=name,
        num_items=len(originals),
        user_ids=user_ids,
        item_ids=item_seqs,
        timestamps=time_seqs,
        original_item_ids=originals,
    )
    logger.info("read %s: %s", path, dataset.summary())
    return dataset.validate()


def _parse_slowly(
    path: Path, line: int, row: list[str], iu: int, im: int, ir: int, it: int
) -> tuple[int, int, int]:
    """Re-parses a row field by field to raise a precise DataFormatError."""
    user = _parse_int(row[iu], path, line, "userId", minimum=1)
    movie = _parse_int(row[im], path, line, "movieId", minimum=1)
    time = _parse_int(row[it], path, line, "timestamp")
    try:
        float(row[ir])
    except ValueError:
        raise DataFormatError(
            path, line, f"rating {row[ir].strip()!r} is not a number"
        ) from None
    return user, movie, time
