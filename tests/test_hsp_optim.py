"""Row-sparse optimizers against torch.optim on sparse gradients and a float64
reference for row-wise Adagrad."""

import pytest
import torch

from torchrec_ascend.distributed import Adagrad, Adam, RowwiseAdagrad


def _steps(rows=12, dim=5, steps=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(steps):
        ids = torch.unique(torch.randint(0, rows, (6,), generator=g))
        out.append((ids, torch.randn(ids.numel(), dim, generator=g)))
    return out


def _run_ours(opt, weight, steps):
    state = opt.init_state(weight)
    for step, (ids, grad) in enumerate(steps, start=1):
        opt.update(weight, ids, grad, state, step)
    return weight, state


def _run_torch(make_opt, weight, steps):
    param = torch.nn.Parameter(weight.clone())
    opt = make_opt([param])
    for ids, grad in steps:
        param.grad = torch.sparse_coo_tensor(ids.unsqueeze(0), grad, weight.shape)
        opt.step()
    return param.detach(), opt.state[param]


def test_adagrad_matches_torch_sparse_adagrad():
    weight = torch.randn(12, 5, dtype=torch.float64)
    steps = [(i, g.double()) for i, g in _steps()]
    ours, state = _run_ours(Adagrad(lr=0.3), weight.clone(), steps)
    ref, ref_state = _run_torch(lambda p: torch.optim.Adagrad(p, lr=0.3), weight, steps)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(state["sum"], ref_state["sum"], rtol=1e-12, atol=1e-12)


def test_adam_matches_torch_sparse_adam():
    weight = torch.randn(12, 5, dtype=torch.float64)
    steps = [(i, g.double()) for i, g in _steps(seed=3)]
    ours, state = _run_ours(Adam(lr=0.05), weight.clone(), steps)
    ref, ref_state = _run_torch(
        lambda p: torch.optim.SparseAdam(p, lr=0.05), weight, steps
    )
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(state["exp_avg"], ref_state["exp_avg"])
    torch.testing.assert_close(state["exp_avg_sq"], ref_state["exp_avg_sq"])


def test_rowwise_adagrad_matches_float64_formula():
    weight = torch.randn(12, 5)
    steps = _steps(seed=5)
    ours, state = _run_ours(RowwiseAdagrad(lr=0.2, eps=1e-8), weight.clone(), steps)
    ref = weight.double().clone()
    acc = torch.zeros(12, dtype=torch.float64)
    for ids, grad in steps:
        for i, row in zip(ids.tolist(), grad.double()):
            acc[i] += float((row * row).mean())
            ref[i] -= 0.2 * row / (acc[i].sqrt() + 1e-8)
    torch.testing.assert_close(ours.double(), ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(state["sum"].double(), acc, rtol=1e-5, atol=1e-7)
    # Rows never touched keep their weights exactly.
    touched = torch.unique(torch.cat([i for i, _ in steps]))
    untouched = torch.ones(12, dtype=torch.bool)
    untouched[touched] = False
    assert torch.equal(ours[untouched], weight[untouched])


@pytest.mark.parametrize("opt", [RowwiseAdagrad(0.1), Adagrad(0.1), Adam(0.1)])
def test_bad_gradient_shape_is_named(opt):
    weight = torch.zeros(4, 3)
    state = opt.init_state(weight)
    with pytest.raises(ValueError, match="grad must be"):
        opt.update(weight, torch.tensor([0, 1]), torch.zeros(2, 4), state, 1)


def test_bad_hyperparameters():
    with pytest.raises(ValueError, match="lr"):
        Adagrad(lr=0.0)
    with pytest.raises(ValueError, match="betas"):
        Adam(lr=0.1, betas=(1.0, 0.9))
