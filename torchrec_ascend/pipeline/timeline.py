"""Per-stage timing of a train step: compute, exposed communication and idle.

Every stage of the pipeline records wall-clock intervals tagged ``"compute"`` or
``"comm"`` from whichever thread runs it. A step's time is split by interval union:

* compute = length of the union of compute intervals inside the step;
* exposed communication = length of the union of comm intervals minus the compute
  union (communication that nothing else was hiding);
* idle = the rest of the step (the main thread waited on something neither
  computing nor communicating, e.g. a data loader stall).

The three fractions add up to 1 for every step. This mirrors how the reference design
reports NPU time (computing / communication not overlapped / free).

Limitation: intervals are host wall-clock times. On CPU that is the device's own
time; on CUDA / NPU it is when work was issued and waited for, not when the device ran
it (device events would be needed for that). The dense gradient all-reduce runs inside
the dense backward and is counted as compute.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

COMPUTE = "compute"
COMM = "comm"
KINDS = (COMPUTE, COMM)


def _union(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    merged: list[tuple[float, float]] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _length(intervals: list[tuple[float, float]]) -> float:
    return sum(end - start for start, end in intervals)


def _subtract(
    base: list[tuple[float, float]], cut: list[tuple[float, float]]
) -> list[tuple[float, float]]:
    """Parts of the (merged) ``base`` intervals not covered by (merged) ``cut``."""
    out: list[tuple[float, float]] = []
    j = 0
    for start, end in base:
        cursor = start
        while j < len(cut) and cut[j][1] <= cursor:
            j += 1
        k = j
        while k < len(cut) and cut[k][0] < end:
            if cut[k][0] > cursor:
                out.append((cursor, cut[k][0]))
            cursor = max(cursor, cut[k][1])
            k += 1
        if cursor < end:
            out.append((cursor, end))
    return out


class StageTimeline:
    """Thread-safe recorder of tagged intervals and per-step fractions.

    Example::

        >>> timeline = StageTimeline()
        >>> timeline.begin_step()
        >>> with timeline.span("compute"):
        ...     pass
        >>> timeline.end_step()
        >>> sorted(timeline.fractions())
        ['compute_frac', 'exposed_comm_frac', 'idle_frac']
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._intervals: list[tuple[str, float, float]] = []
        self._step_start: float | None = None
        self.totals = {"step": 0.0, "compute": 0.0, "exposed_comm": 0.0, "comm": 0.0}
        self.steps = 0

    def record(self, kind: str, start: float, end: float) -> None:
        """Adds one interval of ``kind`` ("compute" or "comm"), perf_counter times."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if end > start:
            with self._lock:
                self._intervals.append((kind, start, end))

    @contextmanager
    def span(self, kind: str) -> Iterator[None]:
        """Records the time spent inside the ``with`` block as one interval."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.record(kind, start, time.perf_counter())

    def begin_step(self) -> None:
        self._step_start = time.perf_counter()

    def cancel_step(self) -> None:
        """Forgets the step begun last (its intervals count toward the next one)."""
        self._step_start = None

    def end_step(self) -> dict[str, float]:
        """Closes the step begun last and returns its seconds per category."""
        if self._step_start is None:
            raise RuntimeError("end_step called without begin_step")
        start, end = self._step_start, time.perf_counter()
        self._step_start = None
        with self._lock:
            # Intervals that end before this step are from an earlier step and would
            # otherwise pile up; those reaching past it stay for the next one.
            inside = [iv for iv in self._intervals if iv[2] > start]
            self._intervals = [iv for iv in inside if iv[2] > end]

        def clipped(kind: str) -> list[tuple[float, float]]:
            return _union(
                [(max(s, start), min(e, end)) for k, s, e in inside if k == kind]
            )

        compute = clipped(COMPUTE)
        comm = clipped(COMM)
        step = end - start
        seconds = {
            "step": step,
            "compute": _length(compute),
            "exposed_comm": _length(_subtract(comm, compute)),
            "comm": _length(comm),
        }
        for key, value in seconds.items():
            self.totals[key] += value
        self.steps += 1
        return seconds

    def fractions(self) -> dict[str, float]:
        """Fractions of all recorded step time: compute, exposed comm and idle."""
        step = self.totals["step"]
        if step <= 0:
            return {"compute_frac": 0.0, "exposed_comm_frac": 0.0, "idle_frac": 0.0}
        compute = self.totals["compute"] / step
        exposed = self.totals["exposed_comm"] / step
        return {
            "compute_frac": compute,
            "exposed_comm_frac": exposed,
            "idle_frac": max(0.0, 1.0 - compute - exposed),
        }

    def summary(self) -> dict[str, float]:
        """Fractions plus total comm fraction (hidden or not) and step count."""
        out = self.fractions()
        step = self.totals["step"]
        out["comm_frac"] = self.totals["comm"] / step if step > 0 else 0.0
        out["steps"] = self.steps
        out["step_seconds"] = step
        return out
