"""Multi-process data parallelism with gloo on 127.0.0.1 (spawned, time-bounded)."""

import numpy as np
import pytest
import torch
from balance_workers import checks_worker, run_workers

from torchrec_ascend.balance import BalancedSampler, SampleCostModel
from torchrec_ascend.train.distributed import backend_for

WORLD = 3


@pytest.fixture(scope="module")
def checks(tmp_path_factory):
    return run_workers(
        checks_worker, WORLD, str(tmp_path_factory.mktemp("checks")), timeout_s=150
    )


def test_backend_follows_device_type():
    assert backend_for("cpu") == "gloo"
    assert backend_for(torch.device("cuda", 1)) == "nccl"
    with pytest.raises(ValueError, match="no collective backend"):
        backend_for("meta")


def test_exchanged_plans_cover_each_sample_once_with_empty_ranks(checks):
    from balance_workers import _config

    cost = SampleCostModel(_config())
    for (strategy, n), _ in checks[0]["plans"].items():
        per_rank = [c["plans"][strategy, n] for c in checks]
        assert len({len(p) for p in per_rank}) == 1, "ranks disagree on steps"
        seen = sorted(i for p in per_rank for step in p for i in step)
        assert seen == list(range(n)), (strategy, n)
        # The plan learned through all_gather equals the locally computed one.
        b = 2 if n in (2, 23) else 3
        window = 2 if (strategy, n) == ("global", 23) else 1
        lengths = np.random.default_rng(n).integers(1, 40, n)
        local = BalancedSampler(lengths, cost, WORLD, 0, b, strategy, window=window)
        expected = [[ids.tolist() for ids in plan] for plan in local.iter_plans()]
        got = [[per_rank[r][s] for r in range(WORLD)] for s in range(len(expected))]
        assert got == expected, (strategy, n)
    tiny = [c["plans"]["global", 2] for c in checks]
    assert sorted(len(p[0]) for p in tiny) == [0, 1, 1]


def test_weighted_gradients_equal_one_process_on_the_union(checks):
    reference = checks[0]["reference"]
    steps = len(reference)
    assert steps == 3  # 13 samples, global batch 6: a tail of one sample
    sizes = [[len(c["users"][s]) for c in checks] for s in range(steps)]
    assert sorted(sizes[-1]) == [0, 0, 1], sizes
    for rank, result in enumerate(checks):
        assert len(result["grads"]) == steps
        for step, (loss, grads) in enumerate(reference):
            assert result["losses"][step] == pytest.approx(loss, rel=1e-5)
            for name, expected in grads.items():
                got = result["grads"][step][name]
                if expected is None:
                    assert got is None or not got.any(), name
                    continue
                torch.testing.assert_close(
                    got, expected, rtol=2e-4, atol=1e-6, msg=f"{name} rank {rank}"
                )


def test_sample_output_does_not_depend_on_rank_or_batch(checks):
    merged = {}
    for name in ("fixed", "global", "token_budget"):
        merged[name] = {}
        for c in checks:
            merged[name].update(c["outputs"][name])
    users = sorted(merged["fixed"])
    assert users == sorted(merged["global"]) == sorted(merged["token_budget"])
    moved = 0
    for u in users:
        ranks = {checks[r]["rank_of_user"]["fixed"].get(u) for r in range(WORLD)}
        others = {checks[r]["rank_of_user"]["global"].get(u) for r in range(WORLD)}
        moved += ranks != others
        for name in ("global", "token_budget"):
            torch.testing.assert_close(
                merged[name][u], merged["fixed"][u], rtol=1e-5, atol=1e-6
            )
    assert moved > 0, "no sample changed rank; the test would prove nothing"


def test_trainer_data_parallel_trains_each_sample_once(checks, tmp_path_factory):
    results = [c["trainer"] for c in checks]
    steps = {r["num_steps"] for r in results}
    assert steps == {4}, steps  # 2 epochs x ceil(7 / 6) steps
    for epoch in range(2):
        batches = [r["trained_users"][2 * epoch : 2 * epoch + 2] for r in results]
        users = sorted(u for rank in batches for batch in rank for u in batch)
        assert users == list(range(7)), (epoch, users)
        assert sorted(len(rank[1]) for rank in batches) == [0, 0, 1]
    for r in results[1:]:
        torch.testing.assert_close(r["checksum"], results[0]["checksum"])
        assert r["metrics"]["test"] == results[0]["metrics"]["test"]
    assert np.isfinite(results[0]["metrics"]["history"][-1]["train_loss"])
