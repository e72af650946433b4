"""StepHessian against a dense float64 Hessian, including parameters the loss is linear in."""

import torch
from torch import nn

from curvlens import Problem
from curvlens.optim._step_hessian import StepHessian


class _LinearInB(nn.Module):
    """out = tanh(x a); the loss adds c * b, so it is linear in b (its gradient has no graph)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Parameter(torch.tensor([0.3, -0.7, 1.1], dtype=torch.float64))
        self.b = nn.Parameter(torch.tensor([0.5, -2.0], dtype=torch.float64))

    def forward(self, x):
        return torch.tanh(x @ self.a).unsqueeze(1)


def _dense_hessian(model, X, y, loss):
    flat0 = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    sizes = [p.numel() for p in model.parameters()]

    def f(flat):
        a, b = torch.split(flat, sizes)
        out = torch.tanh(X @ a).unsqueeze(1)
        return ((out - y) ** 2).mean() + (torch.tensor([3.0, -1.0], dtype=torch.float64) * b).sum()

    return torch.autograd.functional.hessian(f, flat0), torch.autograd.functional.jacobian(f, flat0)


def test_products_and_gradient_match_dense_when_the_loss_is_linear_in_a_parameter():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(6, 3, generator=g, dtype=torch.float64)
    y = torch.randn(6, 1, generator=g, dtype=torch.float64)
    m = _LinearInB()
    coef = torch.tensor([3.0, -1.0], dtype=torch.float64)

    def loss(out, target):
        return ((out - target) ** 2).mean() + (coef * m.b).sum()

    h = StepHessian(Problem(m, loss, (X, y)))
    H, grad = _dense_hessian(m, X, y, loss)
    V = torch.randn(5, 3, generator=g, dtype=torch.float64)
    torch.testing.assert_close(h.gradient, grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(h.matmat(V), H @ V, rtol=1e-10, atol=1e-12)
    assert torch.count_nonzero(H[3:]) == 0  # the b rows of the dense reference are zero


def test_a_loss_linear_in_every_parameter_has_zero_products():
    m = nn.Linear(2, 1, bias=False).double()
    X = torch.eye(2, dtype=torch.float64)

    def loss(out, target):
        return (out - target).sum()

    h = StepHessian(Problem(m, loss, (X, torch.zeros(2, 1, dtype=torch.float64))))
    torch.testing.assert_close(h.gradient, torch.ones(2, dtype=torch.float64))
    assert torch.equal(h.matvec(torch.tensor([1.0, -1.0], dtype=torch.float64)), torch.zeros(2, dtype=torch.float64))
