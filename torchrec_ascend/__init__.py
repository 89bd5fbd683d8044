"""torchrec_ascend: fast generative-recommender training for TorchRec.

Importing the package loads the C++ extension, which registers the operators under
``torch.ops.torchrec_ascend``. Nothing here touches an accelerator: NPU support
(torch_npu) is imported lazily, only when an NPU device is asked for.
"""

import logging

import torch

from torchrec_ascend import (
    _C,  # noqa: F401  (registers torch.ops.torchrec_ascend.*)
    device,
    npu,  # noqa: I001  (after ops: registers NPU kernels for them)
    ops,  # noqa: F401  (fake kernels and autograd for the ops)
)

logger = logging.getLogger(__name__)

__version__ = "0.1.0"

__all__ = ["__version__", "device", "npu", "ops", "torch"]
