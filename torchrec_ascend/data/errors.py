"""Exceptions raised by the data package."""

from __future__ import annotations

from os import PathLike
from pathlib import Path


class DataFormatError(ValueError):
    """A data file is missing, unreadable or malformed.

    The message always names the file and, when the problem sits on a particular
    line, its 1-based line number, e.g. ``"ratings.csv: line 7: movieId 'x' is not
    an integer"``.

    Attributes:
        path: The file that could not be read.
        line: 1-based line number of the problem, or ``None`` when the problem
            concerns the whole file (missing, unreadable).
        problem: Description of the problem without file or line.
    """

    def __init__(
        self, path: str | PathLike[str], line: int | None, problem: str
    ) -> None:
        self.path = Path(path)
        self.line = line
        self.problem = problem
        where = f"{self.path}" if line is None else f"{self.path}: line {line}"
        super().__init__(f"{where}: {problem}")

    def __reduce__(self):
        return (type(self), (self.path, self.line, self.problem))


class DatasetNotFoundError(FileNotFoundError):
    """A named dataset could not be found in any of the places searched.

    Attributes:
        name: The dataset name that was requested.
        tried: The file paths that were looked at, in search order.
    """

    def __init__(self, name: str, tried: list[Path], hint: str = "") -> None:
        self.name = name
        self.tried = list(tried)
        self.hint = hint
        listing = "\n".join(f"  - {p}" for p in self.tried)
        message = f"dataset {name!r} not found; paths tried:\n{listing}"
        if hint:
            message += f"\n{hint}"
        super().__init__(message)

    def __str__(self) -> str:
        return self.args[0]

    def __reduce__(self):
        return (type(self), (self.name, self.tried, self.hint))
