"""The project's SequentialRetrieval model in the pipeline's terms.

:class:`RetrievalBatch` carries the one KJT that the item table is looked up with
(features "item", "target", "negative", built on the host together with the negative
ids), and :class:`RetrievalTrainModule` computes the same loss as
``SequentialRetrieval.forward`` from a RetrievalBatch. Its embedding lookup reads a
batch attribute directly and the rest of the step is one ``torch.fx.wrap``-ed call, so
TorchRec's own ``TrainPipelineSparseDist`` can also pipeline it (the comparison in
``benchmarks/pipeline.py`` needs exactly that).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor
from torchrec.streamable import Pipelineable

from torchrec_ascend.data import SequenceBatch
from torchrec_ascend.models import SequentialRetrieval
from torchrec_ascend.models.retrieval import ITEM_FEATURES
from torchrec_ascend.train.negatives import UniformNegativeSampler


@dataclass
class RetrievalBatch(Pipelineable):
    """A training batch with its negatives, ready for the embedding lookup.

    Attributes:
        features: KJT keys ("item", "target", "negative"), stride B: history ids
            (L,), next-item targets (L,) and negative ids, all x int64.
        lengths: (B,) x int64 history length of each user.
        targets: (L,) x int64.
        negative_ids: (R,) shared or (L, R) per-token x int64.
        timestamps, query_timestamps: (L,) x int64 or None.
    """

    features: KeyedJaggedTensor
    lengths: torch.Tensor
    targets: torch.Tensor
    negative_ids: torch.Tensor
    timestamps: torch.Tensor | None
    query_timestamps: torch.Tensor | None

    @property
    def batch_size(self) -> int:
        return int(self.lengths.numel())

    @property
    def num_tokens(self) -> int:
        return int(self.targets.numel())

    def to(self, device: torch.device, non_blocking: bool = False) -> RetrievalBatch:
        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device, non_blocking=non_blocking)

        return RetrievalBatch(
            features=self.features.to(device, non_blocking=non_blocking),
            lengths=move(self.lengths),
            targets=move(self.targets),
            negative_ids=move(self.negative_ids),
            timestamps=move(self.timestamps),
            query_timestamps=move(self.query_timestamps),
        )

    def record_stream(self, stream: torch.Stream) -> None:
        if self.lengths.device.type == "cpu":
            return
        self.features.record_stream(stream)
        for t in (self.lengths, self.targets, self.negative_ids):
            t.record_stream(stream)
        for t in (self.timestamps, self.query_timestamps):
            if t is not None:
                t.record_stream(stream)

    def pin_memory(self) -> RetrievalBatch:
        return self


def item_features(
    lengths: torch.Tensor, history: torch.Tensor, targets: torch.Tensor, negatives
) -> KeyedJaggedTensor:
    """The item-table KJT exactly as ``SequentialRetrieval`` builds it.

    Args:
        lengths: (B,) history lengths.
        history: (L,) input ids.
        targets: (L,) next-item ids (or empty).
        negatives: (R,) shared (all in the first bag) or (L, R) per-token ids.
    """
    lengths = lengths.long()
    if negatives.dim() == 1:
        neg_lengths = torch.zeros_like(lengths)
        if lengths.numel():
            neg_lengths[0] = negatives.numel()
    else:
        neg_lengths = lengths * negatives.shape[1]
    target_lengths = lengths if targets.numel() else torch.zeros_like(lengths)
    return KeyedJaggedTensor(
        keys=list(ITEM_FEATURES),
        values=torch.cat([history, targets, negatives.reshape(-1)]).long(),
        lengths=torch.cat([lengths, target_lengths, neg_lengths]),
    )


class RetrievalBatchPreparer:
    """Host stage for the retrieval model: draws negatives and builds the item KJT.

    Args:
        sampler: the negative sampler (its private generator keeps runs repeatable).
    """

    def __init__(self, sampler: UniformNegativeSampler) -> None:
        self.sampler = sampler

    def __call__(self, batch: SequenceBatch) -> RetrievalBatch:
        negatives = self.sampler.sample(batch.num_tokens)
        return RetrievalBatch(
            features=item_features(
                batch.lengths, batch.values, batch.targets, negatives
            ),
            lengths=batch.lengths,
            targets=batch.targets,
            negative_ids=negatives,
            timestamps=batch.timestamps,
            query_timestamps=batch.query_timestamps,
        )


def padding_batch(with_timestamps: bool) -> SequenceBatch:
    """A one-user batch with no tokens: a rank whose data ended runs it while the
    others finish, so their collectives stay matched; its loss and gradients are 0."""
    empty = torch.zeros(0, dtype=torch.int64)
    return SequenceBatch(
        features=KeyedJaggedTensor.from_lengths_sync(
            ["item"], empty, torch.zeros(1, dtype=torch.int64)
        ),
        timestamps=empty if with_timestamps else None,
        query_timestamps=empty if with_timestamps else None,
        targets=empty,
        user_index=torch.zeros(1, dtype=torch.int64),
    )


def _retrieval_loss(
    model: SequentialRetrieval, rows: dict, batch: RetrievalBatch
) -> tuple[torch.Tensor, torch.Tensor]:
    # The model's own post-lookup path, so pipelined and plain steps match exactly.
    loss = model.loss_from_rows(
        rows["item"].values(),
        rows["target"].values(),
        rows["negative"].values(),
        batch.lengths,
        batch.targets,
        batch.negative_ids,
        batch.timestamps,
        batch.query_timestamps,
    )
    return loss, loss.detach()


class _RetrievalDense(nn.Module):
    """The dense part of the step. It owns no parameters (the model does) and holds
    no sharded module, so TorchRec's fx tracer keeps it as one leaf: the jagged encoder
    is not symbolically traceable."""

    def __init__(self, model: SequentialRetrieval) -> None:
        super().__init__()
        # Not a registered child: the parameters stay where the model keeps them.
        object.__setattr__(self, "_owner", model)

    def forward(
        self, rows: dict, batch: RetrievalBatch
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return _retrieval_loss(self._owner, rows, batch)


class RetrievalTrainModule(nn.Module):
    """``SequentialRetrieval``'s training loss as ``module(RetrievalBatch)``.

    Args:
        model: the retrieval model (its ``item_embeddings`` may be DMP-sharded).

    Example::

        >>> module = RetrievalTrainModule(SequentialRetrieval(100, cfg, False))
        >>> loss, _ = module(RetrievalBatchPreparer(sampler)(sequence_batch))
    """

    def __init__(self, model: SequentialRetrieval) -> None:
        super().__init__()
        self.model = model
        self.dense = _RetrievalDense(model)

    def forward(self, batch: RetrievalBatch) -> tuple[torch.Tensor, torch.Tensor]:
        rows = self.model.item_embeddings(batch.features)
        return self.dense(rows, batch)
