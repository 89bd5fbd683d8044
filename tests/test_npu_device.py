"""Device layer: backend mapping, lazy torch_npu, no hard-coded device names."""

import re
import subprocess
import sys
from pathlib import Path

import npu_fixtures
import pytest
import torch

from torchrec_ascend.device import (
    COLLECTIVE_BACKENDS,
    DeviceSpec,
    collective_backend,
    resolve_device,
)

npu = npu_fixtures.npu

PACKAGE = Path(__file__).resolve().parent.parent / "torchrec_ascend"


@pytest.mark.parametrize(
    "device, backend", [("npu:0", "hccl"), ("cuda:1", "nccl"), ("cpu", "gloo")]
)
def test_collective_backend(device, backend):
    assert collective_backend(device) == backend
    assert COLLECTIVE_BACKENDS[torch.device(device).type] == backend


def test_unknown_backend_is_named():
    with pytest.raises(ValueError, match="'meta'"):
        collective_backend("meta")


def test_cpu_spec_streams_and_events():
    spec = DeviceSpec.of("cpu")
    assert spec.device == torch.device("cpu") and spec.backend == "gloo"
    with spec.stream(spec.new_stream()):
        x = torch.ones(3, device=spec.device)
    event = spec.new_event()
    event.record()
    assert event.query() and float(x.sum()) == 3.0
    spec.synchronize()


def test_npu_spec_on_emulator(npu):
    spec = DeviceSpec.of("npu")
    assert spec.device == torch.device("npu", 0)
    assert spec.backend == "hccl"
    assert spec.module is torch.npu
    with spec.stream(spec.new_stream()):
        y = torch.arange(4, device=spec.device) * 2
    spec.new_event().record()
    spec.synchronize()
    assert y.device.type == "npu" and y.cpu().tolist() == [0, 2, 4, 6]
    assert resolve_device(None).type == "npu"  # a loaded NPU runtime wins


def test_import_does_not_load_torch_npu():
    # A fresh interpreter: importing the whole package (models, train, npu kernels)
    # must not import torch_npu, and asking for an NPU without it must say why.
    code = (
        "import sys, torchrec_ascend, torchrec_ascend.models, torchrec_ascend.train\n"
        "assert 'torch_npu' not in sys.modules, 'torch_npu imported'\n"
        "from torchrec_ascend.device import resolve_device\n"
        "assert resolve_device(None).type == 'cpu'\n"
        "from torchrec_ascend.device import collective_backend\n"
        "assert collective_backend('npu:3') == 'hccl'\n"
        "try:\n"
        "    resolve_device('npu')\n"
        "except RuntimeError as err:\n"
        "    assert 'torch_npu' in str(err), err\n"
        "else:\n"
        "    raise AssertionError('npu resolved without a runtime')\n"
        "assert 'torch_npu' not in sys.modules\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_no_hard_coded_cuda_outside_device_layer():
    pattern = re.compile(r"""["']cuda(:\d+)?["']|\.cuda\(""")
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.parent.name == "device":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line):
                offenders.append(
                    f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}"
                )
    assert not offenders, offenders
