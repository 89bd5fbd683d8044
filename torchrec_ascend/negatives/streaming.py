"""Negative embeddings kept off the compute device and streamed back in segments.

On an accelerator the rows live in pinned host memory and come back one segment of
valid positions at a time on a side stream, so the copy of segment i+1 overlaps the
compute of segment i (double buffering). On the CPU the "host" is the compute
device: segments are views, and only one segment's fp32 working set exists at a time.
"""

from collections.abc import Iterator

import torch


def _is_host(device: torch.device) -> bool:
    return device.type == "cpu"


class NegativeStore:
    """Negative rows held for the segmented loss, in their storage dtype.

    Args:
        rows: (T, R, D) negative embeddings on the compute device.
        storage_dtype: dtype kept (float32, float16 or bfloat16).
        offload: on an accelerator, keep the rows in pinned host memory.

    Attributes:
        rows: (T, R, D) x storage_dtype, on the host when offloaded.
        device: the compute device segments are brought back to.
    """

    def __init__(
        self, rows: torch.Tensor, storage_dtype: torch.dtype, offload: bool
    ) -> None:
        self.device = rows.device
        self.storage_dtype = storage_dtype
        self._ready = None
        rows = rows.detach()
        # The device rows serve the forward pass, which needs no copy back.
        self._source: torch.Tensor | None = rows
        if offload and not _is_host(self.device):
            self.rows, self._ready = _copy_to_pinned_host(rows, storage_dtype)
        elif rows.dtype != storage_dtype:
            self.rows = rows.to(storage_dtype)
        else:
            # fp32 storage on the compute device aliases the lookup output: no copy.
            self.rows = rows

    def forward_segments(
        self, segment_size: int, compute_dtype: torch.dtype
    ) -> Iterator[tuple[int, int, torch.Tensor]]:
        """Like :meth:`segments`, read from the rows still on the device.

        Values are rounded to the storage dtype, so they equal what
        :meth:`segments` yields later. Afterwards the device rows are released.
        """
        source, self._source = self._source, None
        if source is None or source.device != self.device or self.rows is source:
            yield from self.segments(segment_size, compute_dtype)
            return
        for start in range(0, source.shape[0], segment_size):
            stop = min(start + segment_size, source.shape[0])
            segment = source[start:stop].to(self.storage_dtype)
            yield start, stop, segment.to(compute_dtype)

    @property
    def num_positions(self) -> int:
        return int(self.rows.shape[0])

    def segments(
        self, segment_size: int, compute_dtype: torch.dtype
    ) -> Iterator[tuple[int, int, torch.Tensor]]:
        """Yields ``(start, stop, rows[start:stop])`` on the compute device.

        Segments are (stop - start, R, D) x compute_dtype; at most two are alive
        at once (the one in use and the one being prefetched).
        """
        if _is_host(self.rows.device) and not _is_host(self.device):
            yield from _double_buffered(
                self.rows, self.device, segment_size, compute_dtype, self._ready
            )
            return
        for start in range(0, self.num_positions, segment_size):
            stop = min(start + segment_size, self.num_positions)
            yield start, stop, self.rows[start:stop].to(compute_dtype)


# Limitation: the pinned-host copy and the double-buffered side-stream fetch have
# only been exercised without an accelerator (none was available when this was
# written); the CPU tests cover the segment bookkeeping, not the stream ordering.
def _streams_usable(device: torch.device) -> bool:
    """Whether tensors on ``device`` can be tied to its side streams.

    Limitation: a device module whose streams torch cannot record a tensor on (the
    test NPU emulator's stand-ins) falls back to synchronous copies on the current
    stream, without overlap.
    """
    module = torch.get_device_module(device)
    try:
        torch.empty(1, device=device).record_stream(module.Stream(device))
    except (RuntimeError, TypeError):
        return False
    return True


def _copy_to_pinned_host(rows: torch.Tensor, dtype: torch.dtype):
    if not _streams_usable(rows.device):
        return rows.to("cpu", dtype), None
    module = torch.get_device_module(rows.device)
    host = torch.empty(rows.shape, dtype=dtype, pin_memory=True)
    side = module.Stream(rows.device)
    side.wait_stream(module.current_stream(rows.device))
    with module.stream(side):
        # Cast on the device (half the bytes cross the link for fp16), then copy.
        host.copy_(rows.to(dtype), non_blocking=True)
        copied = side.record_event()
    # The rows must not be freed or reused before the copy has read them.
    rows.record_stream(side)
    return host, copied


def _double_buffered(
    host: torch.Tensor,
    device: torch.device,
    segment_size: int,
    compute_dtype: torch.dtype,
    copied,
) -> Iterator[tuple[int, int, torch.Tensor]]:
    if not _streams_usable(device):
        for start in range(0, host.shape[0], segment_size):
            stop = min(start + segment_size, host.shape[0])
            yield start, stop, host[start:stop].to(device, compute_dtype)
        return
    module = torch.get_device_module(device)
    side = module.Stream(device)
    main = module.current_stream(device)
    if copied is not None:
        # The host copy made in the forward pass must be complete before reading it.
        side.wait_event(copied)
    bounds = [
        (start, min(start + segment_size, host.shape[0]))
        for start in range(0, host.shape[0], segment_size)
    ]

    def fetch(index: int):
        start, stop = bounds[index]
        with module.stream(side):
            segment = host[start:stop].to(device, non_blocking=True)
            ready = side.record_event()
        return segment, ready

    pending = fetch(0) if bounds else None
    for index, (start, stop) in enumerate(bounds):
        segment, ready = pending
        if index + 1 < len(bounds):
            pending = fetch(index + 1)
        main.wait_event(ready)
        # Allocated on the side stream, used on the main one.
        segment.record_stream(main)
        yield start, stop, segment.to(compute_dtype)
