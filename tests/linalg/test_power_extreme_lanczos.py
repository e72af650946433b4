"""power_iteration, extreme_eigenvalues, the lanczos kernel, and bad-input messages."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from curvlens.linalg import (
    ConvergenceWarning,
    ExtremeEigenvalues,
    bottom_eigenpairs,
    extreme_eigenvalues,
    lanczos,
    power_iteration,
    top_eigenpairs,
)
from curvlens.operators.dense import DenseOperator

from ._spectra import hessian_like_spectrum, recomputed_residuals, with_spectrum


# ---------------------------------------------------------------- power iteration
def test_power_iteration_deflation_matches_eigh():
    spectrum = np.r_[6.0, -4.0, 2.5, np.linspace(-1.0, 1.0, 27)]
    op = with_spectrum(spectrum, seed=1)
    # deflation inherits the error of earlier vectors, so later pairs cannot be certified much
    # below rtol * l_1 / gap: keep rtol moderate
    res = power_iteration(op, 3, rtol=1e-6, generator=0)
    np.testing.assert_allclose(res.eigenvalues.numpy(), [6.0, -4.0, 2.5], atol=1e-6)
    assert bool(res.converged.all()) and res.which == "magnitude"
    np.testing.assert_allclose(res.residuals.numpy(), recomputed_residuals(op, res), rtol=1e-6, atol=1e-14)


def test_power_iteration_does_not_stop_on_eigenvalue_change():
    # +3 and -3 have equal magnitude: the estimate oscillates, an eigenvalue-change rule can
    # stop with a wrong value; the residual rule reports non-convergence instead.
    op = with_spectrum(np.r_[3.0, -3.0, np.linspace(-1.0, 1.0, 18)], seed=2)
    with pytest.warns(ConvergenceWarning, match="increase max_matvecs"):
        res = power_iteration(op, 1, rtol=1e-6, max_matvecs=60, generator=0)
    assert not bool(res.converged[0]) and res.residuals[0] > 1e-2 and res.info.matvecs == 60


def test_power_iteration_shift_finds_bottom():
    ev = hessian_like_spectrum(120)
    op = with_spectrum(ev, seed=3)
    res = power_iteration(op, 1, rtol=1e-3, shift=0.76, max_matvecs=3000, generator=0)
    assert bool(res.converged[0])
    assert abs(float(res.eigenvalues[0]) - ev[0]) <= float(res.residuals[0]) + 1e-12


# ---------------------------------------------------------------- extreme eigenvalues
def test_extreme_eigenvalues_certified():
    ev = hessian_like_spectrum(200)
    op = with_spectrum(ev, seed=4)
    ext = extreme_eigenvalues(op, rtol=1e-6, generator=0)
    assert isinstance(ext, ExtremeEigenvalues)
    assert ext.lambda_max_certified and ext.lambda_min_certified and ext.info.converged
    assert abs(ext.lambda_max - ev[-1]) < 1e-9 and abs(ext.lambda_min - ev[0]) < 1e-8
    assert ext.condition_number is None
    assert ext.info.matvecs == ext.top.info.matvecs + ext.bottom.info.matvecs == op.num_matvecs


def test_extreme_eigenvalues_psd_condition_number_and_budget_warning():
    op = with_spectrum(np.linspace(0.5, 4.0, 30), seed=5)
    ext = extreme_eigenvalues(op, rtol=1e-8, generator=0)
    assert ext.condition_number == pytest.approx(8.0, rel=1e-6)
    with pytest.warns(ConvergenceWarning):
        bad = extreme_eigenvalues(with_spectrum(hessian_like_spectrum(200), seed=6), rtol=1e-9, max_matvecs=8, generator=0)
    assert not bad.info.converged and "max_matvecs" in bad.info.status


# ---------------------------------------------------------------- lanczos kernel
def test_lanczos_ritz_values_and_orthonormal_basis():
    op = with_spectrum(np.linspace(-1.0, 3.0, 40), seed=7)
    res = lanczos(op, 40, generator=0)
    np.testing.assert_allclose(res.ritz()[0], np.linspace(-1.0, 3.0, 40), atol=1e-10)
    Q = res.basis
    np.testing.assert_allclose((Q.T @ Q).numpy(), np.eye(Q.shape[1]), atol=1e-12)
    np.testing.assert_allclose((Q.T @ op.matrix @ Q).numpy(), res.tridiagonal(), atol=1e-12)


def test_lanczos_breakdown_and_float32_and_seed():
    op = DenseOperator(torch.diag(torch.tensor([1.0, 1.0, 2.0, 2.0, 5.0], dtype=torch.float32)))
    state = torch.get_rng_state()
    res = lanczos(op, 5, generator=3)
    assert torch.equal(torch.get_rng_state(), state)
    assert res.breakdown and res.num_steps == 3 and res.residual_norm == 0.0
    np.testing.assert_allclose(res.ritz()[0], [1.0, 2.0, 5.0], atol=1e-5)
    assert res.basis.dtype == torch.float32 and res.alphas.dtype == np.float64
    again = lanczos(op, 5, generator=torch.Generator().manual_seed(3))
    assert np.array_equal(res.alphas, again.alphas) and res.info.seed == 3
    one = lanczos(DenseOperator(torch.tensor([[2.5]], dtype=torch.float64)), 4, generator=0)
    assert one.num_steps == 1 and one.ritz()[0][0] == 2.5


# ---------------------------------------------------------------- bad inputs
OP = with_spectrum(np.arange(6.0), seed=0)


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: top_eigenpairs(OP, 0), ValueError, r"k: expected an integer between 1 and 6, got 0"),
        (lambda: top_eigenpairs(OP, 7), ValueError, r"k: .*got 7; k must be at least 1 and at most the operator dimension D=6"),
        (lambda: bottom_eigenpairs(OP, 2.0), TypeError, r"k: expected an integer, got float"),
        (lambda: top_eigenpairs(OP, 1, rtol=0.0), ValueError, r"rtol: expected a float in \(0, 1\), got 0.0"),
        (lambda: top_eigenpairs(OP, 1, rtol=-1e-3), ValueError, r"rtol: expected a float in \(0, 1\)"),
        (lambda: top_eigenpairs(OP, 1, rtol="1e-3"), TypeError, r"rtol: expected a float, got str"),
        (lambda: top_eigenpairs(OP, 1, atol=0.0), ValueError, r"atol: expected a finite float > 0"),
        (lambda: top_eigenpairs(OP, 2, max_matvecs=2), ValueError, r"max_matvecs: expected an integer >= 3, got 2"),
        (lambda: top_eigenpairs(OP, 1, block_size=0), ValueError, r"block_size: expected an integer between 1 and 6"),
        (lambda: top_eigenpairs(OP, 1, generator="seed"), TypeError, r"generator: expected a torch.Generator, an int seed or None"),
        (lambda: top_eigenpairs(OP, 1, callback=3), TypeError, r"callback: expected a callable"),
        (lambda: top_eigenpairs(np.eye(3), 1), TypeError, r"op: expected a CurvatureOperator .* got ndarray"),
        (lambda: power_iteration(OP, 1, shift="x"), TypeError, r"shift: expected a finite float"),
        (lambda: power_iteration(OP, 0), ValueError, r"k: expected an integer between 1 and 6"),
        (lambda: extreme_eigenvalues(OP, max_matvecs=2), ValueError, r"max_matvecs: expected an integer >= 4, got 2"),
        (lambda: lanczos(OP, 0), ValueError, r"num_steps: expected an integer >= 1, got 0"),
        (lambda: lanczos(OP, 3, v0=torch.zeros(6, dtype=torch.float64)), ValueError, r"v0: expected a finite, non-zero"),
        (lambda: lanczos(OP, 3, v0=torch.ones(5, dtype=torch.float64)), ValueError, r"v0: expected a tensor of shape \(6,\), got \(5,\)"),
        (lambda: lanczos(OP, 3, v0=[1.0] * 6), TypeError, r"v0: expected a torch.Tensor"),
    ],
)
def test_bad_inputs(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
