"""Malformed input must raise DataFormatError naming the file and the line."""

from __future__ import annotations

import pickle

import pytest

from torchrec_ascend.data import (
    DataFormatError,
    load_kuairand_logs,
    load_movielens_ratings,
    load_sasrec_txt,
)
from torchrec_ascend.data.kuairand import KUAIRAND_LOG_COLUMNS

ML_HEADER = "userId,movieId,rating,timestamp\n"
KR_HEADER = ",".join(KUAIRAND_LOG_COLUMNS) + "\n"


def _kr_row(user="0", video="0", time_ms="1000", click="1", hate="0") -> str:
    values = dict.fromkeys(KUAIRAND_LOG_COLUMNS, "0")
    values.update(user_id=user, video_id=video, time_ms=time_ms)
    values.update(is_click=click, is_hate=hate)
    return ",".join(values[c] for c in KUAIRAND_LOG_COLUMNS) + "\n"


# (reader, file content, expected line, fragment expected in the message)
CASES = {
    "sasrec-empty": (load_sasrec_txt, "", 1, "empty"),
    "sasrec-only-blank-lines": (load_sasrec_txt, "\n  \n", 1, "empty"),
    "sasrec-non-integer-item": (load_sasrec_txt, "1 2 3\n2 4 5\n3 x 6\n", 3, "'x'"),
    "sasrec-float-user": (load_sasrec_txt, "1 2\n2.5 3\n", 2, "user id '2.5'"),
    "sasrec-zero-item": (load_sasrec_txt, "1 2 3\n2 0 5\n", 2, "item id must be >= 1"),
    "sasrec-negative-user": (load_sasrec_txt, "1 2\n-4 3 4\n", 2, "user id must be"),
    "sasrec-user-without-items": (load_sasrec_txt, "1 2 3\n4\n5 6 7\n", 2, "no items"),
    "sasrec-blank-lines-counted": (load_sasrec_txt, "1 2 3\n\n2 a\n", 3, "'a'"),
    "sasrec-duplicate-user": (load_sasrec_txt, "1 2 3\n2 4\n1 5\n", 3, "line 1"),
    "sasrec-underscore": (load_sasrec_txt, "1 2\n2 1_0\n", 2, "not an integer"),
    "sasrec-int64-overflow": (load_sasrec_txt, "1 2\n2 " + "9" * 20 + "\n", 2, "int64"),
    "ml-empty": (load_movielens_ratings, "", 1, "empty"),
    "ml-header-only": (load_movielens_ratings, ML_HEADER, 2, "no ratings"),
    "ml-missing-column": (
        load_movielens_ratings,
        "userId,movieId,timestamp\n1,2,3\n",
        1,
        "missing column(s) rating",
    ),
    "ml-short-row": (
        load_movielens_ratings,
        ML_HEADER + "1,2,3.0,4\n1,3,4.0,5\n1,4,5.0\n",
        4,
        "missing columns",
    ),
    "ml-long-row": (load_movielens_ratings, ML_HEADER + "1,2,3.0,4,9\n", 2, "too many"),
    "ml-non-integer-movie": (
        load_movielens_ratings,
        ML_HEADER + "1,2,3.0,4\n1,abc,3.0,4\n",
        3,
        "movieId 'abc'",
    ),
    "ml-zero-movie": (load_movielens_ratings, ML_HEADER + "1,0,3.0,4\n", 2, "movieId"),
    "ml-zero-user": (load_movielens_ratings, ML_HEADER + "0,1,3.0,4\n", 2, "userId"),
    "ml-bad-timestamp": (
        load_movielens_ratings,
        ML_HEADER + "1,1,3.0,4\n1,2,3.0,4.5\n",
        3,
        "timestamp '4.5'",
    ),
    "ml-bad-rating": (load_movielens_ratings, ML_HEADER + "1,1,good,4\n", 2, "rating"),
    "ml-blank-lines-counted": (
        load_movielens_ratings,
        ML_HEADER + "1,1,3.0,4\n\n1,x,3.0,4\n",
        4,
        "'x'",
    ),
    "kr-empty": (load_kuairand_logs, "", 1, "empty"),
    "kr-header-only": (load_kuairand_logs, KR_HEADER, 2, "no rows"),
    "kr-missing-column": (
        load_kuairand_logs,
        KR_HEADER.replace(",is_hate", "") + _kr_row().replace("0,", "", 1),
        1,
        "is_hate",
    ),
    "kr-non-integer-user": (
        load_kuairand_logs,
        KR_HEADER + _kr_row() + _kr_row(user="u7"),
        3,
        "user_id 'u7'",
    ),
    "kr-negative-video": (
        load_kuairand_logs,
        KR_HEADER + _kr_row(video="-1"),
        2,
        "video_id",
    ),
    "kr-bad-flag": (
        load_kuairand_logs,
        KR_HEADER + _kr_row(click="yes"),
        2,
        "is_click",
    ),
    "kr-short-row": (
        load_kuairand_logs,
        KR_HEADER + _kr_row() + "1,2,3\n",
        3,
        "missing columns",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_malformed_file_raises_with_file_and_line(tmp_path, case):
    reader, content, line, fragment = CASES[case]
    path = tmp_path / f"{case}.data"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataFormatError) as info:
        reader(path)
    error = info.value
    message = str(error)
    assert isinstance(error, ValueError)
    assert path.name in message
    assert error.path == path
    assert error.line == line
    assert f"line {line}:" in message
    assert fragment in message


@pytest.mark.parametrize(
    "reader", [load_sasrec_txt, load_movielens_ratings, load_kuairand_logs]
)
def test_missing_file_raises_data_format_error(tmp_path, reader):
    path = tmp_path / "nowhere.csv"
    with pytest.raises(DataFormatError, match="nowhere.csv: file not found") as info:
        reader(path)
    assert info.value.line is None


@pytest.mark.parametrize(
    "reader", [load_sasrec_txt, load_movielens_ratings, load_kuairand_logs]
)
def test_directory_instead_of_file(tmp_path, reader):
    with pytest.raises(DataFormatError, match="is a directory"):
        reader(tmp_path)


@pytest.mark.parametrize("reader", [load_sasrec_txt, load_movielens_ratings])
def test_non_utf8_file(tmp_path, reader):
    path = tmp_path / "latin1.txt"
    path.write_bytes(ML_HEADER.encode() + b"1,2,3.0,\xff\xfe\n")
    with pytest.raises(DataFormatError, match="latin1.txt: not valid UTF-8"):
        reader(path)


def test_second_kuairand_file_is_named(tmp_path):
    good = tmp_path / "log_standard_a.csv"
    good.write_text(KR_HEADER + _kr_row())
    bad = tmp_path / "log_random_b.csv"
    bad.write_text(KR_HEADER + _kr_row() + _kr_row() + _kr_row(time_ms="soon"))
    with pytest.raises(DataFormatError, match=r"log_random_b\.csv: line 4: time_ms"):
        load_kuairand_logs([good, bad])


def test_error_pickles():
    error = DataFormatError("a/b.txt", 3, "bad")
    again = pickle.loads(pickle.dumps(error))
    assert str(again) == str(error) == "a/b.txt: line 3: bad"
    assert again.line == 3 and again.problem == "bad"
