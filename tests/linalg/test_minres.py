"""MINRES against dense solves and pseudo-inverses on indefinite and singular matrices (float64)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from curvlens.errors import ConvergenceWarning
from curvlens.io.hdf5 import load_result, results_equal, save_result
from curvlens.linalg.minres import MinresResult, minres

from tests.linalg._spectra import hessian_like_spectrum, with_spectrum

D64 = torch.float64


def _b(n: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=D64)


INDEFINITE = {
    "symmetric_gap": np.concatenate([-np.linspace(0.5, 5.0, 20), np.linspace(0.5, 5.0, 20)]),
    "mostly_positive": np.concatenate([[-3.0, -0.1], np.logspace(-1, 2, 48)]),
    "hessian_like": (lambda ev: ev[np.abs(ev) > 1e-3])(hessian_like_spectrum(160, seed=0)),
}


@pytest.mark.parametrize("name", list(INDEFINITE))
def test_matches_dense_solve_on_indefinite_matrices(name):
    ev = INDEFINITE[name]
    op = with_spectrum(ev, seed=3)
    b = _b(len(ev))
    res = minres(op, b, rtol=1e-10, maxiter=20 * len(ev))
    exact = torch.linalg.solve(op.matrix, b)
    assert res.stop_reason == "residual" and res.converged and res.info.converged
    true_res = float((b - op.matrix @ res.x).norm())
    assert true_res <= 1e-9 * float(b.norm())
    assert res.residual_norms[-1] == pytest.approx(true_res, rel=1e-2, abs=1e-12)
    cond = np.abs(ev).max() / np.abs(ev).min()
    assert float((res.x - exact).norm() / exact.norm()) <= 10 * cond * 1e-10
    assert res.info.matvecs == res.iterations == len(res.residual_norms) - 1
    assert all(a >= b_ * (1 - 1e-8) for a, b_ in zip(res.residual_norms, res.residual_norms[1:]))  # monotone


def test_singular_consistent_system_gives_minimum_norm_solution():
    ev = np.concatenate([np.zeros(6), np.linspace(-3.0, -1.0, 10), np.linspace(1.0, 3.0, 14)])
    A = with_spectrum(ev, seed=4).matrix
    b = A @ _b(30, seed=5)  # in the range of A
    res = minres(A, b, rtol=1e-12)
    assert res.stop_reason == "residual"
    assert torch.allclose(res.x, torch.linalg.pinv(A) @ b, atol=1e-10)
    assert res.iterations <= 24 + 2  # the range has dimension 24


def test_singular_inconsistent_system_gives_least_squares_residual():
    ev = np.concatenate([np.zeros(5), np.linspace(-3.0, -1.0, 10), np.linspace(1.0, 3.0, 10)])
    A = with_spectrum(ev, seed=6).matrix
    b = _b(25, seed=7)
    with pytest.warns(ConvergenceWarning, match="not in the range of A"):
        res = minres(A, b, rtol=1e-12)
    pinv = torch.linalg.pinv(A)
    ls_residual = float((b - A @ pinv @ b).norm())
    assert res.stop_reason == "breakdown" and not res.converged
    assert float((b - A @ res.x).norm()) == pytest.approx(ls_residual, rel=1e-8)
    assert torch.allclose(res.x, pinv @ b, atol=1e-8)  # from zero: the minimum-norm least-squares solution


def test_preconditioner_reduces_iterations_and_keeps_the_solution():
    g = torch.Generator().manual_seed(8)
    n = 100
    R = torch.randn(n, n, generator=g, dtype=D64)
    E = (R + R.T) / 2
    E = 0.5 * E / torch.linalg.matrix_norm(E, ord=2)
    s = torch.logspace(0, 2, n, dtype=D64)
    signs = torch.where(torch.arange(n) % 3 == 0, -1.0, 1.0).to(D64)
    A = s[:, None] * (torch.diag(signs) + E) * s[None, :]  # badly scaled and indefinite
    b = _b(n)
    d = A.diagonal().abs().clone()
    plain = minres(A, b, rtol=1e-8, maxiter=5000)
    diag = minres(A, b, rtol=1e-8, M_diag=d)
    call = minres(A, b, rtol=1e-8, M=lambda r: r / d)
    exact = torch.linalg.solve(A, b)
    for res in (plain, diag, call):
        assert res.converged
        assert float((res.x - exact).norm() / exact.norm()) < 1e-5
        assert float((b - A @ res.x).norm()) <= 2e-8 * float(b.norm())  # 2-norm residuals, also preconditioned
    assert diag.iterations == call.iterations
    assert diag.iterations * 4 <= plain.iterations, (diag.iterations, plain.iterations)


def test_warm_start_maxiter_callback_and_zero_rhs():
    op = with_spectrum(INDEFINITE["symmetric_gap"], seed=9)
    b = _b(40)
    exact = torch.linalg.solve(op.matrix, b)
    cold = minres(op, b, rtol=1e-10)
    warm = minres(op, b, rtol=1e-10, x0=exact + 1e-6 * _b(40, seed=2))
    assert warm.converged and warm.iterations < cold.iterations and warm.info.matvecs == warm.iterations + 1
    seen = []
    with pytest.warns(ConvergenceWarning, match="increase maxiter"):
        short = minres(op, b, maxiter=4, callback=lambda k, r: seen.append((k, r)))
    assert (short.stop_reason, short.iterations, short.converged) == ("maxiter", 4, False)
    assert seen == list(enumerate(short.residual_norms))[1:]
    zero = minres(op, torch.zeros(40, dtype=D64))
    assert zero.converged and zero.iterations == 0 and zero.info.matvecs == 0


def test_nonfinite_product_is_reported():
    A = with_spectrum(INDEFINITE["symmetric_gap"], seed=9).matrix

    class NaNOp:
        dim, dtype, device, is_psd, num_matvecs = 40, D64, torch.device("cpu"), False, 0

        def matvec(self, v):
            return A @ v * float("nan")

        def matmat(self, V):
            return A @ V * float("nan")

    with pytest.warns(ConvergenceWarning, match="non-finite"):
        res = minres(NaNOp(), _b(40))
    assert (res.stop_reason, res.converged, res.iterations) == ("nonfinite", False, 0)
    assert bool(torch.isfinite(res.x).all())


def test_round_trips_through_hdf5(tmp_path):
    res = minres(with_spectrum(INDEFINITE["symmetric_gap"], seed=1), _b(40))
    assert isinstance(res, MinresResult)
    back = load_result(save_result(res, tmp_path / "minres.h5"))
    assert results_equal(back, res, explain=True) is None


A3 = torch.diag(torch.tensor([1.0, -2.0, 3.0], dtype=D64))
B3 = torch.ones(3, dtype=D64)
ERRORS = [
    (dict(op="A"), TypeError, r"op: expected a CurvatureOperator or a \(D, D\) tensor, got str"),
    (dict(b=torch.ones(2, dtype=D64)), ValueError, r"b: expected shape \(3,\)"),
    (dict(x0=torch.ones(3)), ValueError, r"x0: expected dtype torch.float64"),
    (dict(rtol=float("nan")), ValueError, r"rtol: expected a finite float >= 0"),
    (dict(maxiter=True), TypeError, r"maxiter: expected an integer"),
    (dict(M=lambda r: -r), ValueError, r"M: the preconditioner must be symmetric positive definite, got r\^T M r = -3"),
    (dict(M=lambda r: 0 * r), ValueError, r"M: the preconditioner must be positive definite, got r\^T M r = 0"),
    (dict(M_diag=-B3), ValueError, r"M_diag: expected a positive diagonal"),
    (dict(M=lambda r: r, M_diag=B3), ValueError, r"pass at most one preconditioner"),
    (dict(callback="print"), TypeError, r"callback: expected a callable"),
]


@pytest.mark.parametrize("kwargs, exc, msg", ERRORS, ids=[f"err{i}" for i in range(len(ERRORS))])
def test_errors(kwargs, exc, msg):
    kwargs = dict(kwargs)
    op, b = kwargs.pop("op", A3), kwargs.pop("b", B3)
    with pytest.raises(exc, match=msg):
        minres(op, b, **kwargs)
