"""Host stage: pull batches from the data loader, prepare them and copy them to the
device on a background thread, a bounded number of batches ahead."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from torchrec_ascend.pipeline.sparse import SparseModuleStage, SparseWork
from torchrec_ascend.pipeline.streams import DeviceStreams
from torchrec_ascend.pipeline.timeline import COMPUTE, StageTimeline

logger = logging.getLogger(__name__)


@dataclass
class PreparedBatch:
    """A batch ready for the sparse stages: on the device, ids deduplicated."""

    batch: Any
    works: dict[str, SparseWork]
    original_numel: dict[str, int]
    ready_event: Any = None
    is_padding: bool = False


def _move(batch: Any, device: torch.device, non_blocking: bool) -> Any:
    if device.type == "cpu" or batch is None:
        return batch
    return batch.to(device, non_blocking=non_blocking)


class BatchPreparer:
    """Turns a host batch into a :class:`PreparedBatch` (same code on every thread).

    Args:
        prepare: host transform of a loader batch (negative sampling and such).
        sparse_inputs: batch -> {module fqn: KJT fed to that module}.
        stages: the sparse stages by fqn.
        device: training device; batches are copied there.
        streams: side streams (the copy runs on stream "copy" when there are any).
        timeline: where host intervals are recorded.
    """

    def __init__(
        self,
        prepare: Callable[[Any], Any],
        sparse_inputs: Callable[[Any], dict],
        stages: dict[str, SparseModuleStage],
        device: torch.device,
        streams: DeviceStreams,
        timeline: StageTimeline,
    ) -> None:
        self.prepare = prepare
        self.sparse_inputs = sparse_inputs
        self.stages = stages
        self.device = device
        self.streams = streams
        self.timeline = timeline

    def __call__(self, batch: Any, is_padding: bool = False) -> PreparedBatch:
        start = time.perf_counter()
        batch = self.prepare(batch)
        inputs = self.sparse_inputs(batch)
        missing = set(self.stages) - set(inputs)
        if missing:
            raise KeyError(
                f"sparse_inputs returned no KJT for {sorted(missing)}; "
                f"it returned {sorted(inputs)}"
            )
        works = {fqn: self.stages[fqn].prepare(inputs[fqn]) for fqn in self.stages}
        numel = {fqn: int(inputs[fqn].values().numel()) for fqn in self.stages}
        with self.streams.use("copy"):
            batch = _move(batch, self.device, non_blocking=True)
            for work in works.values():
                work.features = _move(work.features, self.device, True)
                if work.plan is not None:
                    work.plan = work.plan.to(self.device, non_blocking=True)
            event = self.streams.record()
        if self.device.type == "cpu":
            # On a CPU device the host work competes for the same cores as training.
            self.timeline.record(COMPUTE, start, time.perf_counter())
        return PreparedBatch(batch, works, numel, event, is_padding)


_END = object()


class HostPrefetcher:
    """Runs a :class:`BatchPreparer` over a loader iterator on a daemon thread.

    Args:
        source: the loader iterator.
        preparer: turns each batch into a PreparedBatch.
        depth: batches prepared ahead (the queue bound).
        device: set as the thread's current device where the device module has one.
    """

    def __init__(
        self,
        source: Iterator[Any],
        preparer: BatchPreparer,
        depth: int,
        device: torch.device,
    ) -> None:
        self.source = source
        self._preparer = preparer
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._device = device
        self.exhausted = False
        self._thread = threading.Thread(
            target=self._run, name="torchrec-ascend-host-prep", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        streams = self._preparer.streams
        if streams.enabled and self._device.index is not None:
            streams.module.set_device(self._device.index)
        try:
            for batch in self.source:
                item = self._preparer(batch)
                while not self._stop.is_set():
                    try:
                        self._queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
            self._put_final(_END)
        except BaseException as error:  # handed to the training thread
            self._put_final(error)

    def _put_final(self, item: Any) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def get(self) -> PreparedBatch | None:
        """The next prepared batch, or None once the loader is exhausted."""
        if self.exhausted:
            return None
        item = self._queue.get()
        if item is _END:
            self.exhausted = True
            return None
        if isinstance(item, BaseException):
            self.exhausted = True
            raise item
        return item

    def drain(self) -> int:
        """Stops the thread; returns how many prepared batches were left unused."""
        left = 0
        while not self.exhausted:
            try:
                item = self._queue.get(timeout=5.0)
            except queue.Empty:
                break
            if item is _END or isinstance(item, BaseException):
                self.exhausted = True
            else:
                left += 1
        self._stop.set()
        self._thread.join(timeout=5.0)
        return left

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)
