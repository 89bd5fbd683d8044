"""The HSTU layer and both encoders against straightforward float64 computations."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from reference import reference_hstu_attention

from torchrec_ascend.models import HSTULayer, ModelConfig, SASRecEncoder
from torchrec_ascend.models.hstu import HSTUEncoder

CFG = ModelConfig(
    embedding_dim=8, num_blocks=2, num_heads=2, attention_dim=3, value_dim=4,
    max_seq_len=12, dropout=0.0, input_dropout=0.0,
)  # fmt: skip


def reference_layer(layer, x, offsets, timestamps, query_timestamps):
    cfg = layer.config
    h, dqk, dv = cfg.num_heads, cfg.attention_dim, cfg.value_dim
    normed = F.layer_norm(x, (x.shape[-1],), eps=1e-6)
    u, v, q, k = torch.split(
        F.silu(normed @ layer.uvqk), [h * dv, h * dv, h * dqk, h * dqk], dim=-1
    )
    attn = reference_hstu_attention(
        q.reshape(-1, h, dqk), k.reshape(-1, h, dqk), v.reshape(-1, h, dv), offsets,
        cfg.max_seq_len, alpha=cfg.alpha, pos_bias=layer.rab.pos_bias,
        ts_bias=layer.rab.ts_bias, timestamps=timestamps,
        query_timestamps=query_timestamps,
    ).reshape(-1, h * dv)  # fmt: skip
    y = u * F.layer_norm(attn, (h * dv,), eps=1e-6)
    return x + layer.output(y)


@pytest.mark.parametrize("use_time", [False, True])
def test_hstu_layer_matches_reference(use_time):
    torch.manual_seed(0)
    layer = HSTULayer(CFG, use_time_bias=use_time).double()
    lengths = torch.tensor([3, 0, 1, 12, 5])
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
    total = int(lengths.sum())
    x = torch.randn(total, 8, dtype=torch.float64, requires_grad=True)
    ts = torch.cumsum(torch.randint(0, 10_000, (total,)), 0) if use_time else None
    tq = ts + 100 if use_time else None

    out = layer(x, offsets, ts, tq)
    ref = reference_layer(layer, x, offsets, ts, tq)
    torch.testing.assert_close(out, ref)

    grad_out = torch.randn_like(out)
    params = [x] + [p for p in layer.parameters() if p.requires_grad]
    got = torch.autograd.grad(out, params, grad_out, allow_unused=True)
    want = torch.autograd.grad(ref, params, grad_out, allow_unused=True)
    for g, w in zip(got, want):
        if w is None:
            assert g is None or not g.abs().any()
        else:
            torch.testing.assert_close(g, w)


@pytest.mark.parametrize("model", ["hstu", "sasrec"])
def test_encoders_are_causal_and_batch_independent(model):
    torch.manual_seed(1)
    cfg = dataclasses.replace(CFG, model=model)
    encoder = HSTUEncoder(cfg, False) if model == "hstu" else SASRecEncoder(cfg)
    encoder.eval()
    x = torch.randn(10, 8)
    offsets = torch.tensor([0, 4, 10])
    full = encoder(x, offsets)

    # A sequence alone gives the same rows as inside the batch.
    alone = encoder(x[4:], torch.tensor([0, 6]))
    torch.testing.assert_close(full[4:], alone, atol=1e-5, rtol=1e-5)

    # Changing a later item never changes earlier outputs (causal).
    x2 = x.clone()
    x2[8] += torch.randn(8)  # not a constant shift, which LayerNorm would erase
    changed = encoder(x2, offsets)
    torch.testing.assert_close(changed[:8], full[:8], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(changed[8], full[8])
