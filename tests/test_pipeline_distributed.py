"""Two-rank pipeline tests (gloo on 127.0.0.1, bounded in time): the pipelined loops
against the plain loop and TorchRec's TrainPipelineSparseDist on a DMP-sharded
retrieval model, and uneven data per rank."""

import math

import pytest

from torchrec_ascend.pipeline.launch import RetrievalJob, run_jobs

JOBS = {
    "plain": RetrievalJob(loop="plain", batches=(4, 4), dedup=False),
    "sync": RetrievalJob(loop="sync", batches=(4, 4), dedup=False),
    "torchrec": RetrievalJob(loop="torchrec", batches=(4, 4)),
    "semi": RetrievalJob(loop="semi-async", batches=(4, 4), dedup=False),
    "sync_uneven_pad": RetrievalJob(loop="sync", batches=(3, 5)),
    "semi_uneven_pad": RetrievalJob(loop="semi-async", batches=(5, 2)),
    "semi_uneven_nopad": RetrievalJob(loop="semi-async", batches=(2, 4), pad=False),
    "plain_uneven_pad": RetrievalJob(loop="plain", batches=(1, 3)),
    # A slow emulated link changes when collectives finish, never what they carry.
    "sync_link": RetrievalJob(
        loop="sync", batches=(4, 4), dedup=False, link_gbit_per_s=0.5
    ),
    "torchrec_link": RetrievalJob(
        loop="torchrec", batches=(4, 4), link_gbit_per_s=0.5, link_latency_us=500.0
    ),
}


@pytest.fixture(scope="module")
def results():
    names = list(JOBS)
    # One spawn for all jobs; a hang anywhere fails the fixture after the timeout
    # (every rank process is killed) instead of blocking the test run.
    out = run_jobs([JOBS[n] for n in names], timeout=240.0)
    return dict(zip(names, out))


def _losses(results, name):
    return [r["losses"] for r in results[name]]


def test_sync_and_torchrec_reproduce_plain_losses_exactly(results):
    plain = _losses(results, "plain")
    assert [len(x) for x in plain] == [4, 4]
    assert all(math.isfinite(v) for x in plain for v in x)
    assert _losses(results, "sync") == plain
    assert _losses(results, "torchrec") == plain


def test_emulated_link_keeps_losses_and_charges_every_rank(results):
    plain = _losses(results, "plain")
    assert _losses(results, "sync_link") == plain
    assert _losses(results, "torchrec_link") == plain
    for name in ("sync_link", "torchrec_link"):
        assert all(r["link_seconds"] > 0 for r in results[name])
    assert all("link_seconds" not in r for r in results["plain"])


def test_semi_async_differs_only_after_the_first_update(results):
    plain, semi = _losses(results, "plain"), _losses(results, "semi")
    for rank in range(2):
        assert semi[rank][0] == plain[rank][0]
        assert semi[rank][1] != plain[rank][1]
        # One stale update, not divergence.
        assert all(abs(a - b) < 1.5 for a, b in zip(semi[rank], plain[rank]))


@pytest.mark.parametrize(
    "name", ["sync_uneven_pad", "semi_uneven_pad", "plain_uneven_pad"]
)
def test_uneven_loaders_execute_every_batch_without_hanging(results, name):
    batches = JOBS[name].batches
    longest = max(batches)
    for rank, result in enumerate(results[name]):
        assert len(result["losses"]) == batches[rank]
        assert result["stats"] == {
            "batches": batches[rank],
            "padding_batches": longest - batches[rank],
            "dropped_batches": 0,
        }
        assert all(math.isfinite(v) for v in result["losses"])


def test_uneven_loaders_without_padding_stop_together_and_count_drops(results):
    ranks = results["semi_uneven_nopad"]
    assert [len(r["losses"]) for r in ranks] == [2, 2]
    assert [r["stats"]["dropped_batches"] for r in ranks] == [0, 2]


def test_pipelined_steps_report_fractions_that_add_up(results):
    for name in ("sync", "semi"):
        for result in results[name]:
            f = result["fractions"]
            total = f["compute_frac"] + f["exposed_comm_frac"] + f["idle_frac"]
            assert total == pytest.approx(1.0, abs=1e-9)
            # Two ranks exchange ids and rows, so some communication was timed.
            assert f["comm_frac"] > 0.0
            assert f["steps"] == 4 - JOBS[name].warmup
