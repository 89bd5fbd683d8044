"""Tests of the KuaiRand log reader, the k-core filter and the log writer."""

from __future__ import annotations

import csv
import random
from collections import Counter, defaultdict

import numpy as np
import pytest

from torchrec_ascend.data import (
    KUAIRAND_LOG_COLUMNS,
    k_core_mask,
    load_kuairand_logs,
    write_kuairand_log,
)

POSITIVE = ("is_click", "is_like", "is_follow", "is_comment", "is_forward", "long_view")


def _naive_k_core(rows, k):
    """Removes rows of rare users/items until every count is >= k."""
    while True:
        users = Counter(r[0] for r in rows)
        items = Counter(r[1] for r in rows)
        kept = [r for r in rows if users[r[0]] >= k and items[r[1]] >= k]
        if len(kept) == len(rows):
            return kept
        rows = kept


def _reference(files, k):
    """{original user: [(original video, seconds)]} computed the slow, obvious way."""
    pooled = [r for rows in files for r in rows]
    kept = [
        (r["user_id"], r["video_id"], r["time_ms"])
        for r in pooled
        if any(r.get(c, 0) for c in POSITIVE) and not r.get("is_hate", 0)
    ]
    kept = _naive_k_core(kept, k)
    out = defaultdict(list)
    for user, video, time_ms in kept:
        out[user].append((video, time_ms))
    return {
        user: [(v, t // 1000) for v, t in sorted(seq, key=lambda x: x[1])]
        for user, seq in out.items()
    }


def _as_original(ds):
    return {
        int(ds.original_user_ids[u]): list(
            zip(
                ds.original_item_ids[ds.item_ids[u] - 1].tolist(),
                ds.timestamps[u].tolist(),
            )
        )
        for u in range(ds.num_users)
    }


def _random_rows(rng, n, num_users, num_videos):
    rows = []
    for _ in range(n):
        row = {
            "user_id": rng.randrange(num_users) * 3,  # sparse ids, 0 included
            "video_id": rng.randrange(num_videos) * 7,
            "time_ms": 1_650_000_000_000 + rng.randrange(40) * 500,  # many ties
        }
        for c in POSITIVE:
            row[c] = int(rng.random() < 0.15)
        row["is_hate"] = int(rng.random() < 0.1)
        row["play_time_ms"] = rng.randrange(100000)
        rows.append(row)
    return rows


def test_writer_produces_kuairand_layout(tmp_path):
    path = write_kuairand_log(
        tmp_path / "log_standard_4_08_to_4_21_1k.csv",
        [{"user_id": 0, "video_id": 5, "time_ms": 1649412412000, "is_click": 1}],
    )
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert tuple(rows[0]) == KUAIRAND_LOG_COLUMNS
    record = dict(zip(rows[0], rows[1]))
    assert record["date"] == "20220408"  # 2022-04-08 18:06 in Beijing
    assert record["hourmin"] == "1806"
    assert record["is_click"] == "1" and record["is_hate"] == "0"
    with pytest.raises(ValueError, match="unknown columns"):
        write_kuairand_log(tmp_path / "x.csv", [{"user_id": 0, "video_id": 0, "x": 1}])


def test_filters_sort_and_remap_on_handmade_log(tmp_path):
    base = 1_700_000_000_000
    rows = []
    # User 10 and 20 share five videos, so both survive a 5-core... except for
    # the rows that the positive and hate filters drop.
    for user in (10, 20, 30, 40, 50):
        for j, video in enumerate((900, 800, 700, 600, 500)):
            # File order is reverse time order: the reader must sort.
            rows.append(
                {
                    "user_id": user,
                    "video_id": video,
                    "time_ms": base + (10 - j) * 1500,
                    "is_click": 1,
                }
            )
    rows.append({"user_id": 10, "video_id": 100, "time_ms": base, "is_click": 0})
    rows.append(
        {"user_id": 10, "video_id": 100, "time_ms": base, "is_click": 1, "is_hate": 1}
    )
    # long_view alone is a positive action.
    rows.append({"user_id": 20, "video_id": 500, "time_ms": base, "long_view": 1})
    path = write_kuairand_log(tmp_path / "log_standard.csv", rows)
    ds = load_kuairand_logs(path)
    assert ds.num_users == 5 and ds.num_items == 5
    assert ds.original_user_ids.tolist() == [10, 20, 30, 40, 50]
    assert ds.user_ids.tolist() == [1, 2, 3, 4, 5]
    assert ds.original_item_ids.tolist() == [500, 600, 700, 800, 900]
    assert 100 not in ds.original_item_ids  # no positive / hated rows only
    # Oldest first: the last written row of each user is the oldest.
    assert ds.item_ids[0].tolist() == [1, 2, 3, 4, 5]
    assert ds.timestamps[0].tolist() == [
        (base + k * 1500) // 1000 for k in range(6, 11)
    ]
    assert ds.item_ids[1].tolist() == [1, 1, 2, 3, 4, 5]  # long_view row first
    assert ds.timestamps[1][0] == base // 1000
    for t in ds.timestamps:
        assert np.all(np.diff(t) >= 0)


def test_five_core_is_iterative(tmp_path):
    base = 1_700_000_000_000
    rows = []
    # A solid core: users 1..5 x videos 1..5.
    for user in range(1, 6):
        for video in range(1, 6):
            rows.append({"user_id": user, "video_id": video, "time_ms": base + video})
    # User 6 has 5 rows, 4 on core videos and 1 on video 7, which has 5 rows,
    # the other four from user 7, who has only those 4 rows. One filtering pass
    # removes user 7; only then video 7 falls to 1 row, and then user 6 to 4.
    for video in (1, 2, 3, 4, 7):
        rows.append({"user_id": 6, "video_id": video, "time_ms": base + 100})
    for _ in range(4):
        rows.append({"user_id": 7, "video_id": 7, "time_ms": base + 200})
    for row in rows:
        row["is_click"] = 1
    path = write_kuairand_log(tmp_path / "log.csv", rows)
    ds = load_kuairand_logs(path)
    assert ds.original_user_ids.tolist() == [1, 2, 3, 4, 5]
    assert ds.original_item_ids.tolist() == [1, 2, 3, 4, 5]
    assert ds.num_interactions == 25
    single_pass = load_kuairand_logs(path, min_count=1)
    assert single_pass.num_users == 7


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_reference_on_random_logs(tmp_path, seed):
    rng = random.Random(seed)
    standard = _random_rows(rng, 700, num_users=12, num_videos=9)
    randomised = _random_rows(rng, 300, num_users=12, num_videos=9)
    paths = [
        write_kuairand_log(tmp_path / "log_standard_x.csv", standard),
        write_kuairand_log(tmp_path / "log_random_x.csv", randomised),
    ]
    ds = load_kuairand_logs(paths, min_count=5)
    expected = _reference([standard, randomised], 5)
    assert len(expected) > 3  # the test data must exercise something
    assert _as_original(ds) == expected
    assert ds.num_items == len({v for seq in expected.values() for v, _ in seq})
    ds.validate()


def test_nothing_left_raises(tmp_path):
    rows = [{"user_id": 1, "video_id": 1, "time_ms": 5, "is_click": 1}]
    path = write_kuairand_log(tmp_path / "log.csv", rows)
    with pytest.raises(ValueError, match="no interactions left"):
        load_kuairand_logs(path)
    assert load_kuairand_logs(path, min_count=1).num_interactions == 1


def test_no_paths_raises():
    with pytest.raises(ValueError, match="at least one"):
        load_kuairand_logs([])


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_k_core_mask_matches_naive(k):
    rng = np.random.default_rng(k)
    users = rng.integers(0, 30, size=400)
    items = rng.zipf(1.6, size=400) % 50
    mask = k_core_mask(users, items, k)
    expected = _naive_k_core(list(zip(users.tolist(), items.tolist())), k)
    got = list(zip(users[mask].tolist(), items[mask].tolist()))
    assert got == expected


def test_k_core_mask_empty_and_shape_checks():
    empty = np.zeros(0, dtype=np.int64)
    assert k_core_mask(empty, empty, 5).shape == (0,)
    with pytest.raises(ValueError):
        k_core_mask(np.zeros(3, np.int64), np.zeros(2, np.int64))
