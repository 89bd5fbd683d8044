"""Tests of the SASRec-text and MovieLens readers and of load_dataset."""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from torchrec_ascend.data import (
    DATA_ROOT_ENV,
    DatasetNotFoundError,
    available_datasets,
    dataset_path,
    default_data_root,
    load_dataset,
    load_movielens_ratings,
    load_sasrec_txt,
)

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "data"
BEAUTY_TXT = REPO / "datasets" / "amazon-beauty" / "Beauty.txt"
ML_RATINGS = REPO / "datasets" / "movielens-latest-small" / "ratings.csv"


@pytest.fixture(scope="module")
def beauty():
    return load_dataset("beauty")


@pytest.fixture(scope="module")
def movielens():
    return load_dataset("ml-latest-small")


@pytest.fixture(scope="module")
def ml_rows():
    """(user, movie, timestamp) of every rating, in file order."""
    with open(ML_RATINGS, newline="", encoding="utf-8") as f:
        return [
            (int(r["userId"]), int(r["movieId"]), int(r["timestamp"]))
            for r in csv.DictReader(f)
        ]


# --- shipped Beauty ----------------------------------------------------------


def test_beauty_matches_independent_parse(beauty):
    users, items, total = [], set(), 0
    sequences = {}
    for line in BEAUTY_TXT.read_text().splitlines():
        fields = [int(x) for x in line.split()]
        users.append(fields[0])
        sequences[fields[0]] = fields[1:]
        items.update(fields[1:])
        total += len(fields) - 1
    assert beauty.num_users == len(users) == 22363
    assert beauty.num_items == max(items) == len(items)
    assert beauty.num_interactions == total
    assert beauty.timestamps is None
    assert beauty.name == "beauty"
    assert beauty.user_ids.tolist() == sorted(users)
    # File order is chronological order; it must be kept exactly.
    for u in (0, 1, 777, beauty.num_users - 1):
        uid = int(beauty.user_ids[u])
        assert beauty.item_ids[u].tolist() == sequences[uid]
    assert int(beauty.lengths().sum()) == total


def test_beauty_arrays_are_int64(beauty):
    assert beauty.user_ids.dtype == np.int64
    assert all(s.dtype == np.int64 for s in beauty.item_ids[:100])


# --- shipped MovieLens -------------------------------------------------------


def test_movielens_counts_match_independent_count(movielens, ml_rows):
    assert len(ml_rows) == 100836
    assert movielens.num_interactions == len(ml_rows)
    assert movielens.num_users == len({u for u, _, _ in ml_rows}) == 610
    assert movielens.num_items == len({m for _, m, _ in ml_rows}) == 9724
    assert movielens.user_ids.tolist() == sorted({u for u, _, _ in ml_rows})


def test_movielens_item_remapping_is_order_preserving_bijection(movielens, ml_rows):
    originals = movielens.original_item_ids
    assert originals is not None and originals.shape == (movielens.num_items,)
    assert np.all(np.diff(originals) > 0)  # increasing, hence one-to-one
    assert set(originals.tolist()) == {m for _, m, _ in ml_rows}
    used = np.concatenate(movielens.item_ids)
    assert used.min() == 1 and used.max() == movielens.num_items
    assert len(np.unique(used)) == movielens.num_items  # onto 1..n


def test_movielens_sequences_are_chronological_and_stable(movielens, ml_rows):
    by_user = defaultdict(list)
    for user, movie, ts in ml_rows:
        by_user[user].append((movie, ts))
    for u, uid in enumerate(movielens.user_ids.tolist()):
        expected = sorted(by_user[uid], key=lambda r: r[1])  # stable sort
        items = movielens.item_ids[u]
        times = movielens.timestamps[u]
        assert np.all(np.diff(times) >= 0)
        got = list(zip(movielens.original_item_ids[items - 1].tolist(), times.tolist()))
        assert got == expected


def test_movielens_tiny_fixture_crlf_and_ties():
    ds = load_movielens_ratings(FIXTURES / "tiny_ratings.csv", name="tiny")
    assert ds.name == "tiny"
    assert ds.original_item_ids.tolist() == [10, 50, 200, 300]
    assert ds.user_ids.tolist() == [1, 2]
    # user 1: movies 300@20, 200@20 (tie keeps file order), 10@30
    assert ds.item_ids[0].tolist() == [4, 3, 1]
    assert ds.timestamps[0].tolist() == [20, 20, 30]
    assert ds.item_ids[1].tolist() == [1, 2]
    assert ds.timestamps[1].tolist() == [90, 100]


def test_movielens_columns_found_by_name(tmp_path):
    path = tmp_path / "ratings.csv"
    path.write_text("timestamp,rating,movieId,userId\n5,1.0,9,3\n4,2.0,8,3\n")
    ds = load_movielens_ratings(path)
    assert ds.user_ids.tolist() == [3]
    assert ds.original_item_ids[ds.item_ids[0] - 1].tolist() == [8, 9]
    assert ds.timestamps[0].tolist() == [4, 5]


# --- SASRec text layouts -----------------------------------------------------


def test_sasrec_pair_layout_detected():
    ds = load_sasrec_txt(FIXTURES / "tiny_pairs.txt")
    assert ds.name == "tiny_pairs"
    assert ds.user_ids.tolist() == [1, 2, 3]
    assert [s.tolist() for s in ds.item_ids] == [[2, 4, 2], [5], [7, 2]]
    assert ds.num_items == 7
    assert ds.timestamps is None


def test_sasrec_user_line_layout_sorted_by_user_blank_lines_ignored():
    ds = load_sasrec_txt(FIXTURES / "tiny_user_lines.txt", name="x")
    assert ds.name == "x"
    assert ds.user_ids.tolist() == [1, 2, 3]
    assert [s.tolist() for s in ds.item_ids] == [[5, 4], [3, 1, 3], [2]]
    assert ds.num_items == 5


def test_byte_order_mark_is_ignored(tmp_path):
    txt = tmp_path / "bom.txt"
    txt.write_text("1 2 3\n", encoding="utf-8-sig")
    assert load_sasrec_txt(txt).item_ids[0].tolist() == [2, 3]
    csv_path = tmp_path / "bom.csv"
    csv_path.write_text("userId,movieId,rating,timestamp\n1,2,3,4\n", "utf-8-sig")
    assert load_movielens_ratings(csv_path).user_ids.tolist() == [1]


def test_sasrec_two_ints_per_line_without_repeats_is_user_lines(tmp_path):
    path = tmp_path / "one_each.txt"
    path.write_text("2 9\n1 4\n")
    ds = load_sasrec_txt(path)
    assert ds.user_ids.tolist() == [1, 2]
    assert [s.tolist() for s in ds.item_ids] == [[4], [9]]


# --- load_dataset ------------------------------------------------------------


def test_available_datasets_and_default_root():
    assert available_datasets() == ["beauty", "ml-latest-small"]
    assert default_data_root() == REPO / "datasets"


def test_dataset_path_default(monkeypatch):
    monkeypatch.delenv(DATA_ROOT_ENV, raising=False)
    assert dataset_path("beauty") == BEAUTY_TXT
    assert dataset_path("ml-latest-small") == ML_RATINGS


def test_load_dataset_root_argument_nested_layout(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_ROOT_ENV, str(tmp_path / "ignored"))
    (tmp_path / "amazon-beauty").mkdir()
    (tmp_path / "amazon-beauty" / "Beauty.txt").write_text("1 1 2\n2 2\n")
    ds = load_dataset("beauty", root=tmp_path)
    assert ds.name == "beauty"
    assert ds.num_users == 2 and ds.num_interactions == 3


def test_load_dataset_env_var_flat_layout(tmp_path, monkeypatch):
    (tmp_path / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n7,3,4.0,11\n"
    )
    monkeypatch.setenv(DATA_ROOT_ENV, str(tmp_path))
    ds = load_dataset("ml-latest-small")
    assert ds.user_ids.tolist() == [7] and ds.num_items == 1


def test_load_dataset_missing_lists_paths_tried(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("ml-latest-small", root=tmp_path)
    message = str(info.value)
    assert str(tmp_path / "movielens-latest-small" / "ratings.csv") in message
    assert str(tmp_path / "ratings.csv") in message
    assert info.value.tried == [
        tmp_path / "movielens-latest-small" / "ratings.csv",
        tmp_path / "ratings.csv",
    ]
    assert isinstance(info.value, FileNotFoundError)


def test_load_dataset_unknown_name():
    with pytest.raises(ValueError, match="beauty, ml-latest-small"):
        load_dataset("netflix")
