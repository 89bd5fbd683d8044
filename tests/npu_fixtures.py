"""Shared pytest fixtures for tests that run on the emulated NPU."""

import npu_emulator
import pytest
import torch

# The autograd engine sizes its per-device queues from the device count at the first
# backward of the process; loading at collection time (before any test runs a
# backward) gives the emulated device its queue.
npu_emulator.load()


@pytest.fixture(scope="session")
def npu():
    """The emulated "npu" device (the emulator is compiled on first use)."""
    npu_emulator.load()
    return torch.device("npu", 0)


@pytest.fixture
def strict_npu(npu):
    """Inside the test, fbgemm/torchrec_ascend ops without an NPU kernel raise."""
    npu_emulator.clear_fallback_ops()
    with npu_emulator.strict():
        yield npu
    leaked = [op for op in npu_emulator.fallback_ops() if not op.startswith("aten::")]
    assert not leaked, f"non-ATen ops ran through the host fallback: {leaked}"
