"""Negative ids drawn on the host in a background thread, ahead of the step.

The worker pulls batches from the loader, draws negative ids for the batch's valid
(jagged) positions only and queues ``(batch, negative_ids)`` a few steps ahead; the
training step then finds its negatives ready. Per-stage times are kept so one can
check that sampling is off the critical path (``wait_seconds`` stays near zero
while ``sample_seconds`` is spent in the worker).
"""

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch

logger = logging.getLogger(__name__)


def sample_valid_positions(
    lengths: torch.Tensor,
    num_negatives: int,
    num_items: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Uniform negative ids for every valid position of a jagged batch.

    Padding never exists in the jagged layout, so exactly ``sum(lengths)`` rows are
    drawn (a padded ``B x max_len x R`` draw would waste the difference).

    Args:
        lengths: (B,) x int32/int64 valid positions per sequence.
        num_negatives: R.
        num_items: ids are drawn from 1..num_items.
        generator: host RNG.

    Returns:
        (sum(lengths), R) x int64.
    """
    if lengths.dim() != 1:
        raise ValueError(f"lengths must be (B,), got shape {tuple(lengths.shape)}")
    if bool((lengths < 0).any()):
        raise ValueError("lengths must be non-negative")
    num_tokens = int(lengths.sum())
    return torch.randint(
        1, num_items + 1, (num_tokens, num_negatives), generator=generator
    )


@dataclass
class SamplingStats:
    """Per-stage times of a :class:`BackgroundNegativeSampler` (seconds).

    Attributes:
        batches: batches produced.
        load_seconds: worker time fetching batches from the loader.
        sample_seconds: worker time drawing negative ids.
        fill_seconds: consumer time waiting for the first item (the pipeline
            filling once per pass; no overlap is possible there).
        wait_seconds: consumer time blocked waiting for every later item (the
            part of loading and sampling left on the critical path).
        ids: negative ids drawn.
    """

    batches: int = 0
    load_seconds: float = 0.0
    sample_seconds: float = 0.0
    fill_seconds: float = 0.0
    wait_seconds: float = 0.0
    ids: int = 0

    @property
    def ids_per_second(self) -> float:
        return self.ids / self.sample_seconds if self.sample_seconds > 0 else 0.0


_DONE = object()


class BackgroundNegativeSampler:
    """Iterates ``(batch, negative_ids)`` with sampling done by a worker thread.

    Args:
        batches: any iterable of batches (e.g. a training ``DataLoader``).
        sample: draws the negative ids of one batch (called in the worker, in
            batch order, so a seeded generator repeats exactly).
        depth: batches prepared ahead (2: double buffering).

    Example::

        >>> gen = torch.Generator().manual_seed(0)
        >>> sampler = BackgroundNegativeSampler(
        ...     loader, lambda b: sample_valid_positions(b.lengths, 128, 1000, gen))
        >>> for batch, negative_ids in sampler:
        ...     loss = model(batch.features, batch.targets, negative_ids)
    """

    def __init__(
        self,
        batches: Iterable,
        sample: Callable[[object], torch.Tensor],
        depth: int = 2,
    ) -> None:
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self._batches = batches
        self._sample = sample
        self._depth = depth
        self.stats = SamplingStats()

    def __len__(self) -> int:
        return len(self._batches)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[tuple[object, torch.Tensor]]:
        ready: queue.Queue = queue.Queue(maxsize=self._depth)
        stop = threading.Event()
        worker = threading.Thread(
            target=self._work, args=(ready, stop), name="negative-sampler", daemon=True
        )
        worker.start()
        first = True
        try:
            while True:
                start = time.perf_counter()
                item = ready.get()
                waited = time.perf_counter() - start
                if first:
                    self.stats.fill_seconds += waited
                    first = False
                else:
                    self.stats.wait_seconds += waited
                if item is _DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            # Unblock a worker stuck on a full queue, then let it finish.
            while worker.is_alive():
                try:
                    ready.get_nowait()
                except queue.Empty:
                    pass
                worker.join(timeout=0.05)

    def _work(self, ready: queue.Queue, stop: threading.Event) -> None:
        stats = self.stats
        try:
            iterator = iter(self._batches)
            while not stop.is_set():
                start = time.perf_counter()
                try:
                    batch = next(iterator)
                except StopIteration:
                    break
                middle = time.perf_counter()
                negative_ids = self._sample(batch)
                end = time.perf_counter()
                stats.load_seconds += middle - start
                stats.sample_seconds += end - middle
                stats.batches += 1
                stats.ids += negative_ids.numel()
                self._put(ready, stop, (batch, negative_ids))
        except BaseException as error:  # handed to the consumer, raised there
            self._put(ready, stop, error)
            return
        self._put(ready, stop, _DONE)

    @staticmethod
    def _put(ready: queue.Queue, stop: threading.Event, item) -> None:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.05)
                return
            except queue.Full:
                continue
