"""Chebyshev filters and the filtered bottom-end solver against exact references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from numpy.polynomial import chebyshev as npcheb

import curvlens.linalg._filtered as filtered
from curvlens.linalg import bottom_eigenpairs
from curvlens.linalg.chebyshev import ChebyshevFilter, choose_filter
from curvlens.linalg.eigen import default_basis_size

from ._spectra import hessian_like_spectrum, recomputed_residuals, with_spectrum


def _reference_p(f: ChebyshevFilter, lam):
    x = lambda t: (2 * np.asarray(t) - f.lower - f.upper) / (f.upper - f.lower)  # noqa: E731
    coef = np.zeros(f.degree + 1)
    coef[-1] = 1.0
    return npcheb.chebval(x(lam), coef) / npcheb.chebval(x(f.scale_point), coef)


@pytest.mark.parametrize("degree", [1, 2, 7, 30])
def test_apply_is_the_scaled_chebyshev_polynomial(degree):
    f = ChebyshevFilter(lower=0.1, upper=2.0, degree=degree, scale_point=-0.3)
    lam = np.r_[-0.5, -0.3, -0.1, 0.0, np.linspace(0.1, 2.0, 17)]
    A = torch.diag(torch.from_numpy(lam))
    X = torch.eye(len(lam), dtype=torch.float64)[:, :5] + 0.5
    calls = []

    def mm(V):
        calls.append(V.shape[1])
        return A @ V

    Y = f.apply(mm, X)
    expected = torch.from_numpy(_reference_p(f, lam))[:, None] * X
    torch.testing.assert_close(Y, expected, rtol=1e-12, atol=1e-12)
    assert calls == [5] * degree
    inside = np.abs(_reference_p(f, lam[lam >= 0.1]))
    assert inside.max() <= f.damping * (1 + 1e-12)


def test_value_derivative_inverse_consistent():
    f = ChebyshevFilter(lower=0.0, upper=8.5, degree=40, scale_point=-0.014)
    lam = np.array([-0.03, -0.0143, -0.01, -0.001])
    np.testing.assert_allclose(f.value(lam), _reference_p(f, lam), rtol=1e-10)
    np.testing.assert_allclose(f.inverse(f.value(lam)), lam, rtol=1e-9)
    h = 1e-7
    fd = (f.value(lam - h) - f.value(lam + h)) / (2 * h)  # p decreases as l grows below a
    np.testing.assert_allclose(f.derivative(lam), fd, rtol=1e-5)
    assert f.inverse(0.5 * f.damping) == pytest.approx(f.lower)


def test_choose_filter_bounds_from_interlacing():
    ritz = np.array([-0.2, -0.1, 0.05, 0.3, 1.0])
    f = choose_filter(ritz, 2, 1.2)
    assert (f.lower, f.upper, f.scale_point) == (0.05, 1.2, -0.2)
    assert f.value(-0.2) == pytest.approx(1.0) and f.value(-0.2) / f.damping >= 3.0 - 1e-9
    assert choose_filter(ritz, 5, 1.2) is None  # no Ritz value left above the wanted ones
    assert choose_filter(np.array([0.0, 0.0, 1.0]), 1, 1.0) is None


def test_bad_filter_arguments():
    with pytest.raises(ValueError, match="scale_point < lower < upper"):
        ChebyshevFilter(lower=1.0, upper=0.5, degree=3, scale_point=0.0)
    op = with_spectrum(np.linspace(-1, 1, 20))
    with pytest.raises(ValueError, match="filter: expected None or 'chebyshev', got 'auto'"):
        bottom_eigenpairs(op, filter="auto")
    with pytest.raises(ValueError, match="spectrum_upper: expected a finite float"):
        bottom_eigenpairs(op, filter="chebyshev", spectrum_upper=float("nan"))


@pytest.mark.parametrize("k", [1, 4])
def test_filtered_bottom_certified_against_eigh(k):
    ev = hessian_like_spectrum(400, seed=1)
    op = with_spectrum(ev, seed=2)
    res = bottom_eigenpairs(op, k, filter="chebyshev", max_matvecs=4000, generator=0)
    assert res.all_converged and res.method == "chebyshev_filtered_thick_restart_lanczos"
    assert "Chebyshev-filtered (degree" in res.info.status
    np.testing.assert_allclose(res.eigenvalues.numpy(), ev[:k], rtol=0, atol=1e-3 * abs(ev[0]))
    np.testing.assert_allclose(res.residuals.numpy(), recomputed_residuals(op, res), rtol=1e-6, atol=1e-13)
    again = bottom_eigenpairs(op, k, filter="chebyshev", max_matvecs=4000, generator=0)
    assert torch.equal(res.eigenvectors, again.eigenvectors) and res.info.matvecs == again.info.matvecs


def test_filtered_raises_a_too_low_upper_bound(monkeypatch):
    ev = np.r_[-0.5, -0.45, np.linspace(0.0, 1.0, 150), 10.0]
    op = with_spectrum(ev, seed=3)
    seen = []
    real = filtered.choose_filter

    def low_first(ritz, k, upper, **kw):  # pretend the first estimate missed lambda_max = 10
        seen.append(upper)
        return real(ritz, k, 2.0 if len(seen) == 1 else upper, **kw)

    monkeypatch.setattr(filtered, "choose_filter", low_first)
    res = bottom_eigenpairs(op, 1, filter="chebyshev", basis_size=3, max_matvecs=3000, generator=0)
    assert len(seen) >= 2 and seen[-1] > 10.0
    assert res.all_converged and float(res.eigenvalues[0]) == pytest.approx(-0.5, abs=1e-3 * 0.5)


def test_easy_bottom_end_never_reaches_the_filter():
    op = with_spectrum(np.linspace(-3.0, 1.0, 50))
    res = bottom_eigenpairs(op, 1, filter="chebyshev", generator=0)
    assert res.all_converged and res.method == "block_thick_restart_lanczos"


def test_default_basis_larger_at_the_bottom_and_capped_by_memory(monkeypatch):
    import curvlens.linalg.eigen as eigen

    assert default_basis_size(1, 1, largest=True, dim=10**6) == 22
    assert default_basis_size(1, 1, largest=False, dim=10**6) == 100
    assert default_basis_size(5, 2, largest=False, dim=10**6) == 120
    monkeypatch.setattr(eigen, "available_memory", lambda device=None: 10**9)
    # 10% of 1 GB holds 25 float32 vectors of 10^6: the cap, never below the top-end size
    assert default_basis_size(1, 1, largest=False, dim=10**6) == 25
    assert default_basis_size(5, 2, largest=False, dim=10**6) == 60
