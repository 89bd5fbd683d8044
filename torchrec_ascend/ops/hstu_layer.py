"""Fused pieces of the HSTU layer around the attention: front-ends and autograd.

The kernels (``src_cpp/hstu_layer_ops.cpp``) are ATen compositions registered as
single ops, so they run on any device; their gain is memory: each op keeps only its
inputs and the LayerNorm statistics for the backward, not the normalised rows or the
pre-activation.
"""

import torch

_OP = torch.ops.torchrec_ascend


def _stats_dtype(x: torch.Tensor) -> torch.dtype:
    # LayerNorm statistics of reduced-precision inputs are kept in float32.
    return torch.float32 if x.dtype in (torch.bfloat16, torch.float16) else x.dtype


@torch.library.register_fake("torchrec_ascend::hstu_uvqk")
def _uvqk_fake(x, weight, eps):
    stats = x.new_empty((x.shape[0], 1), dtype=_stats_dtype(x))
    return x.new_empty((x.shape[0], weight.shape[1])), stats, torch.empty_like(stats)


@torch.library.register_fake("torchrec_ascend::hstu_uvqk_backward")
def _uvqk_backward_fake(grad_out, x, weight, mean, rstd):
    return torch.empty_like(x), torch.empty_like(weight)


@torch.library.register_fake("torchrec_ascend::hstu_output_gate")
def _gate_fake(attn, u, eps, dropout_mask):
    stats = attn.new_empty((attn.shape[0], 1), dtype=_stats_dtype(attn))
    return torch.empty_like(attn), stats, torch.empty_like(stats)


@torch.library.register_fake("torchrec_ascend::hstu_output_gate_backward")
def _gate_backward_fake(grad_out, attn, u, mean, rstd, dropout_mask):
    return torch.empty_like(attn), torch.empty_like(u)


def _uvqk_setup(ctx, inputs, output):
    x, weight, _ = inputs
    _, mean, rstd = output
    ctx.save_for_backward(x, weight, mean, rstd)


def _uvqk_backward(ctx, grad_out, _grad_mean, _grad_rstd):
    x, weight, mean, rstd = ctx.saved_tensors
    grad_x, grad_weight = _OP.hstu_uvqk_backward(grad_out, x, weight, mean, rstd)
    return grad_x, grad_weight, None


def _gate_setup(ctx, inputs, output):
    attn, u, _, dropout_mask = inputs
    _, mean, rstd = output
    ctx.save_for_backward(attn, u, mean, rstd, dropout_mask)


def _gate_backward(ctx, grad_out, _grad_mean, _grad_rstd):
    attn, u, mean, rstd, dropout_mask = ctx.saved_tensors
    grad_attn, grad_u = _OP.hstu_output_gate_backward(
        grad_out, attn, u, mean, rstd, dropout_mask
    )
    return grad_attn, grad_u, None, None


torch.library.register_autograd(
    "torchrec_ascend::hstu_uvqk", _uvqk_backward, setup_context=_uvqk_setup
)
torch.library.register_autograd(
    "torchrec_ascend::hstu_output_gate", _gate_backward, setup_context=_gate_setup
)


def hstu_uvqk(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``silu(LayerNorm(x) @ weight)``, the UVQK projection of an HSTU layer.

    Args:
        x: (L, D) jagged rows (float32/float64/bfloat16).
        weight: (D, F), same dtype.
        eps: LayerNorm epsilon (the LayerNorm has no affine parameters).

    Returns:
        (L, F) activations.

    Example::

        >>> y = hstu_uvqk(torch.randn(5, 8), torch.randn(8, 12))
        >>> y.shape
        torch.Size([5, 12])
    """
    return _OP.hstu_uvqk(x, weight, eps)[0]


def hstu_output_gate(
    attn: torch.Tensor,
    u: torch.Tensor,
    eps: float = 1e-6,
    dropout: float = 0.0,
    training: bool = False,
) -> torch.Tensor:
    """``dropout(u * LayerNorm(attn))``, the gated output of an HSTU layer.

    Args:
        attn: (L, F) attention output rows.
        u: (L, F) gates, same dtype.
        eps: LayerNorm epsilon (no affine parameters).
        dropout: drop probability, applied only when ``training``.
        training: whether dropout is active.

    Returns:
        (L, F) gated rows.
    """
    mask = None
    if training and dropout > 0.0:
        keep = torch.empty_like(attn).bernoulli_(1.0 - dropout)
        mask = keep / (1.0 - dropout)
    return _OP.hstu_output_gate(attn, u, eps, mask)[0]
