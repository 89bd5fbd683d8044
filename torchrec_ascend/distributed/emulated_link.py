"""Gives collectives the cost of a slower network link, for benchmarks on one machine.

Ranks that talk over loopback move bytes at memory speed, so a loop that hides
communication behind compute cannot show it there. :class:`EmulatedLink` makes every
collective issued through ``torch.distributed`` (the functions TorchRec's sharded
modules and our pipeline call) complete no earlier than a modelled link would deliver
it: ``latency + bytes_sent / bandwidth``, with one link per process that carries
transfers one after another. The real gloo collective still runs and produces the
result; only its completion is held back, by sleeping, so the waiting costs no CPU and
other work (the dense step, another rank) runs meanwhile, as it would while a NIC
moves the data. DDP's gradient all-reduce runs in C++ and bypasses these functions;
:meth:`EmulatedLink.ddp_comm_hook` charges it the same way.

Bytes sent per rank follow :mod:`torchrec_ascend.distributed.collective_bytes` (the
model CommCounter counts with).

Example::

    >>> link = EmulatedLink(gbit_per_s=10.0, latency_us=30.0)
    >>> with link:
    ...     train()  # every collective now costs what it would on a 10 Gbit/s link
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist

from torchrec_ascend.distributed.collective_bytes import COLLECTIVES, bind_call, sends

logger = logging.getLogger(__name__)


class _DelayedWork(dist.Work):
    """A ``dist.Work`` whose ``wait`` also waits for the modelled link (a subclass,
    because callers such as TorchRec's input dist test ``isinstance(w, dist.Work)``
    before waiting)."""

    def __init__(self, work: Any, ready_at: float) -> None:
        super().__init__()
        self._work = work
        self._ready_at = ready_at

    def wait(self, timeout: Any = None) -> bool:
        if self._work is not None:
            self._work.wait() if timeout is None else self._work.wait(timeout)
        _sleep_until(self._ready_at)
        return True

    def is_completed(self) -> bool:
        inner = self._work is None or self._work.is_completed()
        return inner and time.perf_counter() >= self._ready_at

    def get_future(self) -> torch.futures.Future:
        inner = self._work.get_future()
        ready_at = self._ready_at

        def delayed(fut: torch.futures.Future) -> Any:
            _sleep_until(ready_at)
            return fut.value()

        return inner.then(delayed)

    def exception(self) -> Any:
        return self._work.exception()


def _sleep_until(deadline: float) -> None:
    left = deadline - time.perf_counter()
    if left > 0:
        time.sleep(left)


class EmulatedLink:
    """Holds back collectives to the completion time of a modelled network link.

    Args:
        gbit_per_s: link bandwidth per rank, in Gbit/s (> 0).
        latency_us: fixed cost of every collective, in microseconds (>= 0).
        groups: only collectives on these process groups are charged (None: every
            group; the default group is passed to the check as None).
    """

    def __init__(
        self,
        gbit_per_s: float,
        latency_us: float = 0.0,
        groups: list[Any] | None = None,
    ) -> None:
        for name, value, low in (
            ("gbit_per_s", gbit_per_s, 0.0),
            ("latency_us", latency_us, None),
        ):
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
                or (value <= low if low is not None else value < 0)
            ):
                bound = "> 0" if low is not None else ">= 0"
                raise ValueError(
                    f"{name} must be a finite number {bound}, got {value!r}"
                )
        self.bytes_per_s = gbit_per_s * 1e9 / 8
        self.latency_s = latency_us * 1e-6
        self._groups = None if groups is None else {id(g) for g in groups}
        self._lock = threading.Lock()
        self._free_at = 0.0
        self._originals: dict[str, Callable] = {}
        self.stats = {"collectives": 0, "bytes": 0, "link_seconds": 0.0}

    # -- the model ------------------------------------------------------------------

    def charge(self, nbytes: int) -> float:
        """Books ``nbytes`` on the link now.

        Returns:
            When they are delivered, on the ``time.perf_counter()`` clock.
        """
        cost = self.latency_s + nbytes / self.bytes_per_s
        with self._lock:
            start = max(time.perf_counter(), self._free_at)
            self._free_at = start + cost
            self.stats["collectives"] += 1
            self.stats["bytes"] += nbytes
            self.stats["link_seconds"] += cost
            return self._free_at

    def _charged(self, group: Any) -> bool:
        return self._groups is None or id(group) in self._groups

    def _wrap(self, name: str, original: Callable) -> Callable:
        def collective(*args: Any, **kwargs: Any) -> Any:
            call = bind_call(original, args, kwargs)
            if not self._charged(call.get("group")):
                return original(*args, **kwargs)
            ready_at = self.charge(sum(b for _, b in sends(name, call)))
            work = original(*args, **kwargs)
            if call.get("async_op", False):
                return _DelayedWork(work, ready_at)
            _sleep_until(ready_at)
            return work

        collective.__name__ = name
        collective.__dict__["_emulated_link"] = self
        return collective

    # -- install / remove ------------------------------------------------------------

    def install(self) -> EmulatedLink:
        """Patches ``torch.distributed``'s collectives in this process."""
        if self._originals:
            raise RuntimeError("this EmulatedLink is already installed")
        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError(
                "EmulatedLink.install() needs an initialized default process group "
                "(torch.distributed.init_process_group)"
            )
        for name in COLLECTIVES:
            original = getattr(dist, name)
            if hasattr(original, "_emulated_link"):
                raise RuntimeError(
                    f"torch.distributed.{name} is already wrapped by another link; "
                    "uninstall it (EmulatedLink.uninstall_all() if it is lost)"
                )
            self._originals[name] = original
            setattr(dist, name, self._wrap(name, original))
        logger.info(
            "emulated link: %.1f Gbit/s, %.0f us per collective",
            self.bytes_per_s * 8 / 1e9,
            self.latency_s * 1e6,
        )
        return self

    def uninstall(self) -> None:
        for name, original in self._originals.items():
            setattr(dist, name, original)
        self._originals.clear()

    @staticmethod
    def uninstall_all() -> int:
        """Restores every collective any EmulatedLink wrapped (for links whose object
        was lost without ``uninstall``); returns how many were restored."""
        restored = 0
        for name in COLLECTIVES:
            current = getattr(dist, name)
            link = current.__dict__.get("_emulated_link")
            if link is not None:
                setattr(dist, name, link._originals.pop(name))
                restored += 1
        return restored

    def __enter__(self) -> EmulatedLink:
        return self.install()

    def __exit__(self, *exc: Any) -> None:
        self.uninstall()

    # -- DDP ------------------------------------------------------------------------

    def ddp_comm_hook(self, group: Any = None) -> Callable:
        """A DDP comm hook that averages gradients over ``group`` and charges the
        ring all-reduce's bytes to this link (``ddp.register_comm_hook(None, hook)``).
        """
        original = self._originals.get("all_reduce", dist.all_reduce)

        def hook(_: Any, bucket: Any) -> torch.futures.Future:
            buffer = bucket.buffer()
            call = {"tensor": buffer, "group": group}
            ready_at = self.charge(sum(b for _, b in sends("all_reduce", call)))
            buffer.div_(dist.get_world_size(group))
            fut = original(buffer, group=group, async_op=True).get_future()

            def done(f: torch.futures.Future) -> torch.Tensor:
                _sleep_until(ready_at)
                return f.value()[0]

            return fut.then(done)

        # DDP checks the hook's annotations as objects; this module's are strings.
        hook.__annotations__ = {
            "bucket": dist.GradBucket,
            "return": torch.futures.Future[torch.Tensor],
        }
        return hook
