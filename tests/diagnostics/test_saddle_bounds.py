"""Saddle index with Gauss quadrature bounds: resolved or not, and what the verdict then uses."""

from __future__ import annotations

import math

import numpy as np
import pytest

from curvlens.diagnostics import saddle_from, saddle_verdict
from curvlens.diagnostics.saddle import RESOLVED_WIDTH, STRONGLY_INDEFINITE
from curvlens.estimators.density import spectral_density

from ..linalg._spectra import hessian_like_spectrum, with_spectrum


def _bulk_straddling_zero(seed=0):
    """40 of 200 eigenvalues in [-2e-3, -1e-3], 60 in [0, 5e-4], 100 spread over [1, 10]: the
    saddle index is 0.2 and the negative mass 1e-4, but few nodes put the whole bulk below zero."""
    rng = np.random.default_rng(seed)
    ev = np.sort(np.concatenate([-rng.uniform(1e-3, 2e-3, 40), rng.uniform(0, 5e-4, 60), np.linspace(1, 10, 100)]))
    return ev, with_spectrum(ev, seed=2)


def test_demo_like_spectrum_is_not_resolved_and_bounds_bracket_the_truth():
    ev = hessian_like_spectrum(300)  # a continuum of small negatives beside a positive bulk near zero
    op = with_spectrum(ev, seed=0)
    dens = spectral_density(op, num_probes=10, num_steps=30, generator=0)
    s = saddle_from(dens)
    lo, hi = s.fraction_negative_bounds
    probe_se = float(dens.fraction_below(0.0).stderr)
    assert s.fraction_negative_resolved is False and hi - lo > max(RESOLVED_WIDTH, 3 * probe_se)
    # unresolved: the reported stderr covers the quadrature interval, not the probe noise alone
    assert s.fraction_negative_stderr >= 0.5 * (hi - lo) > probe_se
    assert (lo, hi) == (float(dens.fraction_below_bounds(0.0)[0]), float(dens.fraction_below_bounds(0.0)[1]))
    exact = float((ev < 0).mean())
    assert lo - 3 * dens.fraction_below_bounds(0.0)[0].stderr <= exact <= hi
    assert lo <= s.fraction_negative <= hi
    assert s.verdict == saddle_verdict(s.negative_mass, lo)
    assert "saddle index not resolved by this quadrature" in s.info.status and "more num_steps" in s.info.status


def test_unresolved_index_no_longer_drives_the_verdict():
    ev, op = _bulk_straddling_zero()
    s = saddle_from(spectral_density(op, num_probes=10, num_steps=10, generator=0))
    assert s.fraction_negative >= STRONGLY_INDEFINITE  # the point estimate: the whole bulk below zero
    assert saddle_verdict(s.negative_mass, s.fraction_negative) == "strongly_indefinite"  # the old verdict
    lo, hi = s.fraction_negative_bounds
    assert s.fraction_negative_resolved is False and lo < 0.2 < hi
    assert s.negative_mass == pytest.approx(-ev[ev < 0].sum() / np.abs(ev).sum(), rel=0.5)
    assert s.verdict == "near_minimum"  # truth: f = 0.2, m = 1e-4


def test_unresolved_but_certified_lower_bound_still_counts():
    """35% of the eigenvalues are tiny negatives: the bounds do not resolve the index, but their
    lower bound already exceeds 0.25, so the verdict stays strongly indefinite."""
    rng = np.random.default_rng(0)
    ev = np.sort(np.concatenate([-rng.uniform(0, 1e-3, 70), rng.uniform(0, 1e-3, 120), np.linspace(1, 10, 10)]))
    s = saddle_from(spectral_density(with_spectrum(ev, seed=1), num_probes=10, num_steps=30, generator=0))
    lo, hi = s.fraction_negative_bounds
    assert s.fraction_negative_resolved is False and STRONGLY_INDEFINITE <= lo <= 0.35 <= hi
    assert s.negative_mass < 0.01 and s.verdict == "strongly_indefinite"


def test_exact_quadrature_is_resolved_and_verdict_uses_the_index():
    ev, op = _bulk_straddling_zero()
    s = saddle_from(spectral_density(op, num_probes=3, num_steps=op.dim, fill_budget=False, generator=0))
    assert s.fraction_negative_resolved is True
    assert s.fraction_negative_bounds == pytest.approx((0.2, 0.2), abs=1e-12)
    assert s.fraction_negative == pytest.approx(0.2, abs=1e-12) and s.verdict == "near_minimum"
    assert "not resolved" not in s.info.status


def test_resolution_rule_width_against_stderr():
    """Resolved iff upper - lower <= max(0.05, 3 stderr): wide bounds pass when probe noise is larger."""
    ev = np.concatenate([-np.linspace(0.5, 2.0, 5), np.linspace(0.1, 3.0, 15)])
    op = with_spectrum(ev, seed=3)
    for steps, probes in ((3, 2), (3, 40), (6, 10), (12, 10)):
        dens = spectral_density(op, num_probes=probes, num_steps=steps, deflate=False, generator=1)
        s = saddle_from(dens)
        lo, hi = s.fraction_negative_bounds
        se = float(dens.fraction_below(0.0).stderr)  # probe noise (the reported stderr is widened when unresolved)
        assert s.fraction_negative_resolved == (hi - lo <= max(RESOLVED_WIDTH, 3 * se if math.isfinite(se) else 0))
        assert s.fraction_negative_stderr >= (se if s.fraction_negative_resolved else 0.5 * (hi - lo))
        if s.fraction_negative_resolved:
            assert s.verdict == saddle_verdict(s.negative_mass, s.fraction_negative)


def test_kpm_and_bottom_only_have_no_bounds():
    ev, op = _bulk_straddling_zero()
    kpm = spectral_density(op, num_probes=4, num_steps=20, method="kpm", generator=0)
    s = saddle_from(kpm)
    assert s.fraction_negative_bounds is None and s.fraction_negative_resolved is None
    assert s.verdict == saddle_verdict(s.negative_mass, s.fraction_negative)  # as before: no bounds to use
