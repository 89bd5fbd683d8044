"""Side streams and events through the device module, whatever the device is.

CUDA (``torch.cuda``) and Ascend (``torch.npu``, registered by torch_npu) expose the
same ``Stream``/``Event``/``stream()``/``current_stream()`` API through
``torch.get_device_module(device)``, so nothing here names a device type. Plain CPU
has no asynchronous streams: every helper degrades to a no-op there and the pipeline
overlaps stages with threads instead.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch


class DeviceStreams:
    """Named side streams of one device, or nothing on a device without streams.

    Args:
        device: the training device.

    Example::

        >>> streams = DeviceStreams(torch.device("cpu"))
        >>> streams.enabled
        False
        >>> with streams.use("copy"):
        ...     pass
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.module: Any = None
        self.enabled = False
        if device.type != "cpu":
            module = torch.get_device_module(device)
            needed = ("Stream", "Event", "stream", "current_stream")
            if all(hasattr(module, name) for name in needed):
                self.module = module
                self.enabled = True
        self._streams: dict[str, Any] = {}
        if self.enabled:
            # Made here, not on first use, because the threads that use them would
            # otherwise race to create them.
            for name in ("copy", "sparse"):
                self._streams[name] = self.module.Stream(device=self.device)

    def stream(self, name: str) -> Any:
        """The side stream called ``name`` (created on first use), or None."""
        if not self.enabled:
            return None
        if name not in self._streams:
            self._streams[name] = self.module.Stream(device=self.device)
        return self._streams[name]

    def use(self, name: str) -> contextlib.AbstractContextManager:
        """Context that makes stream ``name`` current (no-op without streams)."""
        if not self.enabled:
            return contextlib.nullcontext()
        return self.module.stream(self.stream(name))

    def record(self) -> Any:
        """An event recorded on the current stream, or None without streams."""
        if not self.enabled:
            return None
        event = self.module.Event()
        event.record(self.module.current_stream(self.device))
        return event

    def wait(self, event: Any) -> None:
        """Makes the current stream wait for ``event`` (no-op for None)."""
        if event is not None:
            self.module.current_stream(self.device).wait_event(event)

    def keep_alive(self, tensors: list[torch.Tensor]) -> None:
        """Marks tensors made on a side stream as used by the current stream too, so
        the caching allocator does not reuse their memory too early."""
        if not self.enabled:
            return
        current = self.module.current_stream(self.device)
        for t in tensors:
            if t.device.type == self.device.type:
                t.record_stream(current)
