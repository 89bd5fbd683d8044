"""NPU kernels for fbgemm operators that only compute host-side metadata.

Some fbgemm operators take a tensor argument only to choose a dispatch key and
return plain integers (for example the bit split of the (batch, table) info words
that fbgemm's table-batched embedding computes at construction). On an NPU they are
answered by the CPU kernel on an empty host tensor: no device memory is touched.
"""

import torch


def get_infos_metadata(unused: torch.Tensor, B: int, T: int) -> tuple[int, int]:
    """(bits for the batch index, mask of those bits) for B samples and T tables."""
    return torch.ops.fbgemm.get_infos_metadata(torch.empty(0, dtype=unused.dtype), B, T)
