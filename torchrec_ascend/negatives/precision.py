"""Reduced-precision negative embeddings (positives and the loss stay fp32)."""

import torch

NEGATIVE_DTYPES = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}
"""Names accepted by ``LossConfig.negative_dtype`` and their torch dtypes."""


def negative_dtype(name: str) -> torch.dtype:
    """The torch dtype of a ``LossConfig.negative_dtype`` name.

    Raises:
        ValueError: naming the accepted values when ``name`` is unknown.
    """
    if name not in NEGATIVE_DTYPES:
        raise ValueError(
            f"negative_dtype must be one of {sorted(NEGATIVE_DTYPES)}, got {name!r}"
        )
    return NEGATIVE_DTYPES[name]


class _RoundThrough(torch.autograd.Function):
    @staticmethod
    def forward(ctx, rows: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return rows.to(dtype).to(rows.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        # The gradient reaches the full-precision table unrounded: an fp16 gradient
        # of a mean over thousands of tokens would underflow.
        return grad, None


def round_negatives(rows: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Rounds negative rows to ``dtype`` and back, keeping the gradient exact.

    This is what the model sees when negatives are looked up in reduced precision;
    used on the resident (non-segmented) paths. The segmented path stores the
    rounded rows themselves instead.

    Args:
        rows: (..., D) x float32 negative embeddings.
        dtype: storage dtype (float16 or bfloat16; float32 returns ``rows``).

    Returns:
        (..., D) x rows.dtype, values representable in ``dtype``.
    """
    if dtype == rows.dtype:
        return rows
    return _RoundThrough.apply(rows, dtype)
