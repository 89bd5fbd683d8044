"""Routes TorchRec's fused sequence-embedding kernel to the jagged lookup on an NPU.

TorchRec builds a ``BatchedFusedEmbedding`` (an fbgemm table-batched embedding with
a fused optimizer) for every group of ``EmbeddingComputeKernel.FUSED`` tables of a
sharded ``EmbeddingCollection``. For any device other than CUDA and MTIA it keeps the
tables in host layout and calls fbgemm's CPU kernels, which cannot run on an NPU.
The bridge keeps TorchRec's module, parameters, state dict and fused optimizer as
they are and only replaces the forward on NPU tensors: it looks up rows from the
module's own per-table weight views and updates its own row-wise Adagrad state.
"""

import logging

import torch

from torchrec_ascend.device import NPU
from torchrec_ascend.npu.embedding_lookup import RowwiseAdagrad, jagged_embedding_lookup

logger = logging.getLogger(__name__)

_installed = False


def _on_npu(emb_module) -> bool:
    device = getattr(emb_module, "current_device", None)
    return device is not None and torch.device(device).type == NPU


def npu_fused_forward(emb_module, features) -> torch.Tensor:
    """(N, D) rows for a KJT through a fbgemm TBE whose buffers live on an NPU.

    Args:
        emb_module: fbgemm ``SplitTableBatchedEmbeddingBagsCodegen`` (pooling NONE,
            row-wise Adagrad) built by TorchRec.
        features: KJT of the module's features, in its feature order.

    Raises:
        NotImplementedError: pooled tables, another optimizer, or weight decay.
    """
    from fbgemm_gpu.split_embedding_configs import EmbOptimType
    from fbgemm_gpu.split_table_batched_embeddings_ops_common import PoolingMode

    if emb_module.pooling_mode != PoolingMode.NONE:
        # Limitation: pooled (EmbeddingBagCollection) tables are not routed yet;
        # the lookup has no pooling step.
        raise NotImplementedError("NPU fused lookup serves sequence (unpooled) tables")
    # Limitation: only row-wise Adagrad without weight decay is fused on NPU; other
    # fbgemm optimizers need their own update rule here.
    if emb_module.optimizer != EmbOptimType.EXACT_ROWWISE_ADAGRAD:
        raise NotImplementedError(
            f"NPU fused lookup implements EXACT_ROWWISE_ADAGRAD, got "
            f"{emb_module.optimizer}"
        )
    if emb_module.optimizer_args.weight_decay != 0.0:
        raise NotImplementedError("NPU fused lookup does not apply weight decay")

    optimizer = RowwiseAdagrad(
        learning_rate=emb_module.get_learning_rate(),
        eps=emb_module.optimizer_args.eps,
        momentum=[states[0] for states in emb_module.split_optimizer_states()],
    )
    return jagged_embedding_lookup(
        features.values(),
        features.length_per_key(),
        emb_module.feature_table_map,
        emb_module.split_embedding_weights(),
        optimizer=optimizer,
    )


def install_tbe_bridge() -> None:
    """Makes TorchRec's ``BatchedFusedEmbedding`` use the jagged lookup on NPU.

    Idempotent; CPU and CUDA modules keep TorchRec's own forward.
    """
    global _installed
    if _installed:
        return
    from torchrec.distributed.batched_embedding_kernel import BatchedFusedEmbedding

    torchrec_forward = BatchedFusedEmbedding.forward

    def forward(self, features):
        if _on_npu(self._emb_module):
            return npu_fused_forward(self._emb_module, features)
        return torchrec_forward(self, features)

    forward.__doc__ = torchrec_forward.__doc__
    BatchedFusedEmbedding.forward = forward
    _installed = True
