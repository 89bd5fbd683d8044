"""Which runtime backs a device type, loaded only when that type is asked for.

``torch_npu`` is never imported by ``import torchrec_ascend``: it is imported the first
time an "npu" device is resolved, and only if no ``torch.npu`` module is registered yet
(a test emulator or an earlier ``import torch_npu`` registers one).
"""

import importlib
import logging
import types

import torch

logger = logging.getLogger(__name__)

NPU = "npu"
CUDA = "cuda"
CPU = "cpu"

# The collective library that matches each device type.
COLLECTIVE_BACKENDS = {NPU: "hccl", CUDA: "nccl", CPU: "gloo"}


def _registered_npu_module() -> types.ModuleType | None:
    # getattr on the torch module itself: torch exposes registered device modules as
    # attributes, so a missing one is a plain AttributeError, not an import.
    return getattr(torch, NPU, None)


def npu_runtime_loaded() -> bool:
    """True when a ``torch.npu`` module is registered (torch_npu or the emulator)."""
    return _registered_npu_module() is not None


def ensure_npu_runtime() -> types.ModuleType:
    """Returns ``torch.npu``, importing torch_npu first if nothing registered it.

    Also registers our NPU kernels, after any fbgemm-ascend kernels (ops it already
    serves keep its kernel).

    Raises:
        RuntimeError: torch_npu is not installed and no NPU module is registered.
    """
    module = _registered_npu_module()
    if module is None:
        try:
            importlib.import_module("torch_npu")
        except ImportError as err:
            raise RuntimeError(
                "device 'npu' needs torch_npu (matching torch 2.13) and the CANN "
                "toolkit; see docs/ascend.md"
            ) from err
        module = _registered_npu_module()
        if module is None:
            raise RuntimeError("torch_npu was imported but did not register torch.npu")
    from torchrec_ascend.npu import register_npu_kernels

    register_npu_kernels()
    return module


def npu_available() -> bool:
    """True when an NPU runtime is already loaded and reports a device.

    Never imports torch_npu: auto-selection must not pull in a runtime nobody asked for.
    """
    module = _registered_npu_module()
    return bool(module is not None and module.is_available())
