"""Registers our kernels for the PrivateUse1 (NPU) dispatch key.

Only operators with a real (non-composite) schema get a kernel: a PrivateUse1 kernel
on a CompositeImplicitAutograd operator would replace its decomposition on the NPU
and silently drop its gradient, so composite front-ends such as
``fbgemm::jagged_to_padded_dense`` keep decomposing into the ``*_forward`` /
``*_backward`` operators served here, whose fbgemm autograd kernels stay in charge.

Registering kernels does not need torch_npu; they are only ever called for tensors
on an NPU. Operators that already have a PrivateUse1 kernel (fbgemm-ascend's, when it
was imported first) are left alone.
"""

import importlib
import logging
import sys
from collections.abc import Callable

import torch

from torchrec_ascend.npu import (
    bucketize,
    host_metadata,
    hstu_kernels,
    jagged_kernels,
    sparse_kernels,
)

logger = logging.getLogger(__name__)

DISPATCH_KEY = "PrivateUse1"

FBGEMM_KERNELS: dict[str, Callable] = {
    "asynchronous_complete_cumsum": sparse_kernels.asynchronous_complete_cumsum,
    "asynchronous_inclusive_cumsum": sparse_kernels.asynchronous_inclusive_cumsum,
    "asynchronous_exclusive_cumsum": sparse_kernels.asynchronous_exclusive_cumsum,
    "permute_1D_sparse_data": sparse_kernels.permute_1D_sparse_data,
    "permute_2D_sparse_data": sparse_kernels.permute_2D_sparse_data,
    "segment_sum_csr": sparse_kernels.segment_sum_csr,
    "offsets_range": sparse_kernels.offsets_range,
    "invert_permute": sparse_kernels.invert_permute,
    "expand_into_jagged_permute": sparse_kernels.expand_into_jagged_permute,
    "permute_pooled_embs": sparse_kernels.permute_pooled_embs,
    "permute_pooled_embs_auto_grad": sparse_kernels.permute_pooled_embs,
    "jagged_to_padded_dense_forward": jagged_kernels.jagged_to_padded_dense_forward,
    "jagged_to_padded_dense_backward": jagged_kernels.jagged_to_padded_dense_backward,
    "dense_to_jagged_forward": jagged_kernels.dense_to_jagged_forward,
    "block_bucketize_sparse_features": bucketize.block_bucketize_sparse_features,
    "get_infos_metadata": host_metadata.get_infos_metadata,
}

OWN_KERNELS: dict[str, Callable] = {
    "hstu_attention": hstu_kernels.hstu_attention_forward,
    "hstu_attention_backward": hstu_kernels.hstu_attention_backward,
}

_libraries: dict[str, torch.library.Library] = {}
_registered: dict[str, str] = {}
_skipped: dict[str, str] = {}


def _load_fbgemm_ascend() -> None:
    # fbgemm-ascend needs torch_npu; only try it when torch_npu is already loaded, so
    # that nothing on the CPU install path pulls in an NPU runtime.
    if "torch_npu" not in sys.modules:
        return
    try:
        importlib.import_module("fbgemm_ascend")
    except ImportError:
        logger.debug("fbgemm_ascend not importable; using torchrec_ascend NPU kernels")


def _has_schema(qualified: str) -> bool:
    try:
        torch._C._dispatch_find_schema_or_throw(qualified, "")
    except RuntimeError:
        return False
    return True


def _is_composite(qualified: str) -> bool:
    return torch._C._dispatch_has_kernel_for_dispatch_key(
        qualified, "CompositeImplicitAutograd"
    )


def _register(namespace: str, kernels: dict[str, Callable]) -> None:
    library = _libraries.get(namespace)
    if library is None:
        library = torch.library.Library(namespace, "IMPL")
        _libraries[namespace] = library
    for name, kernel in kernels.items():
        qualified = f"{namespace}::{name}"
        if qualified in _registered:
            continue
        if not _has_schema(qualified):
            _skipped[qualified] = "operator not defined by the installed library"
            continue
        if _is_composite(qualified):
            _skipped[qualified] = "CompositeImplicitAutograd: decomposes on NPU"
            continue
        if torch._C._dispatch_has_kernel_for_dispatch_key(qualified, DISPATCH_KEY):
            _skipped[qualified] = "already has a PrivateUse1 kernel (fbgemm-ascend?)"
            continue
        library.impl(name, kernel, DISPATCH_KEY)
        _registered[qualified] = kernel.__module__ + "." + kernel.__qualname__


def register_npu_kernels() -> dict[str, str]:
    """Registers the NPU kernels (idempotent); returns operator -> kernel name.

    Operators already served on PrivateUse1 by another library are skipped; see
    :func:`skipped_ops` for why each one was.
    """
    _load_fbgemm_ascend()
    import fbgemm_gpu  # noqa: F401  (defines the torch.ops.fbgemm schemas)

    _register("fbgemm", FBGEMM_KERNELS)
    _register("torchrec_ascend", OWN_KERNELS)
    return dict(_registered)


def registered_ops() -> dict[str, str]:
    """Operator -> kernel name for every PrivateUse1 kernel we registered."""
    return dict(_registered)


def skipped_ops() -> dict[str, str]:
    """Operator -> reason for every kernel we did not register."""
    return dict(_skipped)
