"""One answer to "which device, which stream/event API, which collective backend"."""

import contextlib
import dataclasses
import types

import torch

from torchrec_ascend.device.runtime import (
    COLLECTIVE_BACKENDS,
    NPU,
    ensure_npu_runtime,
    npu_available,
)


def device_type(device: str | torch.device) -> str:
    """ "npu" for "npu:1", also before any NPU runtime taught torch that name."""
    return device.split(":")[0] if isinstance(device, str) else device.type


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """Turns a user's device choice into a ``torch.device`` with an index.

    Args:
        device: "npu", "npu:1", "cuda", "cpu", a ``torch.device``, or None for the
            best loaded accelerator (an NPU only if its runtime is already loaded,
            then CUDA, then CPU).

    Returns:
        The device; accelerators get the current index when none was given.

    Raises:
        RuntimeError: the device type's runtime is missing or has no device.
    """
    if device is None:
        if npu_available():
            device = NPU
        elif torch.cuda.is_available():
            device = "cuda"
        else:
            device = "cpu"
    kind = device_type(device)
    if kind in (NPU, "privateuseone"):
        # torch only parses "npu" once a runtime has renamed PrivateUse1 to it.
        module = ensure_npu_runtime()
        if not module.is_available():
            raise RuntimeError("device 'npu' was asked for but torch.npu has no device")
        device = torch.device(device) if isinstance(device, str) else device
        index = module.current_device() if device.index is None else device.index
        return torch.device(NPU, index)
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' was asked for but CUDA is not available")
        index = torch.cuda.current_device() if device.index is None else device.index
        return torch.device("cuda", index)
    return device


def collective_backend(device: str | torch.device) -> str:
    """torch.distributed backend of a device: npu -> hccl, cuda -> nccl, cpu -> gloo.

    Raises:
        ValueError: no collective backend is known for the device type.
    """
    kind = device_type(device)
    if kind not in COLLECTIVE_BACKENDS:
        raise ValueError(
            f"no collective backend for device type {kind!r}; "
            f"expected one of {sorted(COLLECTIVE_BACKENDS)}"
        )
    return COLLECTIVE_BACKENDS[kind]


class _ImmediateEvent:
    """Event for devices that run synchronously: always complete."""

    def record(self, stream=None) -> None:
        pass

    def wait(self, stream=None) -> None:
        pass

    def synchronize(self) -> None:
        pass

    def query(self) -> bool:
        return True


@dataclasses.dataclass(frozen=True)
class DeviceSpec:
    """A resolved device with its runtime module and collective backend.

    Attributes:
        device: the ``torch.device`` (with index for accelerators).
        backend: torch.distributed backend name ("hccl", "nccl" or "gloo").

    Example::

        >>> spec = DeviceSpec.of("cpu")
        >>> spec.backend
        'gloo'
        >>> with spec.stream(spec.new_stream()):
        ...     x = torch.ones(3, device=spec.device)
    """

    device: torch.device
    backend: str

    @classmethod
    def of(cls, device: str | torch.device | None = None) -> "DeviceSpec":
        resolved = resolve_device(device)
        return cls(resolved, collective_backend(resolved))

    @property
    def type(self) -> str:
        return self.device.type

    @property
    def module(self) -> types.ModuleType:
        """``torch.npu``, ``torch.cuda`` or ``torch.cpu``: streams, events, sync."""
        return torch.get_device_module(self.device)

    def synchronize(self) -> None:
        if self.type != "cpu":
            self.module.synchronize(self.device)

    def current_stream(self):
        if self.type == "cpu":
            return self.module.current_stream()
        return self.module.current_stream(self.device)

    def new_stream(self):
        if self.type == "cpu":
            return self.module.Stream()
        return self.module.Stream(device=self.device)

    def new_event(self, enable_timing: bool = False):
        if self.type == "cpu":
            return _ImmediateEvent()
        return self.module.Event(enable_timing=enable_timing)

    def stream(self, stream) -> contextlib.AbstractContextManager:
        """Context manager making ``stream`` current (a no-op scope on CPU)."""
        if self.type == "cpu" or stream is None:
            return contextlib.nullcontext()
        return self.module.stream(stream)
