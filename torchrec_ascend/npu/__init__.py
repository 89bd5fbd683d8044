"""NPU (PrivateUse1) kernels: fbgemm's KJT operators, HSTU attention, jagged lookup.

Importing this package registers the kernels; torch_npu is not needed to register
them, only to run them on a real Ascend NPU. Every kernel is plain ATen, so the same
functions also run (and are tested) on CPU.
"""

from torchrec_ascend.npu.registry import (
    register_npu_kernels,
    registered_ops,
    skipped_ops,
)

register_npu_kernels()

__all__ = ["register_npu_kernels", "registered_ops", "skipped_ops"]
