"""One-probe SLQ: converged simple eigenpairs get their exact mass 1/D in the probe's own row."""

from __future__ import annotations

import numpy as np
import torch

from curvlens.estimators.density import spectral_density
from curvlens.estimators.slq import SIMPLE_MASS_LIMIT
from curvlens.estimators.wasserstein import wasserstein_1
from tests.estimators._density_spectra import spectra
from tests.linalg._spectra import hessian_like_spectrum, with_spectrum


def _w1(res, ev):
    return wasserstein_1(res.nodes.numpy(), res.weights.numpy(), ev)


def test_converged_nodes_get_exact_mass_and_the_rest_keep_gauss_weights():
    ev = hessian_like_spectrum(400, seed=1)
    op = with_spectrum(ev, seed=2)
    a = spectral_density(op, num_probes=1, num_steps=60, generator=5)
    b = spectral_density(op, num_probes=1, num_steps=60, deflate=False, generator=5)
    torch.testing.assert_close(a.nodes, b.nodes, rtol=0, atol=1e-12)  # the same run (two implementations)
    exact = a.weights[0] == 1.0 / 400
    n = int(exact.sum())
    assert n >= 3 and f"{n} converged eigenpair(s) of the single probe" in a.info.status
    assert torch.equal(a.node_kind[0] == 1, exact) and bool((a.node_kind[0][~exact] == 0).all())
    torch.testing.assert_close(a.weights[0][~exact], b.weights[0][~exact], rtol=0, atol=1e-12)
    top = np.sort(ev)[::-1][:3]  # the outliers converge first: they are among the exact nodes
    assert all(np.min(np.abs(a.nodes[0][exact].numpy() - t)) < 1e-8 for t in top)


def test_one_probe_w1_below_the_plain_gauss_rule():
    for D, seed in ((400, 0), (600, 2)):
        ev = hessian_like_spectrum(D, seed=seed)
        op = with_spectrum(ev, seed=3)
        w_self = [_w1(spectral_density(op, num_probes=1, num_steps=50, generator=s), ev) for s in range(6)]
        w_plain = [_w1(spectral_density(op, num_probes=1, num_steps=50, deflate=False, generator=s), ev)
                   for s in range(6)]
        assert np.mean(w_self) < 0.8 * np.mean(w_plain), (D, np.mean(w_self), np.mean(w_plain))


def test_a_repeated_eigenvalue_keeps_its_gauss_weight():
    """Half of the spectrum is an exact zero: its node's weight ~0.5 is far above a simple one's 1/D."""
    ev = spectra(200)["rank_deficient"]
    res = spectral_density(with_spectrum(ev, seed=1), num_probes=1, num_steps=40, generator=0)
    w0 = float(res.weights[0][np.argmin(np.abs(res.nodes[0].numpy()))])
    assert 200 * w0 > SIMPLE_MASS_LIMIT
    assert abs(w0 - 0.75) < 0.15  # 150 of 200 eigenvalues are zero
    assert res.fraction_below(0.5).value > 0.6


def test_one_probe_moments_stay_unbiased():
    ev = hessian_like_spectrum(200, seed=4)
    op = with_spectrum(ev, seed=5)
    for k in (1, 2):
        vals = np.array([float(spectral_density(op, num_probes=1, num_steps=25, generator=s).moment(k))
                         for s in range(40)])
        exact = float(np.mean(ev ** k))
        se = vals.std(ddof=1) / np.sqrt(len(vals))
        assert abs(vals.mean() - exact) <= 4 * se + 1e-3 * abs(exact), (k, vals.mean(), exact, se)


def test_a_breakdown_row_is_left_as_the_probes_measure():
    ev = np.repeat([-1.0, 0.5, 2.0], 20)
    res = spectral_density(with_spectrum(ev, seed=0), num_probes=1, num_steps=30, fill_budget=False, generator=0)
    assert "single probe" not in res.info.status and "invariant subspace" in res.info.status
    np.testing.assert_allclose(float(res.weights.sum()), 1.0, atol=1e-9)
