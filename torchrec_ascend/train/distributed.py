"""Data-parallel training under torchrun with load-balanced jagged batches.

The whole model, the (small) item table included, is replicated on every rank, as in
DDP. After each backward pass the gradients are summed across ranks, each rank's
weighted by the number of loss terms it averaged over, and divided by the global
count: the update is then exactly that of one process training the union of the
ranks' batches, however unevenly the balancer spread the samples.

Run with, e.g.::

    torchrun --nproc-per-node 2 -m torchrec_ascend.train --dataset beauty \\
        --config beauty --balance global
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

from torchrec_ascend.balance import (
    STRATEGIES,
    BalancedSampler,
    BalancedTrainBatches,
    LengthExchange,
    SampleCostModel,
    train_lengths,
)
from torchrec_ascend.data import LeaveOneOutSplit, TrainSequences
from torchrec_ascend.device import collective_backend
from torchrec_ascend.models import ExperimentConfig

logger = logging.getLogger(__name__)

# The device layer owns the device -> collective backend table.
backend_for = collective_backend


def launched_by_torchrun() -> bool:
    """Whether the torchrun environment (WORLD_SIZE, RANK, MASTER_ADDR) is set."""
    return all(k in os.environ for k in ("WORLD_SIZE", "RANK", "MASTER_ADDR"))


def init_process_group_from_env(
    device: torch.device | str = "cpu", timeout_s: float = 300.0
) -> tuple[int, int]:
    """Joins the process group torchrun describes, with the device's backend.

    Args:
        device: Where the model trains; picks the backend.
        timeout_s: Collective timeout, so a lost peer fails the job instead of
            hanging it.

    Returns:
        (rank, world size).
    """
    if not dist.is_initialized():
        dist.init_process_group(
            backend=backend_for(device),
            init_method="env://",
            timeout=timedelta(seconds=timeout_s),
        )
    return dist.get_rank(), dist.get_world_size()


class DataParallelStrategy:
    """Replicated model, balanced batches and weighted gradient averaging.

    Handed to :class:`~torchrec_ascend.train.loop.Trainer`, which asks it for the
    epoch's batches, lets it average gradients after each backward pass and writes
    files only on the main rank. The process group must be initialised first.

    Args:
        balance: ``"fixed"``, ``"global"`` or ``"token_budget"`` (see
            :mod:`torchrec_ascend.balance.sampler`).
        partition_method: ``"lpt"`` or ``"kk"``.
        prefetch: Steps planned ahead in a background thread (0: none).
    """

    def __init__(
        self, balance: str = "global", partition_method: str = "lpt", prefetch: int = 1
    ) -> None:
        if not dist.is_initialized():
            raise RuntimeError("initialise the process group before the strategy")
        if balance not in STRATEGIES:
            raise ValueError(f"balance must be one of {STRATEGIES}, got {balance!r}")
        self.balance = balance
        self.partition_method = partition_method
        self.prefetch = prefetch
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()
        # Plans are exchanged on a separate CPU group, from the planning thread.
        self.exchange = LengthExchange(dist.new_group(backend="gloo"))
        self.last_batches: BalancedTrainBatches | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        """Waits until every rank gets here (e.g. until files are written)."""
        dist.barrier()

    def local_batch_size(self, global_batch_size: int) -> int:
        """b = global batch / R, so R ranks step through the same global batch."""
        if global_batch_size % self.world_size:
            logger.warning(
                "batch_size %d is not a multiple of the world size %d; each rank "
                "takes %d",
                global_batch_size,
                self.world_size,
                max(1, global_batch_size // self.world_size),
            )
        return max(1, global_batch_size // self.world_size)

    def prepare(self, model: nn.Module) -> None:
        """Copies rank 0's parameters and buffers to every rank.

        Then reseeds torch's generator per rank, so dropout masks differ between
        ranks as they would between the parts of one large batch.
        """
        with torch.no_grad():
            for tensor in list(model.parameters()) + list(model.buffers()):
                dist.broadcast(tensor.data, src=0)
        # Limitation: a resumed run restores rank 0's generator state on every rank,
        # so after --resume the ranks share dropout masks again.
        torch.manual_seed(torch.initial_seed() + 1_000_003 * self.rank)

    def train_batches(
        self, split: LeaveOneOutSplit, config: ExperimentConfig, seed: int, epoch: int
    ) -> BalancedTrainBatches:
        """This rank's batches of ``epoch`` (the same count on every rank)."""
        dataset = TrainSequences(split, config.model.max_seq_len)
        sampler = BalancedSampler(
            train_lengths(dataset),
            SampleCostModel(config),
            num_ranks=self.world_size,
            rank=self.rank,
            local_batch_size=self.local_batch_size(config.train.batch_size),
            strategy=self.balance,
            partition_method=self.partition_method,
            seed=seed,
            exchange=self.exchange,
        )
        sampler.set_epoch(epoch)
        self.last_batches = BalancedTrainBatches(dataset, sampler, self.prefetch)
        return self.last_batches

    def reduce_gradients(
        self, model: nn.Module, loss: torch.Tensor, weight: int
    ) -> float:
        """Replaces every gradient by the weighted mean over ranks.

        Args:
            model: The replica whose ``.grad`` fields hold this rank's gradient of
                its mean loss.
            loss: () this rank's mean loss (0 for an empty batch).
            weight: Number of terms ``loss`` averages over (target tokens here; a
                per-sample mean loss would use the sample count); 0 when empty.

        Returns:
            The global mean loss, the same on every rank.
        """
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("model has no trainable parameters")
        device = params[0].device
        present = torch.tensor(
            [p.grad is not None for p in params], dtype=torch.float64, device=device
        )
        grads = [
            (p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
            for p in params
        ]
        # One collective: weighted gradients, weighted loss, total weight, presence.
        flat = torch.cat([g.double() for g in grads]) * weight
        tail = torch.tensor(
            [float(loss.detach()) * weight, float(weight)],
            dtype=torch.float64,
            device=device,
        )
        buffer = torch.cat([flat, tail, present])
        dist.all_reduce(buffer)
        total = float(buffer[flat.numel() + 1])
        scale = 1.0 / total if total > 0 else 0.0
        offset = 0
        for k, p in enumerate(params):
            n = p.numel()
            if float(buffer[flat.numel() + 2 + k]) == 0.0:
                p.grad = None  # no rank produced one, as in one process
            else:
                p.grad = (buffer[offset : offset + n] * scale).to(p.dtype).view_as(p)
            offset += n
        return float(buffer[flat.numel()]) * scale
