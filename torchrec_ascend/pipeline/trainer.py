"""The train CLI's pipelined epochs (``--pipeline sync|semi-async``).

The Trainer keeps its own loop for ``--pipeline plain``; for the other modes it hands
each epoch to :class:`PipelinedEpochs`, which runs :class:`TrainPipeline` on the
unsharded SequentialRetrieval and accumulates the stage fractions that end up in
metrics.json under ``train.pipeline``.
"""

from __future__ import annotations

import inspect
import logging
import math
import time
from collections.abc import Callable, Iterable
from typing import Any

import torch

from torchrec_ascend.models import SequentialRetrieval, train_step_flops
from torchrec_ascend.pipeline.retrieval import (
    RetrievalBatch,
    RetrievalBatchPreparer,
    RetrievalTrainModule,
)
from torchrec_ascend.pipeline.train_pipeline import MODES, TrainPipeline

logger = logging.getLogger(__name__)


class OptimizerPair:
    """The dense and sparse optimizers, saved and restored as one for checkpoints."""

    def __init__(
        self, dense: torch.optim.Optimizer, sparse: torch.optim.Optimizer
    ) -> None:
        self.dense = dense
        self.sparse = sparse

    def state_dict(self) -> dict:
        return {"dense": self.dense.state_dict(), "sparse": self.sparse.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if set(state) != {"dense", "sparse"}:
            raise ValueError(
                "optimizer state is not from a pipelined run (expected keys dense, "
                f"sparse; got {sorted(state)}); resume with the same --pipeline"
            )
        self.dense.load_state_dict(state["dense"])
        self.sparse.load_state_dict(state["sparse"])


def _split_like(
    optimizer: torch.optim.Optimizer, model: SequentialRetrieval
) -> OptimizerPair:
    """Two optimizers of ``optimizer``'s type and settings: one over the item table,
    one over everything else. Per-parameter updates are the same as with one."""
    table = {id(p) for p in model.item_embeddings.parameters()}
    params = [p for group in optimizer.param_groups for p in group["params"]]
    dense = [p for p in params if id(p) not in table]
    sparse = [p for p in params if id(p) in table]
    make = type(optimizer)
    # ``defaults`` may hold settings the constructor fixes itself (AdamW's
    # decoupled_weight_decay), so pass only what it accepts.
    accepted = inspect.signature(make.__init__).parameters
    settings = {k: v for k, v in optimizer.defaults.items() if k in accepted}
    return OptimizerPair(make(dense, **settings), make(sparse, **settings))


def _forward(module: RetrievalTrainModule, batch: RetrievalBatch) -> Any:
    loss, _ = module(batch)
    return loss, (loss.detach(), batch.lengths, batch.batch_size, batch.num_tokens)


class PipelinedEpochs:
    """Trains epochs of a SequentialRetrieval with :class:`TrainPipeline`.

    Args:
        model: the (unsharded) retrieval model.
        optimizer: the Trainer's optimizer over all parameters; it is split into a
            dense and a sparse one of the same type and settings.
        mode: "sync" or "semi-async".
    """

    def __init__(
        self,
        model: SequentialRetrieval,
        optimizer: torch.optim.Optimizer,
        mode: str,
    ) -> None:
        if mode not in MODES or mode == "plain":
            raise ValueError(f"mode must be sync or semi-async, got {mode!r}")
        self.model = model
        self.mode = mode
        self.optimizer = _split_like(optimizer, model)
        self.module = RetrievalTrainModule(model)
        self.totals = {"step": 0.0, "compute": 0.0, "exposed_comm": 0.0, "comm": 0.0}
        self.steps = 0

    def train_epoch(
        self,
        batches: Iterable,
        sampler: Any,
        timing: dict,
        epoch: int,
        learning_rate: Callable[[int], float] | None = None,
    ) -> float:
        """One epoch; updates the Trainer's ``timing`` and returns the mean loss.

        ``learning_rate`` maps the epoch's step index to that step's rate (both
        optimizers), None keeps the configured constant rate.
        """
        cfg = self.model.config
        pipeline = TrainPipeline(
            self.module,
            self.optimizer.dense,
            torch.device("cpu"),
            self.mode,
            sparse_optimizer=self.optimizer.sparse,
            prepare=RetrievalBatchPreparer(sampler),
            forward=_forward,
            learning_rate=learning_rate,
        )
        total_loss, steps = 0.0, 0
        it = iter(batches)
        try:
            while True:
                start = time.perf_counter()
                try:
                    loss, lengths, batch_size, num_tokens = pipeline.progress(it)
                except StopIteration:
                    break
                elapsed = time.perf_counter() - start
                value = float(loss)
                if not math.isfinite(value):
                    raise FloatingPointError(
                        f"loss became {value} at epoch {epoch + 1}"
                    )
                total_loss += value
                steps += 1
                timing["steps"] += 1
                timing["seconds"] += elapsed
                timing["samples"] += batch_size
                timing["tokens"] += num_tokens
                timing["flops"] += train_step_flops(
                    lengths, cfg.model, cfg.loss.num_negatives
                )
                if hasattr(batches, "set_postfix"):
                    batches.set_postfix(loss=f"{total_loss / steps:.4f}")
        finally:
            # Evaluation looks the table up directly: restore its own forward.
            pipeline.detach()
            for key in self.totals:
                self.totals[key] += pipeline.timeline.totals[key]
            self.steps += pipeline.timeline.steps
        return total_loss / max(steps, 1)

    def state_dict(self) -> dict:
        """Stage time totals so far, kept in checkpoints so a resumed run reports
        fractions over all its epochs."""
        return {"totals": dict(self.totals), "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.totals = dict(state["totals"])
        self.steps = int(state["steps"])

    def summary(self) -> dict:
        """Mode and stage fractions over every pipelined step so far."""
        step = self.totals["step"]
        compute = self.totals["compute"] / step if step > 0 else 0.0
        exposed = self.totals["exposed_comm"] / step if step > 0 else 0.0
        return {
            "mode": self.mode,
            "steps": self.steps,
            "compute_frac": compute,
            "exposed_comm_frac": exposed,
            "idle_frac": max(0.0, 1.0 - compute - exposed) if step > 0 else 0.0,
            "comm_frac": self.totals["comm"] / step if step > 0 else 0.0,
        }
