"""Generative retrieval model: item embeddings in a TorchRec EmbeddingCollection, a
jagged sequence encoder (HSTU or SASRec), L2-normalised outputs and sampled softmax.

Every position of a user's history predicts the next item (autoregressive training);
at evaluation the last position's output is the user embedding, scored against every
item by dot product.
"""

import logging

import torch
import torch.nn.functional as F
from torch import nn
from torchrec.modules.embedding_configs import EmbeddingConfig
from torchrec.modules.embedding_modules import EmbeddingCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from torchrec_ascend.models.configs import ExperimentConfig
from torchrec_ascend.models.hstu import HSTUEncoder, input_scale
from torchrec_ascend.models.losses import SampledSoftmaxLoss
from torchrec_ascend.models.sasrec import SASRecEncoder
from torchrec_ascend.ops import lengths_to_offsets, positions_in_sequence

logger = logging.getLogger(__name__)

ITEM_TABLE = "item"
# The three features that share the item table: history inputs, next-item targets and
# sampled negatives; one KJT lookup serves all three (and shards the same way).
ITEM_FEATURES = ("item", "target", "negative")


def _init_item_rows(weight: torch.Tensor) -> None:
    with torch.no_grad():
        weight.normal_(0.0, 0.02)


class SequentialRetrieval(nn.Module):
    """HSTU or SASRec retrieval over jagged histories.

    Args:
        num_items: items have ids 1..num_items (row 0 exists but is never sampled).
        config: model, loss and training settings.
        use_timestamps: feed timestamps to the time bias (HSTU only).
        device: where the embedding table is created ("meta" for sharded DMP).

    Example::

        >>> model = SequentialRetrieval(100, get_preset("smoke"), use_timestamps=False)
        >>> kjt = KeyedJaggedTensor.from_lengths_sync(
        ...     ["item"], torch.tensor([3, 4, 5]), torch.tensor([2, 1]))
        >>> loss = model(kjt, targets=torch.tensor([4, 5, 6]),
        ...              negative_ids=torch.randint(1, 101, (3, 16)))
    """

    def __init__(
        self,
        num_items: int,
        config: ExperimentConfig,
        use_timestamps: bool,
        device: torch.device | None = None,
    ) -> None:
        super().__init__()
        if num_items < 1:
            raise ValueError(f"num_items must be >= 1, got {num_items}")
        self.num_items = num_items
        self.config = config
        mcfg = config.model
        self.use_timestamps = bool(
            use_timestamps and mcfg.model == "hstu" and mcfg.time_bias
        )
        self.item_embeddings = EmbeddingCollection(
            tables=[
                EmbeddingConfig(
                    name=ITEM_TABLE,
                    embedding_dim=mcfg.embedding_dim,
                    num_embeddings=num_items + 1,
                    feature_names=list(ITEM_FEATURES),
                    init_fn=_init_item_rows,
                )
            ],
            device=device,
        )
        self.position_embedding = nn.Embedding(mcfg.max_seq_len, mcfg.embedding_dim)
        nn.init.normal_(self.position_embedding.weight, 0.0, 0.02)
        self.input_dropout = nn.Dropout(mcfg.input_dropout)
        if mcfg.model == "hstu":
            self.encoder = HSTUEncoder(mcfg, self.use_timestamps)
        else:
            self.encoder = SASRecEncoder(mcfg)
        lcfg = config.loss
        self.loss_fn = SampledSoftmaxLoss(
            lcfg.temperature,
            expansion=lcfg.logit_sharing,
            negative_dtype=lcfg.negative_dtype,
            offload_negatives=lcfg.offload_negatives,
            segment_size=lcfg.segment_size,
        )

    # -- lookups -------------------------------------------------------------------

    def _lookup(
        self,
        history: KeyedJaggedTensor,
        targets: torch.Tensor,
        negative_ids: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        lengths = history.lengths().long()
        batch = lengths.numel()
        if negative_ids.dim() == 1:
            # Shared negatives ride in the first bag; the others are empty.
            neg_lengths = torch.zeros_like(lengths)
            if batch:
                neg_lengths[0] = negative_ids.numel()
        else:
            neg_lengths = lengths * negative_ids.shape[1]
        target_lengths = lengths if targets.numel() else torch.zeros_like(lengths)
        kjt = KeyedJaggedTensor(
            keys=list(ITEM_FEATURES),
            values=torch.cat(
                [history.values(), targets, negative_ids.reshape(-1)]
            ).long(),
            lengths=torch.cat([lengths, target_lengths, neg_lengths]),
        )
        out = self.item_embeddings(kjt)
        return out["item"].values(), out["target"].values(), out["negative"].values()

    def _lookup_history(self, history: KeyedJaggedTensor) -> torch.Tensor:
        empty = history.values().new_zeros(0)
        return self._lookup(history, empty, empty)[0]

    # -- encoder -------------------------------------------------------------------

    def _encode(
        self,
        item_rows: torch.Tensor,
        lengths: torch.Tensor,
        timestamps: torch.Tensor | None,
        query_timestamps: torch.Tensor | None,
    ) -> torch.Tensor:
        mcfg = self.config.model
        offsets = lengths_to_offsets(lengths)
        x = item_rows * input_scale(mcfg.embedding_dim)
        if mcfg.position_embedding:
            positions = positions_in_sequence(offsets, item_rows.shape[0])
            x = x + self.position_embedding(positions)
        x = self.input_dropout(x)
        if not self.use_timestamps:
            timestamps = query_timestamps = None
        x = self.encoder(x, offsets, timestamps, query_timestamps)
        return F.normalize(x, dim=-1, eps=1e-6)

    def forward(
        self,
        history: KeyedJaggedTensor,
        targets: torch.Tensor,
        negative_ids: torch.Tensor,
        timestamps: torch.Tensor | None = None,
        query_timestamps: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Training loss.

        Args:
            history: KJT with key "item": (L,) input item ids, lengths (B,).
            targets: (L,) x int64, the next item of every input position.
            negative_ids: (L, R) per-token or (R,) shared x int64 negatives.
            timestamps, query_timestamps: (L,) x int64 or None.

        Returns:
            () mean sampled-softmax loss over the L target tokens.
        """
        item_rows, target_rows, negative_rows = self._lookup(
            history, targets, negative_ids
        )
        return self.loss_from_rows(
            item_rows,
            target_rows,
            negative_rows,
            history.lengths(),
            targets,
            negative_ids,
            timestamps,
            query_timestamps,
        )

    def loss_from_rows(
        self,
        item_rows: torch.Tensor,
        target_rows: torch.Tensor,
        negative_rows: torch.Tensor,
        lengths: torch.Tensor,
        targets: torch.Tensor,
        negative_ids: torch.Tensor,
        timestamps: torch.Tensor | None = None,
        query_timestamps: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The loss after the lookup, for pipelines that run the lookup themselves.

        Args:
            item_rows, target_rows: (L, D) looked-up rows of inputs and targets.
            negative_rows: (L * R, D) or (R, D) looked-up negative rows.
            lengths: (B,) history lengths; the rest as in :meth:`forward`.
        """
        queries = self._encode(item_rows, lengths, timestamps, query_timestamps)
        positives = F.normalize(target_rows, dim=-1, eps=1e-6)
        # Limitation: the EmbeddingCollection returns fp32 rows for every feature, so
        # with reduced-precision negatives the fp32 negative rows still exist until
        # the loss has stored its rounded copy; a lookup kernel emitting fp16 for
        # the "negative" feature only would remove that transient.
        # Negatives go in raw: the loss normalises them (segment by segment when
        # offloading, so no normalised (L, R, D) copy is ever made here).
        negatives = negative_rows.reshape(*negative_ids.shape, -1)
        return self.loss_fn(queries, positives, targets, negatives, negative_ids)

    @torch.no_grad()
    def user_embeddings(
        self,
        history: KeyedJaggedTensor,
        timestamps: torch.Tensor | None = None,
        query_timestamps: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, D) normalised embedding of each user's last history position."""
        lengths = history.lengths().long()
        if bool((lengths == 0).any()):
            raise ValueError("user_embeddings needs a non-empty history for every user")
        rows = self._lookup_history(history)
        out = self._encode(rows, lengths, timestamps, query_timestamps)
        return out[torch.cumsum(lengths, 0) - 1]

    @torch.no_grad()
    def item_table(self, chunk: int = 65536) -> torch.Tensor:
        """(num_items + 1, D) normalised embeddings of every item (row 0 unused)."""
        rows = []
        for start in range(0, self.num_items + 1, chunk):
            ids = torch.arange(start, min(start + chunk, self.num_items + 1))
            kjt = KeyedJaggedTensor.from_lengths_sync(
                ["item"], ids, torch.tensor([ids.numel()])
            )
            rows.append(self._lookup_history(kjt))
        return F.normalize(torch.cat(rows), dim=-1, eps=1e-6)
