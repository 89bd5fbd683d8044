"""NPU (PrivateUse1) kernels: fbgemm's KJT operators, HSTU attention, jagged lookup.

Importing this package registers the kernels; torch_npu is not needed to register
them, only to run them on a real Ascend NPU. Every kernel is plain ATen, so the same
functions also run (and are tested) on CPU.
"""

from torchrec_ascend.npu.embedding_lookup import RowwiseAdagrad, jagged_embedding_lookup
from torchrec_ascend.npu.plan import place_plan_on_device
from torchrec_ascend.npu.registry import (
    register_npu_kernels,
    registered_ops,
    skipped_ops,
)
from torchrec_ascend.npu.tbe_bridge import install_tbe_bridge, npu_fused_forward

register_npu_kernels()
install_tbe_bridge()

__all__ = [
    "RowwiseAdagrad",
    "install_tbe_bridge",
    "jagged_embedding_lookup",
    "npu_fused_forward",
    "place_plan_on_device",
    "register_npu_kernels",
    "registered_ops",
    "skipped_ops",
]
