"""Private helpers that read text files and turn bad input into DataFormatError."""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from os import PathLike
from pathlib import Path

from torchrec_ascend.data.errors import DataFormatError

_INT64_MAX = 2**63 - 1


def _read_lines(path: str | PathLike[str]) -> list[str]:
    """Reads a whole UTF-8 text file as a list of lines (no line endings).

    Raises:
        DataFormatError: If the file is missing, unreadable or not UTF-8.
    """
    path = Path(path)
    try:
        with open(path, encoding="utf-8-sig", newline=None) as f:
            return f.read().splitlines()
    except FileNotFoundError:
        raise DataFormatError(path, None, "file not found") from None
    except IsADirectoryError:
        raise DataFormatError(path, None, "is a directory, expected a file") from None
    except UnicodeDecodeError as e:
        raise DataFormatError(path, None, f"not valid UTF-8 text ({e.reason})") from e
    except OSError as e:
        raise DataFormatError(path, None, f"cannot read file ({e.strerror})") from e


def _csv_rows(
    path: str | PathLike[str],
) -> Iterator[tuple[int, list[str]]]:
    """Yields ``(line_number, row)`` for every non-blank row of a CSV file.

    The first yielded row is the header. Line numbers are 1-based physical line
    numbers of the row's first line.

    Raises:
        DataFormatError: If the file is missing, unreadable, not UTF-8 or
            syntactically broken CSV.
    """
    path = Path(path)
    try:
        f = open(path, encoding="utf-8-sig", newline="")
    except FileNotFoundError:
        raise DataFormatError(path, None, "file not found") from None
    except IsADirectoryError:
        raise DataFormatError(path, None, "is a directory, expected a file") from None
    except OSError as e:
        raise DataFormatError(path, None, f"cannot read file ({e.strerror})") from e
    with f:
        reader = csv.reader(f)
        start = 1
        try:
            for row in reader:
                if row and any(cell.strip() for cell in row):
                    yield start, row
                start = reader.line_num + 1
        except UnicodeDecodeError as e:
            # Limitation: decoding runs ahead of the CSV reader in blocks, so the
            # offending line cannot be named; the byte offset is in the reason.
            raise DataFormatError(
                path, None, f"not valid UTF-8 text ({e.reason} at byte {e.start})"
            ) from e
        except csv.Error as e:
            raise DataFormatError(path, start, f"malformed CSV ({e})") from e


def _column_positions(
    path: Path, line: int, header: Sequence[str], required: Sequence[str]
) -> dict[str, int]:
    """Maps every required column name to its position in ``header``.

    Raises:
        DataFormatError: Naming the missing columns, if any are missing.
    """
    names = [h.strip().lstrip("\ufeff") for h in header]
    missing = [c for c in required if c not in names]
    if missing:
        raise DataFormatError(
            path,
            line,
            f"header is missing column(s) {', '.join(missing)}; "
            f"found {', '.join(names)}",
        )
    return {c: names.index(c) for c in required}


def _parse_int(
    text: str, path: Path, line: int, what: str, minimum: int | None = None
) -> int:
    """Parses one integer field.

    Args:
        text: The raw field.
        path: File being read, for the error message.
        line: 1-based line number, for the error message.
        what: Field name, for the error message.
        minimum: Smallest accepted value, or ``None`` for no bound.

    Raises:
        DataFormatError: If ``text`` is not an integer, is below ``minimum`` or
            does not fit in int64.
    """
    try:
        if "_" in text:
            raise ValueError(text)
        value = int(text)
    except ValueError:
        raise DataFormatError(
            path, line, f"{what} {text.strip()!r} is not an integer"
        ) from None
    if minimum is not None and value < minimum:
        raise DataFormatError(path, line, f"{what} must be >= {minimum}, got {value}")
    if abs(value) > _INT64_MAX:
        raise DataFormatError(path, line, f"{what} {value} does not fit in int64")
    return value


def _check_row_width(path: Path, line: int, row: Sequence[str], width: int) -> None:
    """Raises DataFormatError unless ``row`` has exactly ``width`` fields."""
    if len(row) < width:
        raise DataFormatError(
            path,
            line,
            f"missing columns: expected {width} fields like the header, "
            f"found {len(row)}",
        )
    if len(row) > width:
        raise DataFormatError(
            path,
            line,
            f"too many columns: expected {width} fields like the header, "
            f"found {len(row)}",
        )
