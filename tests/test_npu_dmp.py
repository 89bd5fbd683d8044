"""A DMP training step (sharded item table + HSTU) on the emulated NPU equals CPU."""

import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from torchrec_ascend.npu import registered_ops

WORKER = Path(__file__).resolve().parent / "npu_dmp_worker.py"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_worker(device_type: str, sharding_type: str, out: Path):
    command = [sys.executable, str(WORKER), device_type, str(_free_port()), str(out)]
    return subprocess.Popen(
        [*command, sharding_type],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish_worker(proc, out: Path) -> dict:
    try:
        _, stderr = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    assert proc.returncode == 0, stderr[-4000:]
    return torch.load(out)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    # The emulator must be built before two processes race to compile it.
    import npu_fixtures  # noqa: F401

    folder = tmp_path_factory.mktemp("dmp")
    # With one rank, table-wise and row-wise shards hold the same rows, so both NPU
    # runs must equal TorchRec's own CPU run; row-wise adds on-device bucketing.
    runs = {"cpu": ("cpu", "table_wise"), "npu": ("npu", "table_wise")}
    runs["npu_row_wise"] = ("npu", "row_wise")
    # The three single-rank jobs are independent; running them side by side
    # overlaps their (import-heavy) start-up.
    started = {
        name: _start_worker(device, sharding, folder / f"{name}.pt")
        for name, (device, sharding) in runs.items()
    }
    return {
        name: _finish_worker(proc, folder / f"{name}.pt")
        for name, proc in started.items()
    }


NPU_RUNS = ["npu", "npu_row_wise"]


def test_step_ran_on_each_device(results):
    assert results["cpu"]["device"] == "cpu"
    assert results["npu"]["device"] == "npu:0"
    assert results["npu_row_wise"]["device"] == "npu:0"


@pytest.mark.parametrize("run", NPU_RUNS)
def test_no_fbgemm_op_fell_back_to_host(results, run):
    fallback = results[run]["fallback_ops"]
    assert not [op for op in fallback if not op.startswith("aten::")]


@pytest.mark.parametrize("run", NPU_RUNS)
def test_our_npu_kernels_served_the_step(results, run):
    ops = dict(results[run]["ops"])
    # On a non-CPU device HSTU attention takes the device-generic ATen path
    # (torchrec_ascend/ops/hstu_generic.py), so no HSTU op may run on the host.
    assert ops.get("torchrec_ascend::hstu_attention", "npu") == "npu"
    assert ops.get("torchrec_ascend::hstu_attention_backward", "npu") == "npu"
    assert not [op for op in results[run]["fallback_ops"] if "hstu" in op]
    if run == "npu_row_wise":
        assert ops["fbgemm::block_bucketize_sparse_features"] == "npu"
    registered = set(registered_ops())
    for name, device in ops.items():
        if name.startswith("fbgemm::") and device == "npu":
            assert name in registered, name


@pytest.mark.parametrize("run", NPU_RUNS)
def test_losses_match(results, run):
    cpu, npu = results["cpu"], results[run]
    torch.testing.assert_close(npu["loss"], cpu["loss"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(
        npu["loss_after"], cpu["loss_after"], rtol=1e-5, atol=1e-6
    )
    # The step trained something: the loss on the same batch went down.
    assert cpu["loss_after"] < cpu["loss"]


@pytest.mark.parametrize("run", NPU_RUNS)
def test_sharded_table_and_adagrad_state_match(results, run):
    cpu, npu = results["cpu"], results[run]
    torch.testing.assert_close(npu["table"], cpu["table"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(npu["momentum"], cpu["momentum"], rtol=1e-5, atol=1e-6)
    assert int((cpu["momentum"] > 0).sum()) > 5


@pytest.mark.parametrize("run", NPU_RUNS)
def test_dense_parameters_match(results, run):
    cpu, npu = results["cpu"], results[run]
    assert cpu["dense"].keys() == npu["dense"].keys() and len(cpu["dense"]) > 3
    for name in cpu["dense"]:
        torch.testing.assert_close(
            npu["dense"][name], cpu["dense"][name], rtol=1e-5, atol=1e-6, msg=name
        )
