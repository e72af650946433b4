"""NewtonCG's update choice: early acceptance of the last CG iterate, the interpolating Armijo search."""

import math

import pytest
import torch
from torch import nn

from curvlens.optim._newton_cg_search import armijo_search, backtrack_kept, interpolated_step
from curvlens.optim.newton_cg import NewtonCG

DT = torch.float64


class _Counted:
    """``f(s, a) = 1/2 (a s - m)^T C (a s - m)`` on a fixed quadratic, counting its calls."""

    def __init__(self, C, m):
        self.C, self.m, self.calls = C, m, 0

    def __call__(self, s, a):
        self.calls += 1
        r = a * s - self.m
        return float(0.5 * r @ (self.C @ r))


def _quadratic(d=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=DT))
    C = Q @ torch.diag(torch.logspace(0, 2, d, dtype=DT)) @ Q.T
    m = torch.randn(d, generator=g, dtype=DT)
    return C, m


def test_exact_model_accepts_the_last_iterate_with_one_evaluation():
    C, m = _quadratic()
    f = _Counted(C, m)
    f0 = f(torch.zeros(4, dtype=DT), 0.0)
    g = -(C @ m)
    xs = [m * t for t in (0.25, 0.5, 1.0)]
    # the exact change of the quadratic objective at each iterate: rho = 1 everywhere
    phi = {i + 1: float(0.5 * x @ (C @ x) + g @ x) for i, x in enumerate(xs)}
    kept = list(zip(phi, xs))
    f.calls = 0
    it, x, fx = backtrack_kept(f, kept, phi, f0, accept_rho=0.5)
    assert (it, f.calls) == (3, 1) and fx == pytest.approx(0.0, abs=1e-12)
    f.calls = 0
    it_always, _, _ = backtrack_kept(f, kept, phi, f0, accept_rho=None)
    assert it_always == 3 and f.calls == 2  # Martens' walk back: the previous iterate is worse, stop


def test_poor_last_iterate_walks_back_to_the_best_kept_one():
    C, m = _quadratic(seed=1)
    f = _Counted(C, m)
    f0 = f(torch.zeros(4, dtype=DT), 0.0)
    # iterates along m overshooting past the minimizer; the model claims a large decrease for all
    ts = (0.5, 1.0, 1.6, 2.4)
    xs = [m * t for t in ts]
    phi = {i + 1: -10.0 * f0 * (i + 1) for i in range(len(ts))}
    values = [f(x, 1.0) for x in xs]
    best = 1 + min(range(len(ts)), key=values.__getitem__)
    f.calls = 0
    it, x, fx = backtrack_kept(f, list(zip(phi, xs)), phi, f0, accept_rho=0.5)
    assert it == best == 2 and fx == pytest.approx(values[1], rel=1e-14)
    assert f.calls == 4  # the last, then back while it improves: 2.4 -> 1.6 -> 1.0, stop at 0.5


def _underestimated_model(t2):
    """f = 1/2 (x - m)^T C (x - m), C = diag(1, 10), m = (1, 0.1), and a model with B = I that
    underestimates the curvature along the second axis; kept iterates (1, 0) (exact there: rho = 1)
    and (1, t2) (a late component along the under-modelled direction)."""
    C, m = torch.diag(torch.tensor([1.0, 10.0], dtype=DT)), torch.tensor([1.0, 0.1], dtype=DT)
    f = _Counted(C, m)
    f0 = f(torch.zeros(2, dtype=DT), 0.0)
    g = -(C @ m)
    xs = [torch.tensor([1.0, 0.0], dtype=DT), torch.tensor([1.0, t2], dtype=DT)]
    phi = {i + 1: float(0.5 * x @ x + g @ x) for i, x in enumerate(xs)}
    return f, f0, list(zip(phi, xs)), phi


def test_last_iterate_that_fits_worse_than_the_previous_promises_walks_back():
    # last iterate (1, 0.21): rho = 0.71 >= accept_rho = 0.5, but its actual decrease is less than
    # the model's decrease at the previous kept iterate (rho < phi[1] / phi[2] = 0.73), where the
    # model is exact: the previous iterate is better, and the walk back finds it
    f, f0, kept, phi = _underestimated_model(0.21)
    f_prev, f_last = f(kept[0][1], 1.0), f(kept[1][1], 1.0)
    rho_last = (f_last - f0) / phi[2]
    assert 0.5 <= rho_last < phi[1] / phi[2] and f_prev < f_last
    f.calls = 0
    it, _, fx = backtrack_kept(f, kept, phi, f0, accept_rho=0.5)
    assert it == 1 and fx == pytest.approx(f_prev, rel=1e-14) and f.calls == 2
    # (1, 0.19): rho = 0.758 >= phi[1] / phi[2] = 0.744, and the last iterate is indeed the better
    f, f0, kept, phi = _underestimated_model(0.19)
    assert f(kept[1][1], 1.0) < f(kept[0][1], 1.0)
    f.calls = 0
    it, _, _ = backtrack_kept(f, kept, phi, f0, accept_rho=0.5)
    assert it == 2 and f.calls == 1


def test_interpolated_step_is_the_minimizer_of_the_quadratic_along_the_step():
    # phi(a) = 3 - 2 a + 4 a^2: minimizer 1/4; phi(1) = 5 fails Armijo
    a = interpolated_step(1.0, 5.0, 3.0, -2.0, low=0.1, shrink=0.8)
    assert a == pytest.approx(0.25, rel=1e-14)
    assert interpolated_step(1.0, 1e6, 3.0, -2.0, low=0.1, shrink=0.8) == pytest.approx(0.1)  # clamped low
    # phi(a) = 3 - 2 a + a^2 / 2: minimizer 2, beyond 0.8 * alpha
    assert interpolated_step(2.0, 1.0, 3.0, -2.0, low=0.1, shrink=0.8) == pytest.approx(1.6)  # clamped high
    assert interpolated_step(2.0, math.inf, 3.0, -2.0, low=0.1, shrink=0.8) == pytest.approx(1.6)


def test_armijo_search_with_interpolation_lands_on_the_line_minimizer_in_two_evaluations():
    C, m = _quadratic(seed=2)
    f = _Counted(C, m)
    s = 3.0 * m  # overshoots: the exact line minimizer along s is a* = 1/3
    f0 = f(s, 0.0)
    gts = float(-(C @ m) @ s)
    f.calls = 0
    alpha, fa = armijo_search(f, s, f0, gts, 1.0, None, c=1e-2, shrink=0.8, low=0.1, max_iter=30)
    assert alpha == pytest.approx(1.0 / 3.0, rel=1e-12) and f.calls == 2
    assert fa == pytest.approx(0.0, abs=1e-12)
    f.calls = 0
    alpha_c, _ = armijo_search(f, s, f0, gts, 1.0, None, c=1e-2, shrink=0.8, low=None, max_iter=30)
    # phi(a) = f0 (3a - 1)^2 and g^T s = -6 f0: Armijo first holds at 0.64 (1 and 0.8 fail)
    assert alpha_c == pytest.approx(0.64) and f.calls == 3
    f.calls = 0
    assert armijo_search(f, s, f0, gts, 1.0, None, c=1e-2, shrink=0.8, low=None, max_iter=1)[0] == 0.0


def _least_squares(seed=4, n=60, d=4):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=DT)
    y = torch.randn(n, 1, generator=g, dtype=DT)
    return X, y


@pytest.mark.parametrize("backtrack_rho, trials", [(0.5, 1), (None, 2)])
def test_newton_cg_evaluates_the_objective_once_when_the_last_iterate_fits(monkeypatch, backtrack_rho, trials):
    X, y = _least_squares()
    model = nn.Linear(4, 1).double()
    opt = NewtonCG(model, nn.MSELoss(), damping=1e-3, curvature_fraction=1.0, cg_maxiter=3, cg_progress_tol=None,
                   backtrack_rho=backtrack_rho, generator=0)
    calls = []
    real = NewtonCG._trial
    monkeypatch.setattr(NewtonCG, "_trial", lambda self, *a: calls.append(a[3]) or real(self, *a))
    opt.step((X, y))
    rec = opt.last_step
    # a linear model: the quadratic model is exact up to the damping, rho ~ 1 at every CG iterate
    assert rec.accepted and rec.alpha == 1.0 and rec.rho == pytest.approx(1.0, abs=1e-2)
    assert len(calls) == trials and rec.iterate == rec.cg_iterations == 3


def test_search_options_are_checked():
    model = nn.Linear(2, 1).double()
    with pytest.raises(ValueError, match=r"^ls_low: expected a value <= ls_shrink=0.8, got 0.9; pass e.g"):
        NewtonCG(model, nn.MSELoss(), ls_low=0.9)
    with pytest.raises(ValueError, match=r"^backtrack_rho: .*backtrack_rho=0.5"):
        NewtonCG(model, nn.MSELoss(), backtrack_rho=0.0)
    with pytest.raises(ValueError, match=r"^ls_low: .*ls_low=0.1"):
        NewtonCG(model, nn.MSELoss(), ls_low=-1.0)
