"""NewtonCG's product routes: the Jacobian route gives the same steps as autograd products."""

import pytest
import torch
from torch import nn

from curvlens.optim.newton_cg import NewtonCG

DT = torch.float64


def _data(seed=0, n=40):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g, dtype=DT)
    return x, (x[:, :1] * x[:, 1:2] > 0).to(DT)


def _model(seed=0):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 1)).to(DT)


@pytest.mark.parametrize("preconditioner", [None, "exact"])
def test_jacobian_and_autograd_routes_take_the_same_steps(preconditioner):
    # CG run to convergence and no backtracking / line search, so that rounding cannot flip a
    # choice between two nearly equal candidates
    batch = _data()
    runs = {}
    for product in ("jacobian", "autograd"):
        model = _model()
        opt = NewtonCG(model, nn.BCEWithLogitsLoss(), damping=1e-2, curvature_fraction=0.5, product=product,
                       preconditioner=preconditioner, cg_progress_tol=None, cg_rtol=1e-13, backtrack=False,
                       line_search=False, generator=3)
        for _ in range(3):
            opt.step(batch)
        assert opt.products.last_route == product
        runs[product] = (torch.cat([p.detach().reshape(-1) for p in model.parameters()]), opt.last_step)
    (wj, sj), (wa, sa) = runs["jacobian"], runs["autograd"]
    torch.testing.assert_close(wj, wa, rtol=1e-8, atol=1e-10)
    assert sj.damping == pytest.approx(sa.damping, rel=1e-12)
    assert sj.rho == pytest.approx(sa.rho, rel=1e-6)


def test_auto_route_choice_and_fallbacks():
    batch = _data()
    opt = NewtonCG(_model(), nn.BCEWithLogitsLoss(), generator=0)
    opt.step(batch)
    assert opt.products.last_route == "jacobian" and opt.products.verified
    small = NewtonCG(_model(), nn.BCEWithLogitsLoss(), max_jacobian_entries=10, generator=0)
    small.step(batch)
    assert small.products.last_route == "autograd"
    hess = NewtonCG(_model(), nn.BCEWithLogitsLoss(), curvature="hessian", generator=0)
    hess.step(batch)
    assert hess.products.last_route == "autograd" and "GGN" in hess.products.reason
    with pytest.raises(ValueError, match=r"^product: the Jacobian would have .* entries \(M \* D\), more than "):
        NewtonCG(_model(), nn.BCEWithLogitsLoss(), product="jacobian", max_jacobian_entries=10, generator=0).step(batch)


class _Derivative(nn.Module):
    """Outputs u(x) + u'(x) through autograd.grad inside forward: torch.func cannot transform it."""

    def __init__(self):
        super().__init__()
        self.u = _model(2)

    def forward(self, x):
        with torch.enable_grad():
            xr = x.detach().requires_grad_(True)
            u = self.u(xr)
            return u + torch.autograd.grad(u.sum(), xr, create_graph=True)[0][:, :1]


def test_model_without_torch_func_takes_the_sub_batch_jacobian_route():
    # 70 samples in the curvature batch: sub-batches of 32, 32 and 6 samples
    batch = _data(1, n=140)
    runs = {}
    for product in ("auto", "autograd"):
        model = _Derivative()
        opt = NewtonCG(model, "mse", damping=1e-2, curvature_fraction=0.5, product=product, preconditioner=None,
                       cg_progress_tol=None, cg_rtol=1e-13, backtrack=False, line_search=False, generator=3)
        for _ in range(3):
            opt.step(batch)
        runs[product] = (torch.cat([p.detach().reshape(-1) for p in model.parameters()]), opt)
    (wj, oj), (wa, oa) = runs["auto"], runs["autograd"]
    assert oj.products.last_route == "jacobian" and oj.products.method == "batched" and oj.products.verified
    assert oj.products.reason.startswith("Jacobian route (batched")
    assert oa.products.last_route == "autograd"
    torch.testing.assert_close(wj, wa, rtol=1e-8, atol=1e-10)
    assert oj.last_step.rho == pytest.approx(oa.last_step.rho, rel=1e-6)


class _Centered(nn.Module):
    """Samples interact through a batch mean: the per-sample Jacobian is wrong for it."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(3, 4), nn.Linear(4, 1)

    def forward(self, x):
        h = torch.tanh(self.a(x))
        return self.b(h - 0.5 * h.mean(0, keepdim=True))


def test_interacting_samples_fall_back_to_autograd():
    with torch.random.fork_rng():
        torch.manual_seed(1)
        model = _Centered().to(DT)
    opt = NewtonCG(model, nn.BCEWithLogitsLoss(), generator=0)
    opt.step(_data())
    assert opt.products.last_route == "autograd" and opt.products.reason.startswith("Jacobian route unavailable")
    assert opt.last_step.accepted


def test_bad_product_arguments():
    with pytest.raises(ValueError, match=r"^product: expected one of \('auto', 'autograd', 'jacobian'\), got 'x'"):
        NewtonCG(_model(), nn.BCEWithLogitsLoss(), product="x")
    with pytest.raises(ValueError, match=r"^max_jacobian_entries: expected a positive integer, got 0"):
        NewtonCG(_model(), nn.BCEWithLogitsLoss(), max_jacobian_entries=0)


class _CenteredDerivative(nn.Module):
    """Samples interact through a batch mean, and forward calls autograd.grad (no torch.func)."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(3, 4), nn.Linear(4, 1)

    def forward(self, x):
        with torch.enable_grad():
            xr = x.detach().requires_grad_(True)
            h = torch.tanh(self.a(xr))
            u = self.b(h * (1.0 + h.mean(0, keepdim=True)))
            return u + torch.autograd.grad(u.sum(), xr, create_graph=True)[0][:, :1]


def test_interacting_samples_without_torch_func_use_autograd_after_one_exact_step():
    with torch.random.fork_rng():
        torch.manual_seed(1)
        model = _CenteredDerivative().to(DT)
    opt = NewtonCG(model, "mse", curvature_fraction=1.0, generator=0)
    batch = _data(2, n=80)
    opt.step(batch)  # the sub-batch check fails: this step's Jacobian comes from full-batch backward passes
    assert opt.products.last_route == "jacobian" and opt.products.disabled
    assert opt.products.reason == "Jacobian route unavailable (no per-sample Jacobian: the samples interact)"
    opt.step(batch)
    assert opt.products.last_route == "autograd" and opt.last_step.accepted


def test_whole_batch_jacobian_route_takes_the_gradient_from_the_jacobian(monkeypatch):
    import curvlens.optim.newton_cg as ncg

    batch = _data(seed=2)
    runs = {}
    for product in ("jacobian", "autograd"):
        model = _model(seed=1)
        opt = NewtonCG(model, nn.BCEWithLogitsLoss(), damping=1e-2, curvature_fraction=1.0, product=product,
                       cg_progress_tol=None, cg_rtol=1e-13, backtrack=False, line_search=False, generator=0)
        calls = []
        real = ncg.loss_and_gradient
        monkeypatch.setattr(ncg, "loss_and_gradient", lambda p: calls.append(1) or real(p))
        for _ in range(3):
            opt.step(batch)
        monkeypatch.setattr(ncg, "loss_and_gradient", real)
        # the Jacobian route does no separate loss-and-gradient pass; autograd does one a step
        assert len(calls) == (0 if product == "jacobian" else 3)
        runs[product] = (torch.cat([p.detach().reshape(-1) for p in model.parameters()]), opt.last_step)
    (wj, sj), (wa, sa) = runs["jacobian"], runs["autograd"]
    torch.testing.assert_close(wj, wa, rtol=1e-8, atol=1e-10)
    assert sj.loss_before == pytest.approx(sa.loss_before, rel=1e-12)
    assert sj.grad_norm == pytest.approx(sa.grad_norm, rel=1e-10)
