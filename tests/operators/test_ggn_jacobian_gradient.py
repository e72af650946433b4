"""JacobianGGNOperator.loss_and_gradient (``J^T dl/df``) against plain autograd in float64, and
output_entries' per-sample cache."""

import pytest
import torch
from torch import nn

from curvlens import Problem
from curvlens.operators.ggn_jacobian import JacobianGGNOperator, output_entries
from tests.operators.test_ggn_jacobian import CASES, D64, _gen, _mlp, _Poisson, _poisson_rows


def _autograd(model, crit, batches, weights):
    """sum_b w_b loss_b and its gradient, by one backward pass of the model (independent of curvlens)."""
    params = list(model.parameters())
    total = sum(w * crit(model(x), y) for (x, y), w in zip(batches, weights))
    g = torch.autograd.grad(total, params)
    return total.detach(), torch.cat([t.reshape(-1) for t in g])


@pytest.mark.parametrize("name,loss,targets", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("method,dense", [("vmap", True), ("backward", False)])
def test_gradient_matches_autograd(name, loss, targets, method, dense):
    g = _gen(5)
    x, y = torch.randn(20, 4, generator=g, dtype=D64), targets(g)
    model, crit = _mlp(), loss()
    op = JacobianGGNOperator(model, crit, (x, y), method=method, dense=dense)
    f, grad = op.loss_and_gradient()
    f_ref, g_ref = _autograd(model, crit, [(x, y)], [1.0])
    torch.testing.assert_close(grad, g_ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(f, f_ref, rtol=1e-12, atol=0.0)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_several_batches_and_a_pinn_residual(reduction):
    g = _gen(6)
    rows = _poisson_rows(70, g)  # the "batched" route: sub-batches of 32, 32 and 6 samples
    zeros = torch.zeros(70, 1, dtype=D64)
    model, crit = _Poisson(), nn.MSELoss(reduction=reduction)
    batches = [(rows[:25], zeros[:25]), (rows[25:], zeros[25:])]
    op = JacobianGGNOperator(model, crit, batches, verify=True)
    assert op.method_used == "batched"
    weights = [25 / 70, 45 / 70] if reduction == "mean" else [1.0, 1.0]
    f, grad = op.loss_and_gradient()
    f_ref, g_ref = _autograd(model, crit, batches, weights)
    torch.testing.assert_close(grad, g_ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(f, f_ref, rtol=1e-12, atol=0.0)
    # and the same as the Problem's own loss and gradient
    pf, pg = op.problem.loss_and_gradient(flat=True)
    torch.testing.assert_close(grad, pg, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(f, pf, rtol=1e-12, atol=0.0)


def test_gradient_is_of_the_build_weights():
    g = _gen(7)
    x, y = torch.randn(12, 4, generator=g, dtype=D64), torch.randn(12, 3, generator=g, dtype=D64)
    model = _mlp()
    op = JacobianGGNOperator(model, nn.MSELoss(), (x, y))
    before = op.loss_and_gradient()
    with torch.no_grad():
        model[0].weight.add_(0.1)
    assert op.is_stale
    after = op.loss_and_gradient()  # a snapshot: still the gradient at the weights it was built at
    torch.testing.assert_close(after[1], before[1], rtol=0, atol=0)


def test_output_entries_cache_runs_no_forward_on_known_shapes():
    g = torch.Generator().manual_seed(4)
    x, y = torch.randn(30, 4, generator=g, dtype=torch.float64), torch.randn(30, 3, generator=g, dtype=torch.float64)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    calls = []
    model.register_forward_hook(lambda *a: calls.append(1))
    cache: dict = {}
    first = output_entries(Problem(model, nn.MSELoss(), [(x[:7], y[:7]), (x[7:], y[7:])]), cache)
    assert first == 30 * 3 and len(calls) == 1 and cache  # one forward: both batches have rows of shape (4,)
    assert cache == {((4,), torch.float64): 3}
    again = output_entries(Problem(model, nn.MSELoss(), [(x[:11], y[:11])]), cache)
    assert again == 11 * 3 and len(calls) == 1  # the size came from the cache
    x3 = torch.randn(5, 2, 4, generator=g, dtype=torch.float64)  # another per-sample shape: a forward
    assert output_entries(Problem(model, nn.MSELoss(), (x3, torch.zeros(5, 2, 3, dtype=torch.float64))), cache) == 30
    assert len(calls) == 2 and cache[((2, 4), torch.float64)] == 6
    assert output_entries(Problem(model, nn.MSELoss(), [(x[:7], y[:7]), (x[7:], y[7:])])) == 90  # no cache
    assert len(calls) == 4
