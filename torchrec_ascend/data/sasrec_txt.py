"""Reader for whitespace-separated integer sequence files (SASRec layout)."""

from __future__ import annotations

import logging
from os import PathLike
from pathlib import Path

import numpy as np

from torchrec_ascend.data._grouping import _group_by_user
from torchrec_ascend.data._parsing import _INT64_MAX, _parse_int, _read_lines
from torchrec_ascend.data.errors import DataFormatError
from torchrec_ascend.data.sequences import SequenceDataset

logger = logging.getLogger(__name__)


def load_sasrec_txt(
    path: str | PathLike[str], name: str | None = None
) -> SequenceDataset:
    """Loads a text file of 1-based integer user and item ids without timestamps.

    Two layouts are recognised automatically:

    * one line per user, ``user_id item_id item_id ...`` with items oldest first
      (the layout of the shipped ``Beauty.txt``);
    * one ``user_id item_id`` pair per line, lines in chronological order, a
      user's lines possibly interleaved with other users'.

    The file is read as pairs when every non-blank line holds exactly two ids and
    at least one user id occurs on more than one line; otherwise it must be one
    line per user. Blank lines are ignored. Ids are kept as they are:
    ``num_items`` is the largest item id, users are sorted by id.

    Args:
        path: The text file.
        name: Dataset name; defaults to the lower-cased file stem.

    Returns:
        A validated SequenceDataset with ``timestamps=None``.

    Raises:
        DataFormatError: If the file is missing, unreadable or empty, a field is
            not an integer, an id is below 1, a user line has no items, or a user
            has two lines in the one-line-per-user layout.
    """
    path = Path(path)
    rows = _parse_rows(path)
    is_pairs = all(len(ids) == 2 for _, ids in rows) and (
        len({ids[0] for _, ids in rows}) < len(rows)
    )
    if is_pairs:
        dataset = _from_pairs(path, rows, name)
    else:
        dataset = _from_user_lines(path, rows, name)
    logger.info(
        "read %s (%s layout): %s",
        path,
        "pair" if is_pairs else "one line per user",
        dataset.summary(),
    )
    return dataset.validate()


def _parse_rows(path: Path) -> list[tuple[int, list[int]]]:
    """Returns ``(line_number, ids)`` for every non-blank line, ids all >= 1."""
    rows: list[tuple[int, list[int]]] = []
    for line_number, text in enumerate(_read_lines(path), start=1):
        tokens = text.split()
        if not tokens:
            continue
        try:
            ids = [int(t) for t in tokens]
            if min(ids) < 1 or max(ids) > _INT64_MAX or any("_" in t for t in tokens):
                raise ValueError
        except ValueError:
            # Slow path, only to produce a precise message.
            ids = [
                _parse_int(t, path, line_number, _field(k), minimum=1)
                for k, t in enumerate(tokens)
            ]
        rows.append((line_number, ids))
    if not rows:
        raise DataFormatError(path, 1, "file is empty (no ids found)")
    return rows


def _field(position: int) -> str:
    return "user id" if position == 0 else "item id"


def _from_pairs(
    path: Path, rows: list[tuple[int, list[int]]], name: str | None
) -> SequenceDataset:
    pairs = np.asarray([ids for _, ids in rows], dtype=np.int64)
    user_ids, item_seqs, _ = _group_by_user(pairs[:, 0], pairs[:, 1])
    return SequenceDataset(
        name=name or path.stem.lower(),
        num_items=int(pairs[:, 1].max()),
        user_ids=user_ids,
        item_ids=item_seqs,
        timestamps=None,
    )


def _from_user_lines(
    path: Path, rows: list[tuple[int, list[int]]], name: str | None
) -> SequenceDataset:
    first_line: dict[int, int] = {}
    for line_number, ids in rows:
        user = ids[0]
        if len(ids) < 2:
            raise DataFormatError(path, line_number, f"user {user} has no items")
        if user in first_line:
            raise DataFormatError(
                path,
                line_number,
                f"user {user} already has a line (line {first_line[user]}); in the "
                "one-line-per-user layout each user appears once",
            )
        first_line[user] = line_number
    rows = sorted(rows, key=lambda row: row[1][0])
    return SequenceDataset(
        name=name or path.stem.lower(),
        num_items=max(max(ids[1:]) for _, ids in rows),
        user_ids=np.asarray([ids[0] for _, ids in rows], dtype=np.int64),
        item_ids=[np.asarray(ids[1:], dtype=np.int64) for _, ids in rows],
        timestamps=None,
    )
