"""Loading the shipped datasets by name."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

from torchrec_ascend.data.errors import DatasetNotFoundError
from torchrec_ascend.data.movielens import load_movielens_ratings
from torchrec_ascend.data.sasrec_txt import load_sasrec_txt
from torchrec_ascend.data.sequences import SequenceDataset

logger = logging.getLogger(__name__)

DATA_ROOT_ENV = "TORCHREC_ASCEND_DATA"
"""Environment variable naming a folder that replaces the default data root."""


@dataclass(frozen=True)
class _Entry:
    folder: str
    filename: str
    reader: Callable[[Path, str], SequenceDataset]


_DATASETS: dict[str, _Entry] = {
    "beauty": _Entry(
        "amazon-beauty", "Beauty.txt", lambda p, n: load_sasrec_txt(p, name=n)
    ),
    "ml-latest-small": _Entry(
        "movielens-latest-small",
        "ratings.csv",
        lambda p, n: load_movielens_ratings(p, name=n),
    ),
}


def available_datasets() -> list[str]:
    """Names accepted by :func:`load_dataset`."""
    return sorted(_DATASETS)


def default_data_root() -> Path:
    """The repository's ``datasets/`` folder (next to the package sources).

    Limitation: this only exists in a source checkout or an editable install; a
    wheel install must point ``TORCHREC_ASCEND_DATA`` (or ``root=``) at a copy.
    """
    return Path(__file__).resolve().parents[2] / "datasets"


def dataset_path(name: str, root: str | PathLike[str] | None = None) -> Path:
    """Finds the main file of a named dataset.

    The data root is ``root`` if given, else ``$TORCHREC_ASCEND_DATA`` if set,
    else :func:`default_data_root`. Within it, ``<root>/<folder>/<file>`` is
    tried first, then ``<root>/<file>``.

    Args:
        name: One of :func:`available_datasets`.
        root: Folder overriding the environment variable and the default.

    Returns:
        Path of the existing data file.

    Raises:
        ValueError: If ``name`` is unknown.
        DatasetNotFoundError: Listing every path tried, if none exists.
    """
    entry = _entry(name)
    env = os.environ.get(DATA_ROOT_ENV)
    if root is not None:
        base, source = Path(root), "the root argument"
    elif env:
        base, source = Path(env), f"${DATA_ROOT_ENV}"
    else:
        base, source = default_data_root(), "the default data root"
    tried = [base / entry.folder / entry.filename, base / entry.filename]
    for candidate in tried:
        if candidate.is_file():
            return candidate
    raise DatasetNotFoundError(
        name,
        tried,
        hint=(
            f"The data root {base} came from {source}; pass root= or set "
            f"${DATA_ROOT_ENV} to a folder holding {entry.folder}/{entry.filename}."
        ),
    )


def load_dataset(name: str, root: str | PathLike[str] | None = None) -> SequenceDataset:
    """Loads a shipped dataset by name.

    Args:
        name: ``"beauty"`` (Amazon Beauty, no timestamps) or ``"ml-latest-small"``
            (MovieLens latest-small ratings, with timestamps).
        root: Data folder overriding ``$TORCHREC_ASCEND_DATA`` and the repository's
            ``datasets/`` folder; see :func:`dataset_path`.

    Returns:
        The validated SequenceDataset, named ``name``.

    Raises:
        ValueError: If ``name`` is unknown.
        DatasetNotFoundError: If the data file is not found.
        DataFormatError: If the data file is malformed.
    """
    path = dataset_path(name, root)
    logger.info("loading dataset %r from %s", name, path)
    return _entry(name).reader(path, name)


def _entry(name: str) -> _Entry:
    try:
        return _DATASETS[name]
    except KeyError:
        raise ValueError(
            f"unknown dataset {name!r}; known datasets: "
            f"{', '.join(available_datasets())}"
        ) from None
