"""A pipelined, optionally semi-asynchronous train loop for TorchRec models.

:class:`TrainPipeline` has TorchRec's ``progress(dataloader_iter)`` interface, so it
replaces ``TrainPipelineSparseDist`` in an existing loop. One step runs six stages:

1. host batch preparation (loader, negative ids, id dedup) -- host thread;
2. host-to-device copy -- host thread, on a "copy" side stream where the device has
   streams;
3. input distribution (KJT all-to-all) -- sparse worker thread;
4. embedding forward (lookup + output all-to-all) -- sparse worker thread;
5. dense forward / backward / optimizer step -- the calling thread;
6. embedding backward and update (gradient all-to-all, fused or local optimizer) --
   sparse worker thread.

Streams come from ``torch.get_device_module(device)`` (CUDA, Ascend NPU through
torch_npu, ...). On CPU, where there are no streams, stages overlap through the two
background threads and through asynchronous collectives (gloo all-to-alls run in gloo's
own threads while the Python thread that issued them goes on).

Modes:

* ``"plain"``: no pipelining at all, the reference: forward, backward, step.
* ``"sync"``: the stages overlap but the math is the plain loop's: the lookup of batch
  i+1 waits for the sparse update of batch i. Losses equal the plain loop's.
* ``"semi-async"``: the sparse part runs one step ahead of the dense part. The lookup
  of batch i+1 is issued before the sparse update of batch i, so it reads rows that miss
  exactly that one update (delay tau = 1, never more: the update of batch i-1 is always
  applied first). The dense part stays synchronous. This lets the dense backward of
  batch i overlap the lookup and output all-to-all of batch i+1, and the dense forward
  of batch i+1 overlap the gradient all-to-all and update of batch i.

Convergence of semi-async mode. With a delay tau on the embedding updates, SGD-type
training keeps the rate of synchronous SGD up to an additive delay term:
(1/T) sum_t E||grad f(w_t)||^2 <= O(sqrt(L) sigma / sqrt(T) + L / T + alpha L tau / T),
where L is the gradient's Lipschitz constant, sigma bounds the gradient noise and alpha
is the probability that two consecutive steps touch the same embedding row (sparse id
overlap between steps). The extra term is small when (a) the delay is bounded --
here exactly 1 -- and (b) consecutive batches share few ids (alpha << 1). Rows that are
hit in every step (very popular items, shared negatives drawn from a small catalogue)
make alpha large, and then semi-async mode can cost accuracy; measure against ``"sync"``
with the same seeds before relying on it. Dense parameters see no delay.

Uneven data. With several ranks, every step first agrees across ranks (one small
all-reduce on the sparse process group) on whether each rank still has a batch. Ranks
that ran out execute a padding batch (``pad_batch``) while others finish theirs, so no
batch is dropped and no collective is left unmatched; without ``pad_batch`` all ranks
stop together at the first rank's end and the unexecuted batches are counted in
``stats["dropped_batches"]`` and logged as a warning.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from torchrec_ascend.pipeline.host import BatchPreparer, HostPrefetcher, PreparedBatch
from torchrec_ascend.pipeline.model_io import (
    default_forward,
    find_sparse_modules,
    only_kjt_field,
    split_output,
)
from torchrec_ascend.pipeline.setup_checks import (
    agreement_group,
    check_local_tables_not_in,
    check_separate_dense_group,
)
from torchrec_ascend.pipeline.sparse import SparseModuleStage
from torchrec_ascend.pipeline.streams import DeviceStreams
from torchrec_ascend.pipeline.timeline import COMPUTE, StageTimeline

logger = logging.getLogger(__name__)

MODES = ("plain", "sync", "semi-async")

# Limitation: the stream path (CUDA / NPU) follows the device-module API but was not
# run on an accelerator in this project's sessions (CPU-only machines); only the CPU
# path (threads + gloo) is tested.


@dataclass
class _Step:
    """One batch in flight: prepared input, its sparse futures and status."""

    prepared: PreparedBatch | None
    dist_future: Future | None = None
    lookup_future: Future | None = None
    backward_future: Future | None = None
    outputs: dict[str, Any] = field(default_factory=dict)


_STOP = "stop"
_ABORT_WAIT_S = 30.0


class TrainPipeline:
    """Pipelined train loop with TorchRec's ``progress(dataloader_iter)`` interface.

    Args:
        model: a TorchRec model (DMP-sharded or local) whose embedding modules are
            EmbeddingCollection / EmbeddingBagCollection (sharded or not).
        optimizer: steps the dense parameters after each dense backward.
        device: training device.
        mode: "plain", "sync" or "semi-async".
        sparse_optimizer: steps local (unsharded) embedding tables after each sparse
            backward; sharded tables use their fused optimizer and need none.
        prepare: host transform of each loader batch (e.g. negative sampling); runs
            on the host thread.
        sparse_inputs: prepared batch -> {module name: KJT}, or a KJT when the model
            has one embedding module; default: the batch's only KJT attribute.
        forward: (model, device batch) -> loss or (loss, output); default
            ``model(batch)``.
        pad_batch: host batch run by ranks whose loader ended while others go on.
        dedup: look each distinct id up once per table (sequence collections).
        process_group: group for the per-step agreement on uneven data; default the
            sharded modules' group, else the world.
        prefetch: batches the host thread prepares ahead.
        sparse_thread: run the sparse stages on a worker thread; default: in
            semi-async mode and on devices with streams, inline (single-threaded,
            with asynchronous all-to-alls) for sync mode on CPU.
        learning_rate: step index (0, 1, ... over this pipeline's steps) -> the
            learning rate of that step's updates. The dense rate is set before the
            dense step; the sparse rate is set on the sparse thread right before that
            batch's sparse update, so a schedule stays exact when the update of batch
            i runs during step i+1. None keeps the optimizers' own rates. Sharded
            tables' fused optimizers keep their configured rate.

    Example::

        >>> pipeline = TrainPipeline(model, dense_opt, torch.device("cpu"), "sync",
        ...                          sparse_optimizer=sparse_opt)
        >>> it = iter(loader)
        >>> while True:
        ...     try:
        ...         loss = pipeline.progress(it)
        ...     except StopIteration:
        ...         break
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        device: torch.device,
        mode: str = "sync",
        *,
        sparse_optimizer: torch.optim.Optimizer | None = None,
        prepare: Callable[[Any], Any] | None = None,
        sparse_inputs: Callable[[Any], Any] | None = None,
        forward: Callable[[nn.Module, Any], Any] | None = None,
        pad_batch: Any = None,
        dedup: bool = True,
        process_group: Any = None,
        prefetch: int = 2,
        sparse_thread: bool | None = None,
        learning_rate: Callable[[int], float] | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if prefetch < 1:
            raise ValueError(f"prefetch must be >= 1 batch, got {prefetch}")
        self.model = model
        self.optimizer = optimizer
        self.device = torch.device(device)
        self.mode = mode
        self.sparse_optimizer = sparse_optimizer
        self.forward = forward or default_forward
        self.pad_batch = pad_batch
        self.prefetch = prefetch
        self.learning_rate = learning_rate
        self._steps_run = 0
        # A worker thread lets the sparse backward and the next lookup run during
        # the dense step; sync mode on a streamless device has little to overlap that
        # the asynchronous all-to-alls do not already hide, and there the thread
        # handoffs cost more than they save.
        if sparse_thread is None:
            sparse_thread = mode == "semi-async" or DeviceStreams(device).enabled
        self.sparse_thread = sparse_thread
        self.timeline = StageTimeline()
        self.streams = DeviceStreams(self.device)
        self.stats = {"batches": 0, "padding_batches": 0, "dropped_batches": 0}

        modules = find_sparse_modules(model)
        if not modules:
            raise ValueError("the model has no EmbeddingCollection / BagCollection")
        self.stages = {
            name: SparseModuleStage(name, m, self.timeline, dedup)
            for name, m in modules.items()
        }
        self._sparse_inputs = self._wrap_sparse_inputs(sparse_inputs)
        self._preparer = BatchPreparer(
            prepare or (lambda b: b),
            self._sparse_inputs,
            self.stages,
            self.device,
            self.streams,
            self.timeline,
        )
        self._group = agreement_group(self.stages, process_group)
        if mode != "plain":
            if self.sparse_thread:
                check_separate_dense_group(model, self.stages)
            check_local_tables_not_in(optimizer, self.stages, sparse_optimizer)
            for stage in self.stages.values():
                stage.install()
        self._worker: ThreadPoolExecutor | None = None
        self._host: HostPrefetcher | None = None
        self._inflight: deque[_Step] = deque()
        self._stopped = False
        self._last_backward: Future | None = None

    # -- setup -----------------------------------------------------------------------

    def _wrap_sparse_inputs(self, fn: Callable[[Any], Any] | None) -> Callable:
        names = list(self.stages)

        def sparse_inputs(batch: Any) -> dict:
            result = fn(batch) if fn is not None else only_kjt_field(batch)
            if isinstance(result, KeyedJaggedTensor):
                if len(names) != 1:
                    raise ValueError(
                        f"the model has {len(names)} embedding modules {names}; "
                        "sparse_inputs must return a dict by module name"
                    )
                return {names[0]: result}
            return result

        return sparse_inputs

    def _start(self, dataloader_iter: Iterator[Any]) -> None:
        if self._worker is None and self.sparse_thread:
            self._worker = ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="torchrec-ascend-sparse"
            )
            if self.streams.enabled and self.device.index is not None:
                self._worker.submit(self.streams.module.set_device, self.device.index)
        self._host = HostPrefetcher(
            dataloader_iter, self._preparer, self.prefetch, self.device
        )
        self._stopped = False

    # -- sparse tasks (worker thread, in submission order) -----------------------------

    def _agree(self, has_batch: bool) -> tuple[bool, bool]:
        """(any rank has a batch, every rank has one)."""
        if self._group is None:
            return has_batch, has_batch
        on_device = dist.get_backend(self._group) != "gloo"
        flags = torch.tensor([int(has_batch), 1 - int(has_batch)])
        if on_device:
            flags = flags.to(self.device)
        dist.all_reduce(flags, op=dist.ReduceOp.MAX, group=self._group)
        any_has, any_missing = (int(v) for v in flags.cpu())
        return bool(any_has), not bool(any_missing)

    def _dist_task(self, step: _Step) -> Any:
        with self.streams.use("sparse"):
            any_has, all_have = self._agree(step.prepared is not None)
            if not any_has or (not all_have and self.pad_batch is None):
                return _STOP
            if step.prepared is None:
                step.prepared = self._preparer(self.pad_batch, is_padding=True)
            self.streams.wait(step.prepared.ready_event)
            for fqn, stage in self.stages.items():
                stage.start_input_dist(step.prepared.works[fqn])
            return None

    def _lookup_task(self, step: _Step) -> Any:
        if step.dist_future is None or step.dist_future.result() is _STOP:
            return _STOP
        with self.streams.use("sparse"):
            for fqn, stage in self.stages.items():
                stage.finish_input_dist(step.prepared.works[fqn])
            outputs = {
                fqn: stage.lookup(step.prepared.works[fqn])
                for fqn, stage in self.stages.items()
            }
            event = self.streams.record()
        return outputs, event

    # Limitation: the schedule reaches `optimizer` and `sparse_optimizer` only; the
    # fused optimizers inside sharded tables (FBGEMM) keep the rate they were built
    # with, because they apply updates inside the embedding backward.
    def _rate(self) -> float | None:
        """This step's learning rate, or None to keep the optimizers' own."""
        if self.learning_rate is None:
            return None
        rate = self.learning_rate(self._steps_run)
        if (
            isinstance(rate, bool)
            or not isinstance(rate, (int, float))
            or not math.isfinite(rate)
            or rate < 0
        ):
            raise ValueError(
                f"learning_rate({self._steps_run}) must return a finite float >= 0, "
                f"got {rate!r}"
            )
        return float(rate)

    @staticmethod
    def _set_rate(optimizer: torch.optim.Optimizer | None, rate: float | None) -> None:
        if optimizer is None or rate is None:
            return
        for group in optimizer.param_groups:
            group["lr"] = rate

    def _backward_task(self, step: _Step, grads_ready: Any, rate: float | None) -> None:
        with self.streams.use("sparse"):
            self.streams.wait(grads_ready)
            self.streams.keep_alive(
                [
                    leaf.grad
                    for work in step.prepared.works.values()
                    for leaf in work.leaves
                    if leaf.grad is not None
                ]
            )
            for fqn, stage in self.stages.items():
                stage.backward(step.prepared.works[fqn])
            if self.sparse_optimizer is not None:
                self._set_rate(self.sparse_optimizer, rate)
                with self.timeline.span(COMPUTE):
                    self.sparse_optimizer.step()
                    self.sparse_optimizer.zero_grad(set_to_none=True)

    def _submit(self, fn: Callable, *args: Any) -> Future:
        if self._worker is None:
            # Inline: run now on this thread, in the same order a worker would.
            future: Future = Future()
            try:
                future.set_result(fn(*args))
            except BaseException as error:
                future.set_exception(error)
            return future
        return self._worker.submit(fn, *args)

    # -- main thread -------------------------------------------------------------------

    def _enqueue_next(self) -> _Step:
        """Takes the next host batch (or None at its end) and starts its input dist."""
        assert self._host is not None
        prepared = self._host.get()
        step = _Step(prepared)
        step.dist_future = self._submit(self._dist_task, step)
        self._inflight.append(step)
        return step

    def _finish(self, reason: str = "another rank's data ended first") -> None:
        """Waits for every submitted sparse task; notes unexecuted local batches."""
        for step in self._inflight:
            for future in (step.dist_future, step.lookup_future, step.backward_future):
                if future is not None:
                    future.result()
        if self._last_backward is not None:
            self._last_backward.result()
            self._last_backward = None
        leftover = sum(
            1
            for s in self._inflight
            if s.prepared is not None and not s.prepared.is_padding
        )
        self._inflight.clear()
        if self._host is not None:
            leftover += self._host.drain()
            self._host = None
        if leftover:
            self.stats["dropped_batches"] += leftover
            logger.warning(
                "%d prepared local batches were not executed (%s)",
                leftover,
                reason,
            )
        self._stopped = True

    def progress(self, dataloader_iter: Iterator[Any]) -> Any:
        """Runs one train step; returns the forward output (None for a padding step).

        Raises:
            StopIteration: when every rank's data is used up (all sparse updates are
                applied before it is raised).
        """
        if self.mode == "plain":
            return self._progress_plain(dataloader_iter)
        if self._host is None or self._host.source is not dataloader_iter:
            if self._inflight:
                raise RuntimeError(
                    "progress got a new iterator while batches of the previous one "
                    "are in flight; call flush() first"
                )
            self._start(dataloader_iter)
        self.timeline.begin_step()
        try:
            result = self._progress_pipelined()
        except StopIteration:
            # The call that finds the data exhausted trains nothing: not a step.
            self.timeline.cancel_step()
            raise
        except BaseException:
            self.timeline.cancel_step()
            self._abort()
            raise
        self.timeline.end_step()
        return result

    def _progress_pipelined(self) -> Any:
        if self._stopped:
            raise StopIteration
        if not self._inflight:
            first = self._enqueue_next()
            first.lookup_future = self._submit(self._lookup_task, first)
            self._enqueue_next()
        previous = self._last_backward
        if previous is not None and previous.done() and previous.exception():
            previous.result()
        step = self._inflight[0]
        looked_up = step.lookup_future.result()
        if looked_up is _STOP:
            self._finish()
            raise StopIteration
        outputs, event = looked_up
        # Every step enqueues one batch (or the end marker) and retires one, so the
        # next batch is always in flight here.
        following = self._inflight[1]
        if self.mode == "semi-async":
            # Issued before this batch's sparse update: reads rows one update old.
            following.lookup_future = self._submit(self._lookup_task, following)
            self._enqueue_next()

        ready = following.dist_future
        issued = ready is not None and ready.done() and ready.result() is None
        result = self._dense_step(step, outputs, event, following if issued else None)

        grads_ready = self.streams.record()
        rate = self._rate()
        step.backward_future = self._submit(
            self._backward_task, step, grads_ready, rate
        )
        self._last_backward = step.backward_future
        if self.mode == "sync":
            following.lookup_future = self._submit(self._lookup_task, following)
            self._enqueue_next()
        self._set_rate(self.optimizer, rate)
        with self.timeline.span(COMPUTE):
            self.optimizer.step()
        self._inflight.popleft()
        self._steps_run += 1
        return result

    def _dense_step(
        self, step: _Step, outputs: dict, event: Any, following: _Step | None
    ) -> Any:
        prepared = step.prepared
        assert prepared is not None
        self.streams.wait(prepared.ready_event)
        self.streams.wait(event)
        self.streams.keep_alive(
            [leaf for work in prepared.works.values() for leaf in work.leaves]
        )
        for fqn, stage in self.stages.items():
            stage.set_current(prepared.works[fqn], prepared.original_numel[fqn])
        try:
            with self.timeline.span(COMPUTE):
                self.optimizer.zero_grad(set_to_none=True)
                loss, output = split_output(self.forward(self.model, prepared.batch))
            if following is not None and self._worker is None:
                # Single thread: issue the next batch's id all-to-all now, so it
                # travels during this backward (a worker thread does it by itself).
                for fqn, stage in self.stages.items():
                    stage.advance_input_dist(following.prepared.works[fqn])
            with self.timeline.span(COMPUTE):
                loss.backward()
        finally:
            for stage in self.stages.values():
                stage.set_current(None, None)
        if prepared.is_padding:
            self.stats["padding_batches"] += 1
            return None
        self.stats["batches"] += 1
        return output

    # Limitation: the plain loop is timed as one compute span: its collectives run
    # inside the model's forward/backward where this loop cannot see them.
    def _progress_plain(self, dataloader_iter: Iterator[Any]) -> Any:
        self.timeline.begin_step()
        done = False
        try:
            with self.timeline.span(COMPUTE):
                try:
                    batch = next(dataloader_iter)
                except StopIteration:
                    batch = None
                any_has, all_have = self._agree(batch is not None)
                if not any_has or (not all_have and self.pad_batch is None):
                    if batch is not None:
                        self.stats["dropped_batches"] += 1 + sum(
                            1 for _ in dataloader_iter
                        )
                        logger.warning(
                            "another rank's data ended first and no pad_batch was "
                            "given: %d local batches were not executed",
                            self.stats["dropped_batches"],
                        )
                    raise StopIteration
                padding = batch is None
                batch = self._preparer.prepare(self.pad_batch if padding else batch)
                batch = batch if self.device.type == "cpu" else batch.to(self.device)
                self.optimizer.zero_grad(set_to_none=True)
                if self.sparse_optimizer is not None:
                    self.sparse_optimizer.zero_grad(set_to_none=True)
                loss, output = split_output(self.forward(self.model, batch))
                loss.backward()
                rate = self._rate()
                self._set_rate(self.optimizer, rate)
                self._set_rate(self.sparse_optimizer, rate)
                self.optimizer.step()
                if self.sparse_optimizer is not None:
                    self.sparse_optimizer.step()
            done = True
            self._steps_run += 1
        finally:
            if done:
                self.timeline.end_step()
            else:
                self.timeline.cancel_step()
        if padding:
            self.stats["padding_batches"] += 1
            return None
        self.stats["batches"] += 1
        return output

    # -- lifecycle ---------------------------------------------------------------------

    def _abort(self) -> None:
        """After an error: waits for the sparse tasks (their own errors are dropped,
        the caller's error is the one that propagates) and stops the host thread, so
        no thread outlives a failed pipeline. Batches in flight are dropped."""
        futures = [
            f
            for step in self._inflight
            for f in (step.dist_future, step.lookup_future, step.backward_future)
            if f is not None
        ]
        if self._last_backward is not None:
            futures.append(self._last_backward)
            self._last_backward = None
        # Bounded: a task stuck in a collective with a failed peer must not turn
        # the error into a hang.
        wait(futures, timeout=_ABORT_WAIT_S)
        self._inflight.clear()
        if self._host is not None:
            self._host.close()
            self._host = None

    def flush(self) -> None:
        """Applies every pending sparse update and forgets batches in flight."""
        if self.mode != "plain":
            self._finish("flush() or detach() came before the data ended")
            self._stopped = False

    def fractions(self) -> dict[str, float]:
        """Compute / exposed communication / idle fractions of all steps so far."""
        return self.timeline.fractions()

    def detach(self) -> nn.Module:
        """Restores the embedding modules' own forwards and returns the model."""
        if self.mode != "plain":
            self.flush()
        for stage in self.stages.values():
            stage.uninstall()
        if self._worker is not None:
            self._worker.shutdown(wait=True)
            self._worker = None
        return self.model

    def close(self) -> None:
        self.detach()

    def __enter__(self) -> TrainPipeline:
        return self

    def __exit__(self, *exc: Any) -> None:
        if exc[0] is None:
            self.close()
            return
        # Leaving on an error: stop the threads without waiting for more data.
        self._abort()
        self.close()

    def __del__(self) -> None:
        host = getattr(self, "_host", None)
        if host is not None:
            host.close()
        worker = getattr(self, "_worker", None)
        if worker is not None:
            worker.shutdown(wait=False)
