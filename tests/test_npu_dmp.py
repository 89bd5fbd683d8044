"""A DMP training step (sharded item table + HSTU) on the emulated NPU equals CPU."""

import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).resolve().parent / "npu_dmp_worker.py"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run_worker(device_type: str, out: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, str(WORKER), device_type, str(_free_port()), str(out)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return torch.load(out)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    # The emulator must be built before two processes race to compile it.
    import npu_fixtures  # noqa: F401

    folder = tmp_path_factory.mktemp("dmp")
    return {d: _run_worker(d, folder / f"{d}.pt") for d in ("cpu", "npu")}


def test_step_ran_on_each_device(results):
    assert results["cpu"]["device"] == "cpu"
    assert results["npu"]["device"] == "npu:0"


def test_no_fbgemm_op_fell_back_to_host(results):
    leaked = [
        op for op in results["npu"]["fallback_ops"] if not op.startswith("aten::")
    ]
    assert not leaked


def test_losses_match(results):
    cpu, npu = results["cpu"], results["npu"]
    torch.testing.assert_close(npu["loss"], cpu["loss"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(
        npu["loss_after"], cpu["loss_after"], rtol=1e-5, atol=1e-6
    )
    # The step trained something: the loss on the same batch went down.
    assert cpu["loss_after"] < cpu["loss"]


def test_sharded_table_and_adagrad_state_match(results):
    cpu, npu = results["cpu"], results["npu"]
    torch.testing.assert_close(npu["table"], cpu["table"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(npu["momentum"], cpu["momentum"], rtol=1e-5, atol=1e-6)
    assert int((cpu["momentum"] > 0).sum()) > 5


def test_dense_parameters_match(results):
    cpu, npu = results["cpu"], results["npu"]
    assert cpu["dense"].keys() == npu["dense"].keys() and len(cpu["dense"]) > 3
    for name in cpu["dense"]:
        torch.testing.assert_close(
            npu["dense"][name], cpu["dense"][name], rtol=1e-5, atol=1e-6, msg=name
        )
