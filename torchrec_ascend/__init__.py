"""torchrec_ascend: fast generative-recommender training for TorchRec.

Importing the package loads the C++ extension, which registers the operators under
``torch.ops.torchrec_ascend``, and registers NPU (PrivateUse1) kernels for the
fbgemm operators TorchRec calls (``torchrec_ascend.npu``). Nothing here touches an
accelerator: torch_npu is imported lazily, only when an NPU device is asked for
(``torchrec_ascend.device``).
"""

import logging

import torch

from torchrec_ascend import (
    _C,  # noqa: F401  (registers torch.ops.torchrec_ascend.*)
    device,
    npu,  # NPU (PrivateUse1) kernels for fbgemm's KJT ops and ours
    ops,  # noqa: F401  (fake kernels and autograd for the ops)
)

logger = logging.getLogger(__name__)

__version__ = "0.1.0"

__all__ = ["__version__", "device", "npu", "ops", "torch"]
