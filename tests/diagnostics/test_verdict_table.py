"""The saddle verdict table (relative curvature first) and an exact lambda_min at the default budget."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from curvlens.diagnostics import analyze
from curvlens.diagnostics.saddle import relative_curvature, saddle_from, saddle_verdict
from curvlens.estimators.density import spectral_density
from curvlens.linalg import bottom_eigenpairs
from curvlens.operators import HessianOperator

from tests.linalg._spectra import hessian_like_spectrum, with_spectrum


def _quiet(*a, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return analyze(*a, **kw)


@pytest.mark.parametrize("case, kw, verdict", [
    # converged network: symmetric bulk holds 41% of the mass, lambda_min 1% of lambda_max
    ("converged", dict(negative_mass=0.41, negative_mass_low=0.40, lambda_min=-0.01, lambda_max=1.0), "near_minimum"),
    ("converged, no bulk", dict(negative_mass=0.0, lambda_min=0.02, lambda_max=1.0), "near_minimum"),
    ("edge of near-minimum", dict(negative_mass=0.3, lambda_min=-0.05, lambda_max=1.0), "near_minimum"),
    # true saddle: a few strong negative directions, little negative mass
    ("true saddle", dict(negative_mass=0.1, negative_mass_low=0.08, lambda_min=-3.0, lambda_max=5.0), "saddle_region"),
    ("weak saddle", dict(negative_mass=0.3, lambda_min=-0.1, lambda_max=1.0), "saddle_region"),
    # heavy negative side whose interval still reaches below 0.25: not certain enough to call strong
    ("uncertain mass", dict(negative_mass=0.3, negative_mass_low=0.2, lambda_min=-0.5, lambda_max=1.0), "saddle_region"),
    # plateau / symmetric region: negative side as strong and as heavy as the positive one
    ("plateau", dict(negative_mass=0.48, negative_mass_low=0.45, lambda_min=-1.0, lambda_max=1.1), "strongly_indefinite"),
    ("no density, strong", dict(negative_mass=None, lambda_min=-0.5, lambda_max=1.0), "strongly_indefinite"),
    ("no density, mild", dict(negative_mass=None, lambda_min=-0.1, lambda_max=1.0), "saddle_region"),
    # without lambda_min the spectral masses decide, as before
    ("masses only, small", dict(negative_mass=0.01, fraction_negative=0.02), "near_minimum"),
    ("masses only, heavy", dict(negative_mass=0.3, fraction_negative=0.1), "strongly_indefinite"),
])
def test_verdict_table(case, kw, verdict):
    m = kw.pop("negative_mass")
    assert saddle_verdict(m, **kw) == verdict, case


def test_relative_curvature():
    assert relative_curvature(-0.02, 2.0) == pytest.approx(0.01)
    assert relative_curvature(0.5, 2.0) == 0.0
    assert relative_curvature(-1.0, 0.0) is None and relative_curvature(None, 1.0) is None


def _converged_like(D=400, seed=0):
    """Outliers 1, 2, 3 on a symmetric bulk in [-0.05, 0.05]: heavy negative mass (the bulk holds
    most of sum |l|), lambda_min under 2% of lambda_max."""
    rng = np.random.default_rng(seed)
    return np.sort(np.concatenate([np.array([1.0, 2.0, 3.0]), rng.uniform(-0.05, 0.05, D - 3)]))


def test_converged_spectrum_is_near_minimum_despite_negative_mass():
    ev = _converged_like()
    op = with_spectrum(ev, seed=1)
    dens = spectral_density(op, num_probes=6, num_steps=40, generator=0)
    bottom = bottom_eigenpairs(op, 1, generator=0, atol=1e-3)
    s = saddle_from(dens, bottom, lambda_max=3.0)
    assert s.negative_mass > 0.25  # the masses alone would say strongly indefinite
    assert saddle_verdict(s.negative_mass, s.fraction_negative) == "strongly_indefinite"
    assert s.relative_curvature == pytest.approx(-ev[0] / 3.0, rel=2e-2)
    assert s.verdict == "near_minimum" and "relative curvature" in s.info.status
    lo, hi = s.negative_mass_interval
    assert lo <= s.negative_mass <= hi


def test_saddle_and_plateau_spectra():
    rng = np.random.default_rng(2)
    saddle = np.sort(np.r_[-3.0, -2.5, rng.uniform(0.0, 0.05, 190), np.linspace(1.0, 5.0, 8)])
    plateau = np.sort(rng.uniform(-1.0, 1.0, 200))
    for ev, want in ((saddle, "saddle_region"), (plateau, "strongly_indefinite")):
        op = with_spectrum(ev, seed=3)
        s = saddle_from(spectral_density(op, num_probes=6, num_steps=40, generator=0),
                        bottom_eigenpairs(op, 1, generator=0), lambda_max=float(ev[-1]))
        assert s.verdict == want


def test_negative_mass_stderr_never_below_probe_spread():
    op = with_spectrum(hessian_like_spectrum(300), seed=0)
    dens = spectral_density(op, num_probes=3, num_steps=20, generator=0)
    s = saddle_from(dens)
    x, w = dens.nodes.numpy(), dens.weights.numpy()
    tol = dens._tol()
    ratios = (w * np.where(x < -tol, -x, 0.0)).sum(1) / (w * np.abs(x)).sum(1)
    assert s.negative_mass_stderr >= np.std(ratios, ddof=1) / np.sqrt(len(ratios)) - 1e-15
    lo, hi = s.negative_mass_interval
    assert hi - lo >= 2 * 4.3 * s.negative_mass_stderr - 1e-12 or lo == 0.0 or hi == 1.0  # t(0.975, 2) = 4.30


def test_lambda_min_exact_at_default_budget_on_quadratic():
    rng = np.random.default_rng(0)
    ev = np.sort(np.r_[-3.0, -rng.uniform(0.01, 2.9, 29), rng.uniform(0.01, 4.0, 169), 4.0])  # 30 negative
    op = with_spectrum(ev, seed=4)
    res = _quiet(op, which=["saddle", "conditioning"], generator=0)
    assert res.summary()["lambda_min"] == pytest.approx(-3.0, abs=1e-6)
    assert res.summary()["lambda_min_certified"] is True
    assert res.bottom.info.matvecs <= 300


def test_bottom_stage_forms_the_matrix_when_it_fits():
    op = with_spectrum(np.linspace(-1.0, 3.0, 20), seed=5)
    res = _quiet(op, which=["saddle"], budget=300, generator=0)
    assert res.bottom.info.matvecs == 20 and any("formed matrix" in n for n in res.notes)
    assert float(res.bottom.eigenvalues[0]) == pytest.approx(-1.0, abs=1e-12)
    assert res.bottom.eigenvectors.dtype == op.dtype and bool(res.bottom.converged[0])


def test_lambda_min_exact_at_default_budget_on_small_network():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 4, generator=g, dtype=torch.float64), torch.randint(0, 3, (40,), generator=g)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    res = _quiet(model, nn.CrossEntropyLoss(), (x, y), which=["saddle"], generator=0)
    H = HessianOperator(model, nn.CrossEntropyLoss(), (x, y)).to_dense()
    ref = float(torch.linalg.eigvalsh(0.5 * (H + H.T))[0])
    assert res.summary()["lambda_min"] == pytest.approx(ref, abs=1e-6 * max(1.0, abs(ref)))
