"""Conjugate gradients against dense solves (float64), every stopping rule, errors, HDF5."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from curvlens.errors import ConvergenceWarning
from curvlens.io.hdf5 import load_result, results_equal, save_result
from curvlens.linalg.cg import CGResult, cg, default_maxiter, martens_schedule
from curvlens.operators import DenseOperator, GGNOperator

from tests.linalg._spectra import with_spectrum

D64 = torch.float64


def _b(n: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=D64)


def _phi(A: torch.Tensor, b: torch.Tensor, x: torch.Tensor) -> float:
    return float(0.5 * x @ (A @ x) - b @ x)


def _scaled_diag_dominant(n: int = 120) -> torch.Tensor:
    """``S (I + E) S`` with ``||E|| = 0.5`` and ``S`` spanning four decades: Jacobi makes it well conditioned."""
    g = torch.Generator().manual_seed(3)
    R = torch.randn(n, n, generator=g, dtype=D64)
    E = (R + R.T) / 2
    E = 0.5 * E / torch.linalg.matrix_norm(E, ord=2)
    s = torch.logspace(0, 2, n, dtype=D64)
    return s[:, None] * (torch.eye(n, dtype=D64) + E) * s[None, :]


SPECTRA = {
    "clustered": np.repeat([1.0, 10.0, 100.0], 30) * (1 + 1e-9 * np.arange(90)),
    "ill_conditioned_1e6": np.logspace(0, 6, 80),
    "uniform": np.linspace(1.0, 50.0, 60),
}


@pytest.mark.parametrize("name", list(SPECTRA))
def test_matches_dense_solve_on_known_spectra(name):
    ev = SPECTRA[name]
    op = with_spectrum(ev, seed=2)
    b = _b(len(ev))
    rtol = 1e-8 if ev.max() / ev.min() > 1e5 else 1e-10
    res = cg(op, b, rtol=rtol, maxiter=100 * len(ev))  # rounding: far more than D steps at condition 1e6
    exact = torch.linalg.solve(op.matrix, b)
    assert res.stop_reason == "residual" and res.converged and res.info.converged
    true_res = float(torch.linalg.vector_norm(b - op.matrix @ res.x))
    assert true_res <= 10 * rtol * float(b.norm())
    # forward error <= condition number x backward error
    assert float((res.x - exact).norm() / exact.norm()) <= 10 * ev.max() / ev.min() * rtol
    assert res.info.matvecs == res.iterations == len(res.residual_norms) - 1
    if name == "clustered":  # three tight clusters: CG needs a handful of iterations, not 90
        assert res.iterations <= 12


def test_exact_after_dim_iterations():
    """In exact arithmetic CG solves in at most D steps; in float64 the residual at D is at rounding level."""
    op = with_spectrum(np.linspace(1.0, 100.0, 30), seed=4)
    b = _b(30)
    with pytest.warns(ConvergenceWarning, match="maxiter=30"):  # a zero tolerance is never met
        res = cg(op, b, rtol=0.0, atol=0.0, maxiter=30)
    assert res.iterations == 30
    assert float(torch.linalg.vector_norm(b - op.matrix @ res.x)) <= 1e-10 * float(b.norm())


def test_dense_tensor_and_float32_inputs():
    A = with_spectrum(np.linspace(1.0, 5.0, 10), seed=0).matrix
    b = _b(10)
    assert torch.allclose(cg(A, b, rtol=1e-12).x, torch.linalg.solve(A, b), atol=1e-10)
    res32 = cg(A.float(), b.float(), rtol=1e-5)
    assert res32.x.dtype == torch.float32 and res32.converged
    assert torch.allclose(res32.x.double(), torch.linalg.solve(A, b), atol=1e-4)


def test_preconditioning_reduces_iterations_on_badly_scaled_matrix():
    A = _scaled_diag_dominant()
    b = _b(A.shape[0])
    d = A.diagonal().clone()
    plain = cg(A, b, rtol=1e-8)
    diag = cg(A, b, rtol=1e-8, M_diag=d)
    call = cg(A, b, rtol=1e-8, M=lambda r: r / d)
    op_pre = cg(A, b, rtol=1e-8, M=DenseOperator(torch.diag(1 / d), is_psd=True))
    exact = torch.linalg.solve(A, b)
    for res in (plain, diag, call, op_pre):
        assert res.converged
        assert float((res.x - exact).norm() / exact.norm()) < 1e-5
    assert diag.iterations == call.iterations == op_pre.iterations
    assert diag.iterations * 4 <= plain.iterations, (diag.iterations, plain.iterations)


def test_maxiter_stop_warns_and_reports():
    op = with_spectrum(np.logspace(0, 6, 50), seed=1)
    with pytest.warns(ConvergenceWarning, match="increase maxiter"):
        res = cg(op, _b(50), maxiter=3)
    assert (res.stop_reason, res.converged, res.iterations) == ("maxiter", False, 3)
    assert "increase maxiter" in res.status and not res.info.converged


def test_default_maxiter_is_ten_times_dim_capped():
    op = with_spectrum(np.logspace(0, 8, 5), seed=1)
    with pytest.warns(ConvergenceWarning):
        res = cg(op, _b(5), rtol=0.0)
    assert (res.stop_reason, res.iterations) == ("maxiter", 50)
    assert default_maxiter(5) == 50 and default_maxiter(10**6) == 10_000


def test_progress_rule_matches_martens_formula():
    op = with_spectrum(np.logspace(0, 6, 200), seed=5)
    tol = 5e-4
    res = cg(op, _b(200), rtol=0.0, progress_tol=tol)
    assert res.stop_reason == "progress" and res.converged
    phi = res.quadratic_values

    def rule(i):
        k = max(10, math.ceil(0.1 * i))
        return i > k and phi[i] < 0 and (phi[i] - phi[i - k]) / phi[i] < k * tol

    assert rule(res.iterations)
    assert not any(rule(i) for i in range(1, res.iterations))


def test_quadratic_values_match_dense_phi_at_kept_iterates():
    op = with_spectrum(np.logspace(0, 3, 40), seed=6)
    b = _b(40)
    x0 = _b(40, seed=9)
    res = cg(op, b, rtol=1e-10, keep=range(0, 200), x0=x0)
    assert res.kept_iterations == tuple(range(res.iterations + 1))
    for i, x in res.iterates.items():
        assert res.quadratic_values[i] == pytest.approx(_phi(op.matrix, b, x), rel=1e-9, abs=1e-9)
        assert res.residual_norms[i] == pytest.approx(float((b - op.matrix @ x).norm()), rel=1e-6, abs=1e-9)
    assert torch.equal(res.iterates[0], x0) and torch.equal(res.iterates[res.iterations], res.x)
    assert all(a >= b_ - 1e-9 for a, b_ in zip(res.quadratic_values, res.quadratic_values[1:]))  # phi decreases


def test_martens_keep_schedule():
    # ceil(1.3^j) for j = 0..12, written out by hand
    assert sorted(martens_schedule(30)) == [1, 2, 3, 4, 5, 7, 9, 11, 14, 18, 24]
    op = with_spectrum(np.logspace(0, 4, 60), seed=7)
    with pytest.warns(ConvergenceWarning):
        res = cg(op, _b(60), rtol=0.0, maxiter=20, keep="martens")
    assert res.kept_iterations == (1, 2, 3, 4, 5, 7, 9, 11, 14, 18, 20)
    assert torch.equal(res.iterates[20], res.x)


def test_warm_start():
    op = with_spectrum(np.logspace(0, 4, 60), seed=8)
    b = _b(60)
    exact = torch.linalg.solve(op.matrix, b)
    cold = cg(op, b, rtol=1e-10)
    warm = cg(op, b, rtol=1e-10, x0=exact + 1e-6 * _b(60, seed=3))
    assert warm.converged and warm.iterations < cold.iterations
    assert warm.info.matvecs == warm.iterations + 1
    at_solution = cg(op, b, rtol=1e-6, x0=exact)
    assert (at_solution.iterations, at_solution.stop_reason, at_solution.info.matvecs) == (0, "residual", 1)


def test_zero_rhs_returns_zero_without_products():
    op = with_spectrum(np.linspace(1, 2, 5))
    res = cg(op, torch.zeros(5, dtype=D64))
    assert res.converged and res.iterations == 0 and res.info.matvecs == 0 and not res.x.any()


def test_negative_curvature_detected_on_indefinite_matrix():
    ev = np.concatenate([np.linspace(-2.0, -0.5, 10), np.linspace(0.5, 3.0, 30)])
    op = with_spectrum(ev, seed=10)
    b = _b(40)
    res = cg(op, b, keep=range(100))
    assert res.stop_reason == "negative_curvature" and not res.converged
    p = res.negative_direction
    pAp = float(p @ op.matrix @ p)
    assert pAp <= 0
    assert res.negative_curvature == pytest.approx(pAp / float(p @ p), rel=1e-10)
    assert ev.min() <= res.negative_curvature <= 0
    assert torch.equal(res.iterates[res.iterations], res.x)  # the iterate before the bad step
    # without stopping, CG steps through negative curvature and still solves this nonsingular system
    go_on = cg(op, b, rtol=1e-10, stop_on_negative_curvature=False)
    assert go_on.stop_reason == "residual" and go_on.negative_direction is not None
    assert torch.allclose(go_on.x, torch.linalg.solve(op.matrix, b), atol=1e-7)


def test_zero_curvature_on_singular_psd_stops_even_when_asked_to_go_on():
    A = torch.diag(torch.tensor([1.0, 2.0, 0.0], dtype=D64))
    res = cg(A, torch.ones(3, dtype=D64), rtol=1e-12, stop_on_negative_curvature=False)
    assert res.stop_reason == "negative_curvature"
    assert abs(res.negative_curvature) < 1e-12
    p = res.negative_direction  # zero curvature of a PSD matrix: p lies in the null space
    assert float((A @ p).norm()) <= 1e-12 * float(p.norm())


class _NaNAfter:
    """Dense matrix that returns NaN from its ``n``-th product on."""

    is_psd = True

    def __init__(self, A, n):
        self.A, self.n, self.num_matvecs = A, n, 0
        self.dim, self.dtype, self.device = A.shape[0], A.dtype, A.device

    def matvec(self, v):
        self.num_matvecs += 1
        out = self.A @ v
        return out * float("nan") if self.num_matvecs >= self.n else out

    def matmat(self, V):
        return torch.stack([self.matvec(v) for v in V.T], 1)


def test_nonfinite_product_stops_with_last_finite_iterate():
    A = with_spectrum(np.logspace(0, 3, 30), seed=11).matrix
    with pytest.warns(ConvergenceWarning, match="non-finite"):
        res = cg(_NaNAfter(A, 4), _b(30))
    assert (res.stop_reason, res.converged, res.iterations) == ("nonfinite", False, 3)
    assert bool(torch.isfinite(res.x).all()) and res.info.matvecs == 4


def test_callback_and_counts():
    op = with_spectrum(np.linspace(1, 10, 20), seed=12)
    seen = []
    res = cg(op, _b(20), callback=lambda i, r: seen.append((i, r)))
    assert seen == list(enumerate(res.residual_norms))[1:]
    assert res.info.matvecs == op.num_matvecs == res.iterations


def test_damped_ggn_of_a_network_matches_dense_solve():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).to(D64)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 4, generator=g, dtype=D64), torch.randint(0, 3, (16,), generator=g)
    G = GGNOperator(model, nn.CrossEntropyLoss(), (x, y))
    op = G + 0.1
    dense = G.to_dense() + 0.1 * torch.eye(G.dim, dtype=D64)
    b = _b(G.dim)
    before = G.num_matvecs
    res = cg(op, b, rtol=1e-10, maxiter=G.dim)
    assert res.converged and res.iterations <= G.dim
    assert torch.allclose(res.x, torch.linalg.solve(dense, b), rtol=1e-7, atol=1e-9)
    assert res.info.matvecs == op.num_matvecs == G.num_matvecs - before == res.iterations


def test_result_round_trips_through_hdf5(tmp_path):
    ev = np.concatenate([[-1.0], np.linspace(1, 4, 9)])
    res = cg(with_spectrum(ev, seed=13), _b(10), keep="martens")
    assert isinstance(res, CGResult) and res.negative_direction is not None
    back = load_result(save_result(res, tmp_path / "cg.h5"))
    assert results_equal(back, res, explain=True) is None
    assert back.iterates.keys() == res.iterates.keys()


A4 = torch.diag(torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=D64))
B4 = torch.ones(4, dtype=D64)
ERRORS = [
    (dict(op=object()), TypeError, r"op: expected a CurvatureOperator or a \(D, D\) tensor.*lacking dim"),
    (dict(op=torch.ones(3, 4, dtype=D64)), ValueError, r"op: expected a square floating"),
    (dict(op=torch.triu(torch.ones(4, 4, dtype=D64))), ValueError, r"op: expected a symmetric matrix"),
    (dict(b=[1.0, 2.0]), TypeError, r"b: expected a flat torch.Tensor of length 4"),
    (dict(b=torch.ones(3, dtype=D64)), ValueError, r"b: expected shape \(4,\).*got \(3,\)"),
    (dict(b=torch.ones(4)), ValueError, r"b: expected dtype torch.float64 on cpu.*got torch.float32"),
    (dict(b=torch.tensor([1.0, math.nan, 0, 0], dtype=D64)), ValueError, r"b: expected finite values"),
    (dict(x0=torch.ones(5, dtype=D64)), ValueError, r"x0: expected shape \(4,\)"),
    (dict(rtol=-1.0), ValueError, r"rtol: expected a finite float >= 0, got -1.0"),
    (dict(atol=True), TypeError, r"atol: expected a float >= 0, got bool"),
    (dict(maxiter=2.5), TypeError, r"maxiter: expected an integer"),
    (dict(maxiter=-1), ValueError, r"maxiter: expected an integer >= 0"),
    (dict(M=lambda r: r, M_diag=B4), ValueError, r"M, M_diag: pass at most one preconditioner"),
    (dict(M=B4), TypeError, r"M: expected an operator or callable approximating A\^-1, got a tensor.*M_diag"),
    (dict(M=3), TypeError, r"M: expected an operator with matvec or a callable"),
    (dict(M=DenseOperator(torch.eye(3, dtype=D64))), ValueError, r"M: expected a preconditioner of dimension 4"),
    (dict(M=lambda r: r[:2]), ValueError, r"M: returned torch.float64 \(2,\).*expected a torch.float64 tensor"),
    (dict(M=lambda r: -r), ValueError, r"M: the preconditioner must be symmetric positive definite"),
    (dict(M_diag=torch.tensor([1.0, 0.0, 1.0, 1.0], dtype=D64)), ValueError, r"M_diag: expected a positive"),
    (dict(M_diag=torch.ones(3, dtype=D64)), ValueError, r"M_diag: expected shape \(4,\)"),
    (dict(keep="all"), ValueError, r"keep: expected 'martens'"),
    (dict(keep=5), TypeError, r"keep: expected 'martens', an iterable of ints"),
    (dict(keep=[-1]), ValueError, r"keep: expected an integer >= 0"),
    (dict(progress_tol=0.0), ValueError, r"progress_tol: expected a finite float > 0"),
    (dict(callback=1), TypeError, r"callback: expected a callable"),
    (dict(stop_on_negative_curvature=None), TypeError, r"stop_on_negative_curvature: expected a bool"),
]


@pytest.mark.parametrize("kwargs, exc, msg", ERRORS, ids=[f"err{i}" for i in range(len(ERRORS))])
def test_errors(kwargs, exc, msg):
    kwargs = dict(kwargs)
    op, b = kwargs.pop("op", A4), kwargs.pop("b", B4)
    with pytest.raises(exc, match=msg):
        cg(op, b, **kwargs)
