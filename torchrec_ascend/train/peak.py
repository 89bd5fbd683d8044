"""Measures this machine's dense matmul peak, the denominator of MFU."""

import time

import torch


def measure_matmul_peak(
    dtype: torch.dtype = torch.float32, size: int = 2048, seconds: float = 1.0
) -> float:
    """Best GFLOP/s of a square matmul over about ``seconds`` of repeats."""
    # A private generator: measuring must not shift the training RNG stream.
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=gen).to(dtype)
    b = torch.randn(size, size, generator=gen).to(dtype)
    for _ in range(2):
        torch.mm(a, b)
    best = 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        torch.mm(a, b)
        elapsed = time.perf_counter() - start
        best = max(best, 2.0 * size**3 / elapsed / 1e9)
    return best
