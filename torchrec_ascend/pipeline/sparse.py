"""The sparse half of a step for one embedding module: input distribution, lookup,
output distribution, and the backward that applies the sparse update.

A module is either a TorchRec ``ShardedModule`` (a DMP-sharded EmbeddingCollection or
EmbeddingBagCollection: its ``input_dist`` / ``compute`` / ``output_dist`` are called
directly so each can run as its own stage) or a local ``EmbeddingCollection`` /
``EmbeddingBagCollection`` (a single process: the lookup is the module's own forward).

The dense model never runs the lookup itself: the module's ``forward`` is replaced by
one that returns the rows looked up ahead of time, cut from the sparse autograd graph
(detached leaves). After the dense backward the leaves' gradients are pushed through
the sparse graph by :meth:`SparseModuleStage.backward`, which is where TorchRec's fused
optimizers update their rows (and where a local table's gradients are accumulated).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torchrec.distributed.types import ShardedModule
from torchrec.modules.embedding_modules import (
    EmbeddingBagCollection,
    EmbeddingCollection,
)
from torchrec.sparse.jagged_tensor import JaggedTensor, KeyedJaggedTensor, KeyedTensor

from torchrec_ascend.pipeline.dedup import DedupPlan, dedup_features
from torchrec_ascend.pipeline.timeline import COMM, COMPUTE, StageTimeline

logger = logging.getLogger(__name__)

SPARSE_MODULE_TYPES = (ShardedModule, EmbeddingCollection, EmbeddingBagCollection)


@dataclass
class SparseWork:
    """One batch's state in one sparse module, from input dist to backward."""

    features: KeyedJaggedTensor
    plan: DedupPlan | None = None
    ctx: Any = None
    pending: Any = None
    pending_values: bool = False
    dist_input: Any = None
    output: Any = None
    sources: list[torch.Tensor] = field(default_factory=list)
    leaves: list[torch.Tensor] = field(default_factory=list)
    lookup_rows: list[torch.Tensor] = field(default_factory=list)


def _table_features(module: nn.Module) -> list[list[str]] | None:
    """Feature names per table for sequence (unpooled) collections, else None.

    Limitation: pooled collections (EmbeddingBagCollection) are not deduplicated:
    their output is one pooled row per bag, which an id-level gather cannot rebuild.
    """
    if isinstance(module, EmbeddingCollection):
        return [list(c.feature_names) for c in module.embedding_configs()]
    configs = getattr(module, "_embedding_configs", None)
    if isinstance(module, ShardedModule) and configs is not None:
        if type(module).__name__ == "ShardedEmbeddingCollection":
            return [list(c.feature_names) for c in configs]
    return None


def _detach_output(out: Any) -> tuple[Any, list[torch.Tensor], list[torch.Tensor]]:
    """The dense-side copy of a lookup output: same structure, values detached."""
    if isinstance(out, KeyedTensor):
        values = out.values()
        leaf = values.detach().requires_grad_(values.requires_grad)
        view = KeyedTensor(
            keys=out.keys(),
            length_per_key=out.length_per_key(),
            values=leaf,
            key_dim=out.key_dim(),
        )
        return view, [values], [leaf]
    if isinstance(out, dict):
        view, sources, leaves = {}, [], []
        for key, jt in out.items():
            values = jt.values()
            leaf = values.detach().requires_grad_(values.requires_grad)
            view[key] = JaggedTensor(
                values=leaf, lengths=jt.lengths(), weights=jt.weights_or_none()
            )
            sources.append(values)
            leaves.append(leaf)
        return view, sources, leaves
    raise TypeError(
        "sparse module output must be a KeyedTensor or dict[str, JaggedTensor], "
        f"got {type(out).__name__}"
    )


class SparseModuleStage:
    """Runs the sparse stages of one embedding module for one batch at a time.

    Args:
        fqn: the module's name inside the model (for messages).
        module: a TorchRec ShardedModule or a local EmbeddingCollection /
            EmbeddingBagCollection.
        timeline: where stage intervals are recorded.
        dedup: look each distinct id up once per table (sequence collections only).
    """

    def __init__(
        self, fqn: str, module: nn.Module, timeline: StageTimeline, dedup: bool
    ) -> None:
        if not isinstance(module, SPARSE_MODULE_TYPES):
            raise TypeError(
                f"{fqn}: expected a ShardedModule, EmbeddingCollection or "
                f"EmbeddingBagCollection, got {type(module).__name__}"
            )
        self.fqn = fqn
        self.module = module
        self.sharded = isinstance(module, ShardedModule)
        self.timeline = timeline
        self.table_features = _table_features(module) if dedup else None
        self._current: Any = None
        self._expected_numel: int | None = None
        self._installed = False

    # -- host side ------------------------------------------------------------------

    def prepare(self, features: KeyedJaggedTensor) -> SparseWork:
        """Host stage: deduplicates ids (when enabled) before anything is sent."""
        if not isinstance(features, KeyedJaggedTensor):
            raise TypeError(
                f"{self.fqn}: sparse input must be a KeyedJaggedTensor, "
                f"got {type(features).__name__}"
            )
        if self.table_features is not None and features.stride() > 0:
            deduped, plan = dedup_features(features, self.table_features)
            return SparseWork(features=deduped, plan=plan)
        return SparseWork(features=features)

    # -- sparse stages ---------------------------------------------------------------

    def start_input_dist(self, work: SparseWork) -> None:
        """Issues the KJT all-to-all (the splits exchange first); returns at once."""
        if not self.sharded:
            return
        start = time.perf_counter()
        work.ctx = self.module.create_context()
        work.pending = self.module.input_dist(work.ctx, work.features)
        self.timeline.record(COMPUTE, start, time.perf_counter())

    def advance_input_dist(self, work: SparseWork) -> None:
        """Waits for the splits exchange, which issues the ids' all-to-all."""
        if not self.sharded or work.pending is None or work.pending_values:
            return
        start = time.perf_counter()
        work.pending = work.pending.wait()
        work.pending_values = True
        self.timeline.record(COMM, start, time.perf_counter())

    def finish_input_dist(self, work: SparseWork) -> None:
        """Waits for the KJT all-to-all; the ids are then on their owning ranks."""
        if not self.sharded:
            return
        self.advance_input_dist(work)
        start = time.perf_counter()
        work.dist_input = work.pending.wait()
        work.pending = None
        self.timeline.record(COMM, start, time.perf_counter())

    def lookup(self, work: SparseWork) -> Any:
        """Embedding forward and output all-to-all; returns the dense-side output."""
        start = time.perf_counter()
        if self.sharded:
            rows = self.module.compute(work.ctx, work.dist_input)
            work.lookup_rows = [r for r in rows if r.requires_grad]
            pending = self.module.output_dist(work.ctx, rows)
            mid = time.perf_counter()
            self.timeline.record(COMPUTE, start, mid)
            out = pending.wait()
            start = time.perf_counter()
            self.timeline.record(COMM, mid, start)
            work.dist_input = None
        else:
            out = type(self.module).forward(self.module, work.features)
        if work.plan is not None:
            out = work.plan.expand(out)
        view, sources, leaves = _detach_output(out)
        work.output, work.sources, work.leaves = view, sources, leaves
        self.timeline.record(COMPUTE, start, time.perf_counter())
        return view

    def backward(self, work: SparseWork) -> None:
        """Pushes the dense gradients through the sparse graph (the sparse update).

        Every output that takes part in autograd gets a gradient, zeros where the dense
        part did not use it, so all ranks run the same gradient all-to-alls.
        """
        pairs = [
            (src, leaf.grad if leaf.grad is not None else torch.zeros_like(leaf))
            for src, leaf in zip(work.sources, work.leaves)
            if src.requires_grad
        ]
        if not pairs:
            return
        start = time.perf_counter()
        arrived: list[float] = []
        handles = [
            r.register_hook(lambda g: arrived.append(time.perf_counter()))
            for r in work.lookup_rows[:1]
        ]
        torch.autograd.backward([p[0] for p in pairs], [p[1] for p in pairs])
        end = time.perf_counter()
        for h in handles:
            h.remove()
        if arrived:
            # Up to the hook the gradients were travelling back through the output
            # all-to-all; after it the lookup backward applied the update.
            self.timeline.record(COMM, start, arrived[0])
            self.timeline.record(COMPUTE, arrived[0], end)
        else:
            self.timeline.record(COMPUTE, start, end)
        work.sources, work.leaves, work.lookup_rows = [], [], []

    # -- the dense model's view --------------------------------------------------------

    def install(self) -> None:
        """Replaces the module's forward by one that returns the prepared rows."""
        if self._installed:
            return

        def prepared_forward(*args: Any, **kwargs: Any) -> Any:
            if self._current is None:
                raise RuntimeError(
                    f"{self.fqn} was called outside the pipeline's dense stage; "
                    "call pipeline.detach() to use the model directly"
                )
            features = args[0] if args else next(iter(kwargs.values()), None)
            if (
                isinstance(features, KeyedJaggedTensor)
                and self._expected_numel is not None
                and features.values().numel() != self._expected_numel
            ):
                raise RuntimeError(
                    f"{self.fqn}: the model passed a KJT with "
                    f"{features.values().numel()} ids but the pipeline looked up "
                    f"{self._expected_numel}; sparse_inputs does not build the "
                    "module's input"
                )
            return self._current

        self.module.forward = prepared_forward
        self._installed = True

    def uninstall(self) -> None:
        if self._installed:
            del self.module.forward
            self._installed = False

    def set_current(self, work: SparseWork | None, original_numel: int | None) -> None:
        self._current = None if work is None else work.output
        self._expected_numel = original_numel
