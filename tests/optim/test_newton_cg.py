"""NewtonCG against exact references: quadratic, least squares, scipy's Newton-CG on logistic regression."""

import math

import numpy as np
import pytest
import scipy.optimize as so
import torch
from torch import nn

from curvlens.optim._base import OPTIMIZERS, build_optimizer
from curvlens.optim.newton_cg import NewtonCG, NewtonCGStep

DT = torch.float64


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _quadratic(seed=0, d=6):
    """f(w) = 1/2 (w - w*)^T A (w - w*) as a loss_fn(model, batch) on a bias-free Linear."""
    g = _gen(seed)
    Q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=DT))
    A = Q @ torch.diag(torch.logspace(-1, 2, d, dtype=DT)) @ Q.T
    w_star = torch.randn(d, generator=g, dtype=DT)
    model = nn.Linear(d, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.randn(1, d, generator=g, dtype=DT))

    def loss_fn(model, batch):
        e = model.weight[0] - w_star
        return 0.5 * e @ (A @ e) + 0.0 * batch[0].sum()

    return model, loss_fn, (torch.zeros(4, 1, dtype=DT), torch.zeros(4, 1, dtype=DT)), w_star


def test_registered_as_newton_cg():
    assert OPTIMIZERS["newton_cg"] is NewtonCG
    model = nn.Linear(2, 1).double()
    assert isinstance(build_optimizer("newton_cg", model, nn.MSELoss(), damping=0.5), NewtonCG)


def test_undamped_hessian_step_lands_on_quadratic_minimizer():
    model, loss_fn, batch, w_star = _quadratic()
    opt = NewtonCG(model, loss_fn, curvature="hessian", damping=0.0, curvature_fraction=1.0, preconditioner=None,
                   cg_progress_tol=None, cg_rtol=1e-14, generator=0)
    loss = opt.step(batch)
    assert isinstance(loss, torch.Tensor) and loss.dtype == DT and not loss.requires_grad
    torch.testing.assert_close(model.weight.detach()[0], w_star, rtol=0, atol=1e-10)
    rec = opt.last_step
    assert isinstance(rec, NewtonCGStep) and rec.accepted and rec.alpha == 1.0
    assert rec.loss_before == pytest.approx(float(loss)) and rec.loss_after < 1e-18
    assert not rec.negative_curvature and rec.cg_stop_reason == "residual"
    assert abs(rec.rho - 1.0) < 1e-6  # the quadratic model is exact


def test_linear_least_squares_one_step_matches_lstsq():
    g = _gen(1)
    X = torch.randn(50, 5, generator=g, dtype=DT) * torch.logspace(0, -1.5, 5, dtype=DT)
    y = torch.randn(50, 2, generator=g, dtype=DT)
    model = nn.Linear(5, 2).double()
    opt = NewtonCG(model, nn.MSELoss(), damping=0.0, curvature_fraction=1.0, cg_progress_tol=None,
                   cg_rtol=1e-14, generator=0)
    opt.step((X, y))
    Xa = torch.cat([X, torch.ones(50, 1, dtype=DT)], 1)
    sol = torch.linalg.lstsq(Xa, y).solution
    torch.testing.assert_close(model.weight.detach(), sol[:5].T, rtol=0, atol=1e-9)
    torch.testing.assert_close(model.bias.detach(), sol[5], rtol=0, atol=1e-9)


def _logreg(seed=3, n=300, d=8):
    g = _gen(seed)
    X = torch.randn(n, d, generator=g, dtype=DT) * torch.logspace(0, -1, d, dtype=DT)
    w = torch.randn(d, generator=g, dtype=DT) * 2
    y = (torch.rand(n, generator=g, dtype=DT) < torch.sigmoid(X @ w)).to(DT)[:, None]
    return X, y


def test_full_batch_logistic_regression_matches_scipy_newton_cg():
    X, y = _logreg()
    Xa, yy = np.hstack([X.numpy(), np.ones((len(X), 1))]), y.numpy()[:, 0]

    def f(w):
        z = Xa @ w
        return np.mean(np.logaddexp(0, z) - yy * z)

    def jac(w):
        return Xa.T @ (1 / (1 + np.exp(-(Xa @ w))) - yy) / len(yy)

    def hessp(w, v):
        s = 1 / (1 + np.exp(-(Xa @ w)))
        return Xa.T @ (s * (1 - s) * (Xa @ v)) / len(yy)

    ref = so.minimize(f, np.zeros(Xa.shape[1]), jac=jac, hessp=hessp, method="Newton-CG",
                      options={"xtol": 1e-14, "maxiter": 200})
    w_star = ref.x.copy()
    for _ in range(3):  # polish the reference with exact dense Newton steps (float64)
        s = 1 / (1 + np.exp(-(Xa @ w_star)))
        w_star -= np.linalg.solve(Xa.T @ (Xa * (s * (1 - s))[:, None]) / len(yy), jac(w_star))
    assert np.max(np.abs(w_star - ref.x)) < 1e-4  # scipy found the same optimum
    model = nn.Linear(X.shape[1], 1).double()
    with torch.no_grad():
        model.weight.zero_()
        model.bias.zero_()
    opt = NewtonCG(model, nn.BCEWithLogitsLoss(), damping=1e-3, curvature_fraction=1.0, generator=0)
    err, steps = math.inf, 0
    while err > 1e-8 and steps < 4 * ref.nit:
        opt.step((X, y))
        steps += 1
        w = torch.cat([model.weight.detach()[0], model.bias.detach()]).numpy()
        err = np.max(np.abs(w - w_star)) / max(1.0, np.max(np.abs(w_star)))
    assert err <= 1e-8, (err, steps)
    assert steps <= 2 * ref.nit, (steps, ref.nit)  # scipy: ref.nit outer iterations
    assert opt.last_step.loss_after - f(w_star) < 1e-14


def test_damping_adaptation_obeys_levenberg_marquardt_rule():
    X, y = _logreg(seed=5, n=200, d=5)
    model = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 1)).double()
    opt = NewtonCG(model, nn.BCEWithLogitsLoss(), damping=1.0, curvature_fraction=0.5, generator=1)
    seen = set()
    for _ in range(8):
        lam = opt.damping
        opt.step((X, y))
        r = opt.last_step
        assert r.damping == lam
        if r.rho is None:
            continue
        expect = lam * 1.5 if r.rho < 0.25 else (lam * 2 / 3 if r.rho > 0.75 else lam)
        assert r.next_damping == pytest.approx(expect, rel=1e-15)
        assert opt.damping == r.next_damping
        seen.add("up" if r.rho < 0.25 else "down" if r.rho > 0.75 else "same")
    assert seen  # at least one accepted, adapted step
    fixed = NewtonCG(nn.Linear(5, 1).double(), nn.BCEWithLogitsLoss(), damping=0.3, adapt_damping=False, generator=0)
    fixed.step((X, y))
    assert fixed.damping == 0.3


def test_warm_start_reuses_previous_solution():
    X, y = _logreg(seed=6, n=200, d=6)
    model = nn.Linear(6, 1).double()
    opt = NewtonCG(model, nn.BCEWithLogitsLoss(), curvature_fraction=1.0, generator=0)
    opt.step((X, y))
    prev = opt.global_state["prev_solution"]
    assert prev.shape == (7,) and bool(torch.isfinite(prev).all())
    opt.step((X, y))
    assert opt.last_step.accepted


def test_records_are_frozen_and_curvature_batch_is_used():
    X, y = _logreg(seed=7, n=120, d=4)
    opt = NewtonCG(nn.Linear(4, 1).double(), nn.BCEWithLogitsLoss(), generator=0)
    opt.step((X, y), curvature_batch=(X[:17], y[:17]))
    assert opt.last_step.curvature_samples == 17
    with pytest.raises(Exception):
        opt.last_step.rho = 0.0
    opt.step((X, y))
    assert opt.last_step.curvature_samples == 60  # default fraction 0.5


def test_damping_rule_clamps_and_keeps_zero():
    from curvlens.optim._newton_cg_damping import DampingRule, reduction_ratio

    rule = DampingRule(minimum=1e-3, maximum=10.0)
    assert rule.update(9.0, -1.0) == 10.0 and rule.update(1.2e-3, 0.9) == 1e-3
    assert rule.update(0.0, -5.0) == 0.0 and rule.update(2.0, 0.25) == 2.0 and rule.update(2.0, 0.75) == 2.0
    assert rule.after_nonfinite(0.0) == rule.nonfinite_floor and rule.after_nonfinite(0.5) == 5.0
    assert reduction_ratio(-1.0, 0.0) == 0.0 and reduction_ratio(float("inf"), -1.0) == -math.inf
    with pytest.raises(ValueError, match=r"^damping_rule: expected boost >= 1 and 0 < drop <= 1, got boost=0\.5"):
        DampingRule(boost=0.5)


def test_weight_decay_step_solves_ridge_regression_exactly():
    g = _gen(8)
    X = torch.randn(40, 4, generator=g, dtype=DT)
    Y = torch.randn(40, 2, generator=g, dtype=DT)
    mu = 0.3
    model = nn.Linear(4, 2).double()
    opt = NewtonCG(model, nn.MSELoss(), damping=0.0, weight_decay=mu, curvature_fraction=1.0, cg_progress_tol=None,
                   cg_rtol=1e-14, generator=0)
    opt.step((X, Y))
    Xa = torch.cat([X, torch.ones(40, 1, dtype=DT)], 1)
    c = 2.0 / Y.numel()  # MSELoss averages over all n * k entries; the bias is decayed too
    W = torch.linalg.solve(c * Xa.T @ Xa + mu * torch.eye(5, dtype=DT), c * Xa.T @ Y)
    torch.testing.assert_close(model.weight.detach(), W[:4].T, rtol=0, atol=1e-10)
    torch.testing.assert_close(model.bias.detach(), W[4], rtol=0, atol=1e-10)
    assert opt.last_step.loss_after == pytest.approx(float(nn.MSELoss()(model(X), Y).detach()), rel=1e-12)
