"""Sampled softmax against a float64 loop, including accidental-hit masking."""

import math

import pytest
import torch
import torch.nn.functional as F

from torchrec_ascend.models import SampledSoftmaxLoss


def naive_loss(q, pos, pos_ids, neg, neg_ids, temperature):
    total = 0.0
    for t in range(q.shape[0]):
        rows = neg[t] if neg.dim() == 3 else neg
        ids = neg_ids[t] if neg_ids.dim() == 2 else neg_ids
        logits = [float(q[t] @ pos[t]) / temperature]
        for r in range(rows.shape[0]):
            if int(ids[r]) != int(pos_ids[t]):
                logits.append(float(q[t] @ rows[r]) / temperature)
        m = max(logits)
        lse = m + math.log(sum(math.exp(x - m) for x in logits))
        total += lse - logits[0]
    return total / q.shape[0]


@pytest.mark.parametrize("shared", [False, True])
def test_loss_and_gradients_match_float64(shared):
    gen = torch.Generator().manual_seed(1)
    tokens, negatives, dim = 7, 5, 4
    q = F.normalize(
        torch.randn(tokens, dim, generator=gen, dtype=torch.float64), dim=-1
    )
    pos = F.normalize(
        torch.randn(tokens, dim, generator=gen, dtype=torch.float64), dim=-1
    )
    pos_ids = torch.randint(1, 6, (tokens,), generator=gen)
    shape = (negatives,) if shared else (tokens, negatives)
    neg = F.normalize(
        torch.randn(*shape, dim, generator=gen, dtype=torch.float64), dim=-1
    )
    neg_ids = torch.randint(1, 6, shape, generator=gen)  # many accidental hits
    loss_fn = SampledSoftmaxLoss(temperature=0.1)

    q.requires_grad_()
    loss = loss_fn(q, pos, pos_ids, neg, neg_ids)
    assert math.isclose(
        float(loss),
        naive_loss(q.detach(), pos, pos_ids, neg, neg_ids, 0.1),
        rel_tol=1e-9,
    )
    (grad,) = torch.autograd.grad(loss, q)

    def fn(x):
        return loss_fn(x, pos, pos_ids, neg, neg_ids)

    numeric = torch.autograd.functional.jacobian(fn, q.detach())
    torch.testing.assert_close(grad, numeric)


def test_masked_accidental_hit_does_not_change_loss():
    q = F.normalize(torch.randn(3, 4, dtype=torch.float64), dim=-1)
    pos = F.normalize(torch.randn(3, 4, dtype=torch.float64), dim=-1)
    pos_ids = torch.tensor([1, 2, 3])
    neg = F.normalize(torch.randn(3, 2, 4, dtype=torch.float64), dim=-1)
    loss_fn = SampledSoftmaxLoss(0.05)
    clean = loss_fn(q, pos, pos_ids, neg, torch.tensor([[7, 8], [7, 8], [7, 8]]))
    # Replace one negative by an exact copy of the positive with its id: masked out,
    # so only the remaining negative counts.
    neg2 = neg.clone()
    neg2[0, 1] = pos[0]
    hit = loss_fn(q, pos, pos_ids, neg2, torch.tensor([[7, 1], [7, 8], [7, 8]]))
    ref = naive_loss(
        q, pos, pos_ids, neg2, torch.tensor([[7, 1], [7, 8], [7, 8]]), 0.05
    )
    assert math.isclose(float(hit), ref, rel_tol=1e-9)
    assert not math.isclose(float(hit), float(clean))


def test_empty_batch_gives_zero_loss_with_gradient_path():
    q = torch.zeros(0, 4, requires_grad=True)
    loss = SampledSoftmaxLoss(0.1)(
        q,
        torch.zeros(0, 4),
        torch.zeros(0, dtype=torch.int64),
        torch.zeros(3, 4),
        torch.tensor([1, 2, 3]),
    )
    assert float(loss) == 0.0
    loss.backward()
