"""Spectral density (SLQ and KPM) against dense matrices with known spectra."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from curvlens.errors import ConvergenceWarning
from curvlens.estimators._probes import probe_vectors
from curvlens.estimators.density import DensityResult, spectral_density
from curvlens.operators.dense import DenseOperator
from curvlens.results import RESULT_KINDS

from ._density_spectra import op_with_spectrum, spectra

SPECTRA = spectra(48)


def exact_negative_mass(ev):
    return float(np.abs(ev[ev < 0]).sum() / np.abs(ev).sum())


@pytest.mark.parametrize("name", sorted(SPECTRA))
@pytest.mark.parametrize("method,steps,tol", [("slq", 16, 0.06), ("kpm", 48, 0.15)])
def test_w1_to_exact_spectrum_is_small(name, method, steps, tol):
    ev = SPECTRA[name]
    res = spectral_density(op_with_spectrum(ev), num_probes=24, num_steps=steps, method=method, generator=3)
    spread = ev.max() - ev.min()
    assert res.wasserstein_1(ev) < tol * spread / 4
    assert res.info.converged


@pytest.mark.parametrize("name", sorted(SPECTRA))
def test_slq_with_full_krylov_space_is_exact(name):
    ev = SPECTRA[name]
    res = spectral_density(op_with_spectrum(ev), num_probes=8, num_steps=48, generator=1)
    # the first probe converges every eigenpair (or breaks down on the exact ones); deflation
    # then makes every later probe exact
    assert res.wasserstein_1(ev) < 0.03 * (ev.max() - ev.min())
    plain = spectral_density(op_with_spectrum(ev), num_probes=8, num_steps=48, generator=1, deflate=False)
    distinct = np.unique(np.round(ev, 9))
    for row_x, row_w in zip(plain.nodes.numpy(), plain.weights.numpy()):
        live = row_x[row_w > 1e-12]
        # every node with weight is an exact eigenvalue
        assert np.abs(live[:, None] - ev[None, :]).min(axis=1).max() < 1e-8
    assert plain.nodes.shape[1] <= 48
    assert len(distinct) >= 3


def test_distinct_spectrum_full_lanczos_gives_exact_nodes_and_weights():
    ev = np.linspace(-2.0, 5.0, 20)
    op = op_with_spectrum(ev, seed=2)
    res = spectral_density(op, num_probes=3, num_steps=20, generator=5, deflate=False)
    V = probe_vectors(20, 3, kind="rademacher", generator=torch.Generator().manual_seed(5))
    lam, U = torch.linalg.eigh(op.matrix)
    for p in range(3):
        q = V[:, p] / V[:, p].norm()
        np.testing.assert_allclose(res.nodes[p].numpy(), lam.numpy(), atol=1e-9)
        np.testing.assert_allclose(res.weights[p].numpy(), ((U.T @ q) ** 2).numpy(), atol=1e-9)


@pytest.mark.parametrize("method", ["slq", "kpm"])
@pytest.mark.parametrize("name", sorted(SPECTRA))
def test_density_integrates_to_one(method, name):
    res = spectral_density(op_with_spectrum(SPECTRA[name]), num_probes=4, num_steps=12, method=method, generator=0)
    integral = np.trapezoid(res.density.numpy(), res.grid.numpy())
    assert abs(integral - 1.0) < 1e-6
    sums = res.weights.sum(1).numpy()
    if method == "kpm":
        np.testing.assert_allclose(sums, 1.0, atol=1e-12)
    else:  # deflated rows sum to 1 in expectation
        assert abs(float(res.moment(0)) - 1.0) <= 4 * res.moment(0).stderr + 1e-12
        plain = spectral_density(op_with_spectrum(SPECTRA[name]), num_probes=4, num_steps=12, generator=0,
                                 deflate=False)
        np.testing.assert_allclose(plain.weights.sum(1).numpy(), 1.0, atol=1e-12)
    if method == "slq":
        assert float(res.density.min()) >= 0.0
    assert res.density_stderr.shape == res.grid.shape


@pytest.mark.parametrize("deflate", [False, True])
@pytest.mark.parametrize("name,t", [("indefinite", 0.5), ("indefinite", 0.0), ("clustered", 0.5),
                                    ("degenerate", 0.0), ("rank_deficient", 1.0)])
def test_fraction_below_within_reported_stderr(name, t, deflate):
    ev = SPECTRA[name]
    res = spectral_density(op_with_spectrum(ev), num_probes=24, num_steps=16, generator=11, deflate=deflate)
    est, exact = res.fraction_below(t), float((ev < t).mean())
    assert est.stderr >= 0 and est.num_probes >= 23  # 23: the deflation pilot is not averaged
    assert abs(est - exact) <= 4 * est.stderr + 1e-10


@pytest.mark.parametrize("deflate", [False, True])
@pytest.mark.parametrize("name", ["indefinite", "degenerate"])
def test_negative_mass_within_reported_stderr(name, deflate):
    ev = SPECTRA[name]
    res = spectral_density(op_with_spectrum(ev), num_probes=24, num_steps=16, generator=4, deflate=deflate)
    nm = res.negative_mass()
    assert nm.stderr > 0
    assert abs(nm - exact_negative_mass(ev)) <= 4 * nm.stderr


def test_psd_with_many_zeros_has_no_negative_mass():
    ev = SPECTRA["rank_deficient"]
    res = spectral_density(op_with_spectrum(ev), num_probes=6, num_steps=16, generator=2)
    assert res.negative_mass() == 0.0
    assert res.fraction_below(0.0) == 0.0
    frac0 = res.fraction_below(1e-6)
    assert abs(frac0 - 0.75) <= 4 * frac0.stderr + 1e-12


@pytest.mark.parametrize("k", [0, 1, 2, 3, 5, 9])
def test_slq_moment_equals_probe_quadratic_form(k):
    """Gauss quadrature with m steps is exact for degree < 2m: per probe q^T A^k q."""
    ev = SPECTRA["indefinite"]
    op = op_with_spectrum(ev)
    res = spectral_density(op, num_probes=5, num_steps=6, generator=9, deflate=False)
    V = probe_vectors(48, 5, kind="rademacher", generator=torch.Generator().manual_seed(9))
    Ak = torch.linalg.matrix_power(op.matrix, k)
    per_probe = [float(v @ Ak @ v / (v @ v)) for v in V.T]
    est = res.moment(k)
    assert float(est) == pytest.approx(np.mean(per_probe), rel=1e-9, abs=1e-12)
    assert est.stderr == pytest.approx(np.std(per_probe, ddof=1) / np.sqrt(5), rel=1e-6, abs=1e-12)


@pytest.mark.parametrize("method,deflate", [("slq", False), ("slq", True), ("kpm", False)])
def test_moments_are_unbiased_over_seeds(method, deflate):
    ev = SPECTRA["indefinite"]
    op = op_with_spectrum(ev)
    kw = {"bounds": (-2.0, 26.0)} if method == "kpm" else {"deflate": deflate}
    runs = [spectral_density(op, num_probes=2, num_steps=4, method=method, generator=s, grid=64, **kw)
            for s in range(40)]
    for k in (1, 2, 3):
        vals = [float(r.moment(k)) for r in runs]
        exact = float(np.mean(ev**k))
        se = np.std(vals, ddof=1) / np.sqrt(len(vals))
        assert abs(np.mean(vals) - exact) <= 4 * se + 1e-9 * abs(exact)


def test_kpm_moment_matches_quadratic_form_exactly():
    ev = SPECTRA["clustered"]
    op = op_with_spectrum(ev)
    res = spectral_density(op, num_probes=3, num_steps=5, method="kpm", bounds=(-1.0, 6.0), generator=2)
    V = probe_vectors(48, 3, kind="rademacher", generator=torch.Generator().manual_seed(2))
    for k in range(0, 11):
        Ak = torch.linalg.matrix_power(op.matrix, k)
        want = np.mean([float(v @ Ak @ v / (v @ v)) for v in V.T])
        assert float(res.moment(k)) == pytest.approx(want, rel=1e-8, abs=1e-10)
    assert res.chebyshev_moments.shape == (3, 11)
    assert res.bounds == (-1.0, 6.0)
    assert res.info.matvecs == 15


def test_kpm_estimated_bounds_enclose_spectrum_and_narrow_bounds_warn():
    ev = SPECTRA["indefinite"]
    op = op_with_spectrum(ev)
    res = spectral_density(op, num_probes=2, num_steps=10, method="kpm", generator=0)
    lo, hi = res.bounds
    assert lo <= ev.min() and hi >= ev.max()
    assert res.info.converged
    with pytest.warns(ConvergenceWarning, match="pass wider bounds"):
        bad = spectral_density(op, num_probes=2, num_steps=10, method="kpm", bounds=(-1.0, 3.0), generator=0)
    assert not bad.info.converged
    assert "wider bounds" in bad.info.status


def test_same_seed_identical_and_global_rng_untouched():
    op = op_with_spectrum(SPECTRA["indefinite"])
    torch_state, np_state = torch.get_rng_state(), np.random.get_state()
    for method in ("slq", "kpm"):
        a = spectral_density(op, num_probes=3, num_steps=8, method=method, generator=torch.Generator().manual_seed(7))
        b = spectral_density(op, num_probes=3, num_steps=8, method=method, generator=7)
        assert torch.equal(a.nodes, b.nodes) and torch.equal(a.weights, b.weights)
        assert torch.equal(a.density, b.density)
        assert a.info.seed == 7
        c = spectral_density(op, num_probes=3, num_steps=8, method=method, generator=8)
        assert not torch.equal(a.weights, c.weights)
        d = spectral_density(op, num_probes=3, num_steps=8, method=method)  # fresh OS seed, recorded
        e = spectral_density(op, num_probes=3, num_steps=8, method=method, generator=d.info.seed)
        assert torch.equal(d.weights, e.weights)
    assert torch.equal(torch.get_rng_state(), torch_state)
    after = np.random.get_state()
    assert after[0] == np_state[0] and np.array_equal(after[1], np_state[1]) and after[2:] == np_state[2:]


def test_early_breakdown_pads_with_zero_weights_and_fills_budget():
    ev = np.repeat([-1.0, 2.0], [5, 7])
    op = op_with_spectrum(ev)
    res = spectral_density(op, num_probes=3, num_steps=10, generator=0, fill_budget=False, deflate=False)
    assert res.nodes.shape == (3, 2) or res.nodes.shape[0] == 3
    assert res.info.matvecs == 6  # two steps per probe: two distinct eigenvalues
    np.testing.assert_allclose(res.weights.sum(1).numpy(), 1.0, atol=1e-12)
    filled = spectral_density(op, num_probes=3, num_steps=10, generator=0, deflate=False)
    assert filled.num_probes == 15 and filled.info.matvecs == 30
    assert "extra probe" in filled.info.status
    fb = filled.fraction_below(0.0)
    assert fb.num_probes == 15 and abs(fb - 5 / 12) <= 4 * fb.stderr
    assert torch.equal(filled.nodes[:3], res.nodes)  # the requested probes come first, unchanged
    # ragged rows: blocks [[2,1],[1,2]] (eigs 1, 3) and [[3,2],[2,3]] (eigs 1, 5); every
    # Rademacher probe is a sum of one eigenvector per block, so its Krylov space has
    # dimension 1 (both parts at eigenvalue 1) or 2
    A = torch.zeros(4, 4, dtype=torch.float64)
    A[:2, :2] = torch.tensor([[2.0, 1.0], [1.0, 2.0]])
    A[2:, 2:] = torch.tensor([[3.0, 2.0], [2.0, 3.0]])
    r = spectral_density(DenseOperator(A), num_probes=8, num_steps=4, generator=1, fill_budget=False, deflate=False)
    counts = (r.weights > 0).sum(1)
    assert r.nodes.shape == (8, 2) and set(counts.tolist()) == {1, 2}
    np.testing.assert_allclose(r.weights.sum(1).numpy(), 1.0, atol=1e-12)
    assert torch.all(r.nodes[:, 1:] >= r.nodes[:, :-1])
    assert r.wasserstein_1([1.0, 3.0, 1.0, 5.0]) < 0.6


def test_callback_reports_progress_in_products():
    op = op_with_spectrum(SPECTRA["indefinite"])
    for method in ("slq", "kpm"):
        calls = []
        spectral_density(op, num_probes=3, num_steps=5, method=method, bounds=(-2.0, 26.0) if method == "kpm" else None,
                         generator=0, callback=lambda d, t: calls.append((d, t)))
        assert calls[-1] == (15, 15)
        assert all(b[0] >= a[0] for a, b in zip(calls, calls[1:]))


def test_float32_operator_and_result_registration():
    ev = SPECTRA["indefinite"]
    op = op_with_spectrum(ev, dtype=torch.float32)
    res = spectral_density(op, num_probes=8, num_steps=16, generator=0)
    assert res.nodes.dtype == torch.float64 and res.info.dtype == "torch.float32"
    ref = spectral_density(op_with_spectrum(ev), num_probes=8, num_steps=16, generator=0)
    # same probes; float32 deflates with a looser residual tolerance (sqrt(eps))
    assert abs(res.wasserstein_1(ev) - ref.wasserstein_1(ev)) < 0.03
    assert res.info.converged and "deflated" in res.info.status
    assert RESULT_KINDS["spectral_density"][0] is DensityResult
    assert res.method == "slq" and res.dim == 48 and res.sigma > 0


def test_smoothed_regrids_and_user_grid():
    op = op_with_spectrum(SPECTRA["clustered"])
    grid = torch.linspace(-1.0, 6.0, 701, dtype=torch.float64)
    res = spectral_density(op, num_probes=4, num_steps=10, generator=0, grid=grid, sigma=0.05)
    assert torch.equal(res.grid, grid) and res.sigma == 0.05
    g2, d2, s2 = res.smoothed(grid=401, sigma=0.1)
    assert g2.shape == d2.shape == s2.shape == (401,)
    assert abs(np.trapezoid(d2.numpy(), g2.numpy()) - 1) < 1e-6


def test_network_hessian_density_matches_torch_func_hessian():
    """Model Hessian (tiny MLP, float64) against eigenvalues of ``torch.func.hessian``."""
    from torch import nn
    from torch.func import functional_call, hessian

    from curvlens.operators import HessianOperator

    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
    x = torch.randn(16, 3, generator=g, dtype=torch.float64)
    y = torch.randint(0, 2, (16,), generator=g)
    loss_fn = nn.CrossEntropyLoss()
    names = [n for n, _ in model.named_parameters()]
    flat0 = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    shapes = [p.shape for p in model.parameters()]

    def loss_of(flat):
        parts, i = {}, 0
        for n, s in zip(names, shapes):
            parts[n] = flat[i:i + s.numel()].reshape(s)
            i += s.numel()
        return loss_fn(functional_call(model, parts, (x,)), y)

    ev = torch.linalg.eigvalsh(hessian(loss_of)(flat0)).numpy()
    op = HessianOperator(model, loss_fn, (x, y))
    res = spectral_density(op, num_probes=12, num_steps=10, generator=1)
    assert res.wasserstein_1(ev) < 0.05 * (ev.max() - ev.min())
    assert res.info.matvecs <= 120
    for k in (1, 2):
        m = res.moment(k)
        assert abs(m - float(np.mean(ev**k))) <= 4 * m.stderr + 1e-9
    # the step at 0 sits on a cluster (5 exact zeros from softmax shift invariance, small
    # negatives): resolving it needs the full Krylov space, which the pilot then deflates
    full = spectral_density(op, num_probes=3, num_steps=26, generator=1)
    assert full.fraction_below(0.0) == pytest.approx(float((ev < -1e-10).mean()), abs=1e-9)
    assert full.negative_mass() == pytest.approx(float(-ev[ev < -1e-10].sum() / np.abs(ev).sum()), abs=1e-9)
