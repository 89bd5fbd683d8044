"""Runs an iterator one or more items ahead in a background thread.

The balancing plan of step i+1 (exchange of lengths, partition, collation) is built
while step i trains. The heavy parts of a training step run in torch kernels that
release the GIL, so the planning thread really overlaps them; ``wait_seconds`` says
how long the consumer still had to wait, which is ~0 when the overlap is complete.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")

_DONE = object()


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


class Prefetcher(Generic[T]):
    """Iterates ``source`` in a daemon thread, keeping up to ``depth`` items ready.

    Args:
        source: Any iterable; it is consumed only by the background thread.
        depth: Items produced ahead of the consumer, >= 1.

    Attributes:
        produce_seconds: Time the thread spent producing each item.
        wait_seconds: Time the consumer blocked waiting for each item.

    Example::

        >>> with Prefetcher(range(3)) as items:
        ...     list(items)
        [0, 1, 2]
    """

    def __init__(self, source: Iterable[T], depth: int = 1) -> None:
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self.produce_seconds: list[float] = []
        self.wait_seconds: list[float] = []
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(iter(source),), daemon=True
        )
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, source: Iterator[T]) -> None:
        try:
            while True:
                start = time.perf_counter()
                try:
                    item = next(source)
                except StopIteration:
                    break
                self.produce_seconds.append(time.perf_counter() - start)
                if not self._put(item):
                    return
        except BaseException as error:  # re-raised in the consumer
            self._put(_Failure(error))
            return
        self._put(_DONE)

    def __iter__(self) -> Iterator[T]:
        while True:
            start = time.perf_counter()
            item = self._queue.get()
            self.wait_seconds.append(time.perf_counter() - start)
            if item is _DONE:
                self.wait_seconds.pop()
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item

    def close(self) -> None:
        """Stops the thread (it may be blocked in ``source`` until that returns)."""
        self._stop.set()
        self._thread.join(timeout=5.0)

    def __enter__(self) -> Prefetcher[T]:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
