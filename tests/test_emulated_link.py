"""EmulatedLink: same results as loopback, bytes charged as modelled, completion no
earlier than the modelled link allows, DDP gradients unchanged through its hook."""

import time

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from tests.dist_harness import run_ranks
from torchrec_ascend.distributed.emulated_link import EmulatedLink


def _collectives(rank, world, out_dir):
    torch.manual_seed(rank)
    splits = [3, 5] if rank == 0 else [4, 2]
    send = torch.randn(sum(splits), 16)
    recv_splits = [3, 4] if rank == 0 else [5, 2]

    def run():
        received = torch.empty(sum(recv_splits), 16)
        work = dist.all_to_all_single(
            received, send, recv_splits, splits, async_op=True
        )
        work.wait()
        reduced = send[:2].clone()
        dist.all_reduce(reduced)
        gathered = torch.empty(world * 2, 16)
        dist.all_gather_into_tensor(gathered, send[:2].contiguous())
        return received, reduced, gathered

    plain = run()
    # 1 Gbit/s and 20 ms per collective: far slower than loopback.
    link = EmulatedLink(gbit_per_s=1.0, latency_us=20_000.0)
    with link:
        start = time.perf_counter()
        emulated = run()
        elapsed = time.perf_counter() - start
    for a, b in zip(plain, emulated):
        assert torch.equal(a, b)
    assert dist.all_to_all_single.__name__ == "all_to_all_single"
    assert "_emulated_link" not in dist.all_to_all_single.__dict__

    # Bytes this rank sends: the a2a rows it does not keep, 2 (n-1)/n of the
    # all-reduce buffer, (n-1)/n of the gathered buffer.
    row = 16 * 4
    expected = (sum(splits) - splits[rank]) * row + 2 * row + 2 * row
    assert link.stats["collectives"] == 3
    assert link.stats["bytes"] == expected
    # Three collectives back to back on one link: at least 3 latencies.
    assert elapsed >= 3 * 0.020
    assert link.stats["link_seconds"] == pytest.approx(3 * 0.020 + expected * 8 / 1e9)

    # An async collective's wait overlaps with work done after issuing it.
    link = EmulatedLink(gbit_per_s=1.0, latency_us=50_000.0)
    with link:
        received = torch.empty(sum(recv_splits), 16)
        start = time.perf_counter()
        work = dist.all_to_all_single(
            received, send, recv_splits, splits, async_op=True
        )
        issued = time.perf_counter() - start
        # Callers (TorchRec's input dist) only wait on real Work objects.
        assert isinstance(work, dist.Work)
        time.sleep(0.03)
        work.wait()
        waited = time.perf_counter() - start
    assert issued < 0.05
    assert waited >= 0.05

    # A link whose object was lost without uninstall() can still be removed.
    original = dist.all_reduce
    EmulatedLink(gbit_per_s=1.0).install()
    with pytest.raises(RuntimeError, match="uninstall_all"):
        EmulatedLink(gbit_per_s=1.0).install()
    assert EmulatedLink.uninstall_all() == 7
    assert dist.all_reduce is original


def test_collectives_keep_results_and_cost_the_modelled_time():
    run_ranks(_collectives, 2, None)


def _ddp(rank, world, _):
    torch.manual_seed(0)
    reference = nn.Linear(8, 4)
    emulated = nn.Linear(8, 4)
    emulated.load_state_dict(reference.state_dict())
    plain_ddp = DistributedDataParallel(reference)
    link = EmulatedLink(gbit_per_s=10.0, latency_us=5_000.0)
    with link:
        hooked = DistributedDataParallel(emulated)
        hooked.register_comm_hook(None, link.ddp_comm_hook())
        torch.manual_seed(10 + rank)
        x = torch.randn(5, 8)
        plain_ddp(x).square().sum().backward()
        start = time.perf_counter()
        hooked(x).square().sum().backward()
        elapsed = time.perf_counter() - start
    for a, b in zip(reference.parameters(), emulated.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-6, atol=1e-7)
    assert link.stats["collectives"] >= 1
    assert elapsed >= 0.005


def test_ddp_hook_averages_like_ddp_and_charges_the_link():
    run_ranks(_ddp, 2, None)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("inf"), float("nan"), True, "1"])
def test_bad_bandwidth_is_named(bad):
    with pytest.raises(ValueError, match="gbit_per_s must be a finite number > 0"):
        EmulatedLink(gbit_per_s=bad)


@pytest.mark.parametrize("bad", [-1.0, float("inf"), float("nan"), None])
def test_bad_latency_is_named(bad):
    with pytest.raises(ValueError, match="latency_us must be a finite number >= 0"):
        EmulatedLink(gbit_per_s=1.0, latency_us=bad)


def test_install_needs_a_process_group():
    assert not dist.is_initialized()
    with pytest.raises(RuntimeError, match="init_process_group"):
        EmulatedLink(gbit_per_s=1.0).install()
