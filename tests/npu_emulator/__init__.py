"""Test-only emulated Ascend NPU: PrivateUse1 renamed to "npu", backed by host memory.

``load()`` compiles ``emulator.cpp`` once (cached under ``build/npu_emulator``), renames
the PrivateUse1 backend to "npu" and registers a small ``torch.npu`` module standing in
for torch_npu's, so code written for a real NPU runs here unchanged. Operators without
an "npu" kernel run on the host through a recording fallback; ``fallback_ops()`` lists
them, and ``strict(True)`` makes any non-ATen operator without a kernel fail, as it
would on hardware.

This package never ships: it lives under ``tests/`` only.
"""

import contextlib
import logging
import types
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

_HERE = Path(__file__).resolve().parent
_BUILD_DIR = _HERE.parent.parent / "build" / "npu_emulator"
_extension = None


def _stub_device_module() -> types.ModuleType:
    """The part of torch_npu's ``torch.npu`` module that tests and TorchRec use."""
    mod = types.ModuleType("torch.npu")
    state = {"device": 0}

    def set_device(device) -> None:
        if not isinstance(device, int):
            device = torch.device(device).index or 0
        state["device"] = device

    class Stream:
        def __init__(self, device=None, priority=0) -> None:
            self.device = torch.device("npu", state["device"])

        def synchronize(self) -> None:
            pass

        def wait_stream(self, other) -> None:
            pass

        def wait_event(self, event) -> None:
            pass

        def record_event(self, event=None):
            return event or Event()

    class Event:
        def __init__(self, enable_timing=False, blocking=False) -> None:
            pass

        def record(self, stream=None) -> None:
            pass

        def wait(self, stream=None) -> None:
            pass

        def synchronize(self) -> None:
            pass

        def query(self) -> bool:
            return True

    default_stream = Stream()
    mod.is_available = lambda: True
    mod.is_initialized = lambda: True
    mod._is_in_bad_fork = lambda: False
    mod._lazy_init = lambda: None
    mod.device_count = lambda: 8
    mod.current_device = lambda: state["device"]
    mod.set_device = set_device
    mod.synchronize = lambda device=None: None
    mod.manual_seed = lambda seed: None
    mod.manual_seed_all = lambda seed: None
    mod.get_rng_state = lambda device=None: torch.get_rng_state()
    mod.set_rng_state = lambda state, device=None: torch.set_rng_state(state)
    mod.Stream = Stream
    mod.Event = Event
    mod.current_stream = lambda device=None: default_stream
    mod.default_stream = lambda device=None: default_stream
    mod.stream = lambda stream=None: contextlib.nullcontext()
    mod.emulated = True
    return mod


def load():
    """Builds (first time only) and activates the emulator; returns its C++ module."""
    global _extension
    if _extension is not None:
        return _extension
    from torch.utils.cpp_extension import load as load_extension

    _BUILD_DIR.mkdir(parents=True, exist_ok=True)
    ext = load_extension(
        name="torchrec_ascend_npu_emulator",
        sources=[str(_HERE / "emulator.cpp")],
        build_directory=str(_BUILD_DIR),
        extra_cflags=["-O1"],
        verbose=False,
    )
    torch.utils.rename_privateuse1_backend("npu")
    torch._register_device_module("npu", _stub_device_module())
    torch.utils.generate_methods_for_privateuse1_backend(
        for_tensor=True, for_module=True, for_storage=True
    )
    _extension = ext
    return ext


def fallback_ops() -> list[str]:
    """Operators that have run through the host fallback since the last clear."""
    return list(load().fallback_ops())


def clear_fallback_ops() -> None:
    load().clear_fallback_ops()


@contextlib.contextmanager
def strict(enabled: bool = True):
    """Within the block, non-ATen operators without an "npu" kernel raise."""
    ext = load()
    ext.set_strict(enabled)
    try:
        yield
    finally:
        ext.set_strict(False)
