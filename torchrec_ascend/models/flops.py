"""FLOP accounting for MFU and cost-based load balancing: the one source of truth.

Counts are multiply-adds x 2 of the matrix products only (projections, attention,
loss logits); element-wise work (norms, SiLU, masks) is not counted, as is usual for
MFU. A training step costs 3x the forward pass (forward, plus gradients with respect
to activations and weights).
"""

import torch

from torchrec_ascend.models.configs import ModelConfig


def attention_pairs(lengths: torch.Tensor) -> int:
    """Causal (query, key) pairs: sum over sequences of n (n + 1) / 2."""
    lengths = lengths.long()
    return int((lengths * (lengths + 1) // 2).sum())


def sequence_cost(lengths: torch.Tensor, config: ModelConfig) -> torch.Tensor:
    """(B,) x float64 forward FLOPs of the encoder for each sequence length.

    HSTU layer, for a sequence of n tokens::

        UVQK projection  2 n D (2 H d_v + 2 H d_qk)
        attention        2 P H (d_qk + d_v),  P = n (n + 1) / 2 causal pairs
        output proj      2 n H d_v D

    SASRec layer: QKV + output projections 8 n D^2, attention 4 P D, FFN 4 n D^2.
    """
    n = lengths.double()
    pairs = n * (n + 1) / 2
    d = config.embedding_dim
    if config.model == "hstu":
        h, dqk, dv = config.num_heads, config.attention_dim, config.value_dim
        linear = 2 * n * d * (2 * h * dv + 2 * h * dqk) + 2 * n * h * dv * d
        attention = 2 * pairs * h * (dqk + dv)
    else:
        linear = 8 * n * d * d + 4 * n * d * d
        attention = 4 * pairs * d
    return config.num_blocks * (linear + attention)


def loss_flops(num_tokens: int, num_negatives: int, embedding_dim: int) -> float:
    """Forward FLOPs of the sampled-softmax logits (positive + negatives)."""
    return 2.0 * num_tokens * (num_negatives + 1) * embedding_dim


def train_step_flops(
    lengths: torch.Tensor, config: ModelConfig, num_negatives: int
) -> float:
    """FLOPs of one training step (forward + backward) over jagged ``lengths``."""
    forward = float(sequence_cost(lengths, config).sum())
    forward += loss_flops(int(lengths.sum()), num_negatives, config.embedding_dim)
    return 3.0 * forward


def sample_train_flops(
    lengths: torch.Tensor, config: ModelConfig, num_negatives: int
) -> torch.Tensor:
    """(B,) x float64 training FLOPs (forward + backward) of each sequence alone.

    The per-sample split of :func:`train_step_flops`: its sum over a batch equals
    ``train_step_flops(lengths, ...)``, which makes it the cost that load balancing
    equalises across devices.
    """
    n = lengths.double()
    per_token_loss = loss_flops(1, num_negatives, config.embedding_dim)
    return 3.0 * (sequence_cost(lengths, config) + n * per_token_loss)
