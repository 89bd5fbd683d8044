"""SASRec encoder (causal softmax self-attention), the in-house baseline.

It runs on padded batches internally (the standard formulation); inputs and outputs
are jagged so it plugs into the same retrieval model and loss as HSTU.
"""

import torch
import torch.nn.functional as F
from torch import nn

from torchrec_ascend.models.configs import ModelConfig
from torchrec_ascend.ops import jagged_to_padded, padded_to_jagged


class SASRecLayer(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        d = config.embedding_dim
        self.num_heads = config.num_heads
        self.dropout = config.dropout
        self.attn_norm = nn.LayerNorm(d, eps=1e-8)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ffn_norm = nn.LayerNorm(d, eps=1e-8)
        self.ffn = nn.Sequential(
            nn.Linear(d, d), nn.ReLU(), nn.Dropout(config.dropout), nn.Linear(d, d)
        )
        self.out_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        """x: (B, N, D); attn_mask: (B, 1, N, N) x bool, True where allowed."""
        batch, n, d = x.shape
        qkv = self.qkv(self.attn_norm(x)).reshape(batch, n, 3, self.num_heads, -1)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        attn = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=attn_mask,
            dropout_p=self.dropout if self.training else 0.0,
        )
        x = x + self.out_dropout(self.proj(attn.transpose(1, 2).reshape(batch, n, d)))
        return x + self.out_dropout(self.ffn(self.ffn_norm(x)))


class SASRecEncoder(nn.Module):
    """Jagged (L, D) in, jagged (L, D) out; timestamps are accepted and ignored."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            SASRecLayer(config) for _ in range(config.num_blocks)
        )
        self.final_norm = nn.LayerNorm(config.embedding_dim, eps=1e-8)

    def forward(self, x, offsets, timestamps=None, query_timestamps=None):
        if x.shape[0] == 0:
            return self.final_norm(x)
        lengths = offsets[1:] - offsets[:-1]
        width = int(lengths.max())
        padded, valid = jagged_to_padded(x, offsets, width)
        causal = torch.ones(width, width, dtype=torch.bool, device=x.device).tril()
        # The diagonal stays open so padded rows never see an all-masked row (NaN).
        eye = torch.eye(width, dtype=torch.bool, device=x.device)
        mask = (causal & valid[:, None, :]) | eye
        for layer in self.layers:
            padded = layer(padded, mask[:, None])
        return self.final_norm(padded_to_jagged(padded, offsets))
