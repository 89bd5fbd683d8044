"""Device layer: which device, which stream/event API, which collective backend.

Every device-dependent decision in torchrec_ascend goes through here, so no other
module names "cuda" or "npu". torch_npu is imported lazily, the first time an NPU is
asked for.
"""

from torchrec_ascend.device.runtime import (
    COLLECTIVE_BACKENDS,
    CPU,
    CUDA,
    NPU,
    ensure_npu_runtime,
    npu_available,
    npu_runtime_loaded,
)
from torchrec_ascend.device.spec import (
    DeviceSpec,
    collective_backend,
    device_type,
    resolve_device,
)

__all__ = [
    "COLLECTIVE_BACKENDS",
    "CPU",
    "CUDA",
    "NPU",
    "DeviceSpec",
    "collective_backend",
    "device_type",
    "ensure_npu_runtime",
    "npu_available",
    "npu_runtime_loaded",
    "resolve_device",
]
