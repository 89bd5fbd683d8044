"""HSTU encoder: stacked HSTU layers over jagged sequences, no padding.

Each layer (pre-norm, residual)::

    u, v, q, k = split(silu(LayerNorm(x) @ W_uvqk))   # fused op hstu_uvqk
    a = hstu_attention(q, k, v)              # pointwise SiLU attention + RAB, / N
    x = x + W_o(Dropout(u * LayerNorm(a)))   # fused op hstu_output_gate

By default the layer runs the fused ops (``fused=True``); ``fused=False`` runs the
same maths as separate PyTorch operators, kept as a reference and for comparison.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from torchrec_ascend.models.configs import ModelConfig
from torchrec_ascend.ops import hstu_attention, hstu_output_gate, hstu_uvqk

_EPS = 1e-6


class RelativeAttentionBias(nn.Module):
    """Learnable relative attention bias (RAB) of one layer, shared across heads.

    Attributes:
        pos_bias: (2N-1,) bias per relative position offset.
        ts_bias: (num_time_buckets + 1,) bias per log-bucketed time gap, or None.
    """

    def __init__(self, max_seq_len: int, num_time_buckets: int | None) -> None:
        super().__init__()
        self.pos_bias = nn.Parameter(torch.empty(2 * max_seq_len - 1).normal_(0, 0.02))
        self.ts_bias = (
            nn.Parameter(torch.empty(num_time_buckets + 1).normal_(0, 0.02))
            if num_time_buckets
            else None
        )


class HSTULayer(nn.Module):
    """One HSTU layer over jagged rows.

    Example::

        >>> layer = HSTULayer(ModelConfig(embedding_dim=8, num_heads=2,
        ...                               attention_dim=4, value_dim=4), False)
        >>> y = layer(torch.randn(5, 8), torch.tensor([0, 2, 5]))
    """

    def __init__(
        self, config: ModelConfig, use_time_bias: bool, fused: bool = True
    ) -> None:
        super().__init__()
        self.config = config
        self.fused = fused
        h, dqk, dv = config.num_heads, config.attention_dim, config.value_dim
        self.uvqk = nn.Parameter(
            torch.empty(config.embedding_dim, 2 * h * dv + 2 * h * dqk).normal_(0, 0.02)
        )
        self.output = nn.Linear(h * dv, config.embedding_dim)
        nn.init.xavier_uniform_(self.output.weight)
        nn.init.zeros_(self.output.bias)
        self.dropout = nn.Dropout(config.dropout)
        self.rab = RelativeAttentionBias(
            config.max_seq_len, config.num_time_buckets if use_time_bias else None
        )

    def forward(
        self,
        x: torch.Tensor,
        offsets: torch.Tensor,
        timestamps: torch.Tensor | None = None,
        query_timestamps: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(L, D) -> (L, D); ``offsets`` (B+1,), timestamps (L,) x int64 or None."""
        cfg = self.config
        h, dqk, dv = cfg.num_heads, cfg.attention_dim, cfg.value_dim
        if self.fused:
            uvqk = hstu_uvqk(x, self.uvqk, _EPS)
        else:
            uvqk = F.silu(F.layer_norm(x, (x.shape[-1],), eps=_EPS) @ self.uvqk)
        u, v, q, k = torch.split(uvqk, [h * dv, h * dv, h * dqk, h * dqk], dim=-1)

        ts_bias = self.rab.ts_bias if timestamps is not None else None
        attn = hstu_attention(
            q.reshape(-1, h, dqk),
            k.reshape(-1, h, dqk),
            v.reshape(-1, h, dv),
            offsets,
            cfg.max_seq_len,
            alpha=cfg.alpha,
            pos_bias=self.rab.pos_bias if cfg.position_bias else None,
            ts_bias=ts_bias,
            timestamps=timestamps if ts_bias is not None else None,
            query_timestamps=query_timestamps if ts_bias is not None else None,
        ).reshape(-1, h * dv)

        if self.fused:
            gated = hstu_output_gate(
                attn, u, _EPS, dropout=self.dropout.p, training=self.training
            )
        else:
            gated = self.dropout(u * F.layer_norm(attn, (h * dv,), eps=_EPS))
        return x + self.output(gated)


class HSTUEncoder(nn.Module):
    """A stack of :class:`HSTULayer`; input and output are (L, D) jagged rows.

    ``fused`` selects the fused layer ops (default) or the plain PyTorch path.
    """

    def __init__(
        self, config: ModelConfig, use_time_bias: bool, fused: bool = True
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            HSTULayer(config, use_time_bias, fused) for _ in range(config.num_blocks)
        )

    def forward(self, x, offsets, timestamps=None, query_timestamps=None):
        for layer in self.layers:
            x = layer(x, offsets, timestamps, query_timestamps)
        return x


def input_scale(embedding_dim: int) -> float:
    """Item embeddings are scaled by sqrt(D) before the position embedding is added."""
    return math.sqrt(embedding_dim)
