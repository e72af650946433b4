"""Gauss quadrature (Chebyshev-Markov-Stieltjes) bounds of SLQ's distribution function.

References are exact: each probe's measure ``q^T 1[A < t] q`` from ``eigh`` of the dense
matrix, with the probes rebuilt from the same seed.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from curvlens.estimators import _quadrature_bounds as qb
from curvlens.estimators._probes import probe_vectors
from curvlens.estimators.broadening import Estimate
from curvlens.estimators.density import spectral_density

from ..linalg._spectra import hessian_like_spectrum, with_spectrum
from ._density_spectra import op_with_spectrum, spectra

SLACK = 1e-10  # rounding of Lanczos in float64


def _probes(D: int, P: int, seed: int, kind: str = "rademacher") -> np.ndarray:
    """The unit probes spectral_density draws first from ``generator=seed``."""
    V = probe_vectors(D, P, kind=kind, dtype=torch.float64, device="cpu",
                      generator=torch.Generator().manual_seed(seed)).numpy()
    return V / np.linalg.norm(V, axis=0)


def _thresholds(ev: np.ndarray) -> np.ndarray:
    """Midpoints between distinct eigenvalues, plus points below and above the spectrum."""
    u = np.unique(np.round(ev, 12))
    return np.concatenate([[u[0] - 1.0, u[-1] + 1.0], (u[1:] + u[:-1]) / 2])


def _exact_per_probe(A: np.ndarray, Q: np.ndarray, t: float) -> np.ndarray:
    lam, U = np.linalg.eigh(A)
    return (((U.T @ Q) ** 2) * (lam < t)[:, None]).sum(0)


CASES = [("hessian_like", hessian_like_spectrum(120)), *spectra(48).items()]


@pytest.mark.parametrize("name,ev", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("steps", [1, 3, 10, 25])
def test_per_probe_bounds_bracket_each_probes_exact_measure(name, ev, steps):
    op = with_spectrum(ev, seed=3)
    P, seed = 5, 11
    res = spectral_density(op, num_probes=P, num_steps=steps, deflate=False, fill_budget=False, generator=seed)
    A, Q = op.matrix.numpy(), _probes(op.dim, P, seed)
    x, w, k = res.nodes.numpy(), res.weights.numpy(), res.node_kind.numpy()
    widths = []
    for t in _thresholds(ev):
        lo, hi = qb.per_probe_bounds(x, w, k, t)
        exact = _exact_per_probe(A, Q, t)
        assert np.all(lo <= exact + SLACK) and np.all(exact <= hi + SLACK), (t, lo, exact, hi)
        widths.append(float((hi - lo).max()))
        mlo, mhi = res.fraction_below_bounds(t, tol=0.0)  # the probe means bracket the mean
        assert mlo <= exact.mean() + SLACK <= mhi + 2 * SLACK
    if name == "hessian_like" and steps <= 10:
        assert max(widths) > 0.1  # few nodes over a dense bulk: the bounds must be wide somewhere


def test_deflated_rows_bracket_each_probes_exact_measure():
    """Deflated eigenvalues count exactly; the Gauss part brackets the rest of each probe."""
    rng = np.random.default_rng(1)
    D = 60
    outliers = np.array([-40.0, -30.0, -25.0, 35.0, 45.0, 60.0])
    ev = np.sort(np.concatenate([rng.uniform(-1.0, 1.0, D - 6), outliers]))
    op = with_spectrum(ev, seed=4)
    P, seed = 7, 5
    res = spectral_density(op, num_probes=P, num_steps=12, deflate=True, fill_budget=False, generator=seed)
    assert "6 converged eigenpair(s) deflated" in res.info.status and res.num_probes == P - 1
    x, w, k = res.nodes.numpy(), res.weights.numpy(), res.node_kind.numpy()
    exact_nodes = (k == qb.EXACT) & (w > 0)
    assert (exact_nodes.sum(1) == 6).all() and np.all(w[exact_nodes] == 1.0 / D)
    np.testing.assert_allclose(np.sort(x[0][exact_nodes[0]]), outliers, atol=1e-8)
    assert ((k == qb.GAUSS).sum(1) == 12).all()
    lam, U = np.linalg.eigh(op.matrix.numpy())
    keep = np.abs(lam[:, None] - outliers[None, :]).min(1) > 1e-6  # eigenvectors not deflated
    C = (U.T @ _probes(D, P, seed)[:, 1:]) ** 2  # the pilot (probe 1) is not averaged
    for t in _thresholds(ev):
        lo, hi = qb.per_probe_bounds(x, w, k, t)
        exact = (outliers < t).sum() / D + (C[keep] * (lam[keep] < t)[:, None]).sum(0)
        assert np.all(lo <= exact + 1e-9) and np.all(exact <= hi + 1e-9), (t, lo, exact, hi)


@pytest.mark.parametrize("name", ["indefinite", "clustered", "degenerate", "rank_deficient"])
@pytest.mark.parametrize("deflate", [False, True])
def test_bounds_are_tight_with_full_krylov_space(name, deflate):
    ev = spectra(24)[name]
    op = op_with_spectrum(ev, seed=2)
    res = spectral_density(op, num_probes=4, num_steps=op.dim, deflate=deflate, fill_budget=False, generator=0)
    for t in _thresholds(ev):
        lo, hi = res.fraction_below_bounds(t, tol=0.0)
        assert float(hi) - float(lo) == pytest.approx(0.0, abs=1e-12)
        assert float(lo) == pytest.approx(float(res.fraction_below(t, tol=0.0)), abs=1e-12)
    if not deflate:  # every probe's own measure, exactly
        Q = _probes(op.dim, 4, 0)
        for t in _thresholds(ev):
            lo, _ = qb.per_probe_bounds(res.nodes.numpy(), res.weights.numpy(), res.node_kind.numpy(), t)
            np.testing.assert_allclose(lo, _exact_per_probe(op.matrix.numpy(), Q, t), atol=1e-10)


def test_width_shrinks_as_steps_grow_on_a_hessian_like_spectrum():
    ev = hessian_like_spectrum(200)
    op = with_spectrum(ev, seed=0)
    ts = np.linspace(-0.05, 0.1, 31)

    def mean_width(steps):
        res = spectral_density(op, num_probes=4, num_steps=steps, generator=1)
        return np.mean([float(np.subtract(*res.fraction_below_bounds(t, tol=0)[::-1])) for t in ts])

    w = [mean_width(s) for s in (5, 20, 60, 200)]
    assert w[0] > w[1] > w[2] > w[3] and w[3] < 1e-12 and w[0] > 0.3


def test_expected_bounds_bracket_the_true_fraction():
    """Over many probes the probe means of the bounds bracket F(t) (up to a few stderr)."""
    ev = hessian_like_spectrum(150)
    op = with_spectrum(ev, seed=5)
    res = spectral_density(op, num_probes=200, num_steps=8, generator=2)
    for t in np.linspace(-0.045, 0.8, 40):
        lo, hi = res.fraction_below_bounds(t, tol=0.0)
        assert isinstance(lo, Estimate) and lo.num_probes == res.num_probes and hi.stderr >= 0
        F = float((ev < t).mean())
        assert float(lo) - 4 * lo.stderr - 1e-12 <= F <= float(hi) + 4 * hi.stderr + 1e-12, (t, lo, F, hi)


def test_point_estimate_lies_within_its_bounds_and_tol_shifts_the_threshold():
    op = with_spectrum(hessian_like_spectrum(100), seed=1)
    res = spectral_density(op, num_probes=6, num_steps=15, generator=3)
    for t in np.linspace(-0.05, 0.2, 26):
        lo, hi = res.fraction_below_bounds(t)
        assert lo - 1e-12 <= res.fraction_below(t) <= hi + 1e-12
        assert res.fraction_below_bounds(t, tol=0.01) == res.fraction_below_bounds(t - 0.01, tol=0.0)


# ------------------------------------------------------------ the inequalities on hand-made rules
def _row(x, w, kind=None):
    x, w = np.asarray([x], dtype=np.float64), np.asarray([w], dtype=np.float64)
    k = np.zeros(x.shape, dtype=np.int8) if kind is None else np.asarray([kind], dtype=np.int8)
    return x, w, k


@pytest.mark.parametrize("s,want", [
    (-5.0, (0.0, 0.2)),      # below every node: [0, w1]
    (-1.0, (0.0, 0.2)),      # at x1: F(x1-) in [0, w1]
    (0.0, (0.0, 0.7)),       # between x1 and x2: [C0, C2]
    (1.0, (0.2, 0.7)),       # at x2: [C1, C2]
    (1.5, (0.2, 1.0)),       # between x2 and x3: [C1, C3]
    (9.0, (0.7, 1.0)),       # above every node: [C_{n-1}, C_n]
])
def test_chebyshev_markov_stieltjes_cases(s, want):
    x, w, k = _row([-1.0, 1.0, 2.0], [0.2, 0.5, 0.3])
    lo, hi = qb.per_probe_bounds(x, w, k, s)
    assert (float(lo[0]), float(hi[0])) == pytest.approx(want)


def test_bounds_are_attained_by_two_point_measures():
    """A 1-node rule (node at the probe's mean ``q^T A q``, weight 1) gives [0, 1] on either side of
    its node: the bounds cannot be tighter, since a point mass at the node (F = 0 below it, 1
    above) and the probe's two-point measure on {-1, 1} share that rule."""
    op = with_spectrum([-1.0, 1.0], seed=0)
    res = spectral_density(op, num_probes=2, num_steps=1, deflate=False, fill_budget=False, generator=0)
    node = float(res.nodes[0, 0])
    for t in (node - 0.01, node + 0.01):
        lo, hi = qb.per_probe_bounds(res.nodes.numpy()[:1], res.weights.numpy()[:1], res.node_kind.numpy()[:1], t)
        assert (float(lo[0]), float(hi[0])) == pytest.approx((0.0, 1.0))
    q = _probes(2, 2, 0)[:, 0]
    assert -1 < node < 1 and float(_exact_per_probe(op.matrix.numpy(), q[:, None], 0.999)[0]) not in (0.0, 1.0)


def test_exact_nodes_padding_and_unknown_rows():
    x, w, k = _row([-3.0, -1.0, 0.5, 2.0, 2.0], [0.25, 0.3, 0.45, 0.0, 0.0], [1, 0, 0, 1, 1])
    lo, hi = qb.per_probe_bounds(x, w, k, 0.0)  # exact 0.25 below; Gauss [C0, C2] = [0, 0.75]
    assert (float(lo[0]), float(hi[0])) == pytest.approx((0.25, 1.0))
    x, w, k = _row([-1.0, 1.0], [0.6, 0.4], [-1, -1])
    assert tuple(float(v[0]) for v in qb.per_probe_bounds(x, w, k, 5.0)) == (0.0, 1.0)


def test_node_kinds_of_slq_layouts():
    """Rows as run_slq lays them out: sorted, padded with zero weights repeating the last node."""
    D = 8
    nodes = np.array([[-1.0, 0.5, 0.5, 0.5], [-1.0, 0.0, 1.0, 3.0], [-4.0, -1.0, 0.5, 2.0], [-4.0, 1.0, 1.0, 1.0]])
    weights = np.array([[0.3, 0.7, 0.0, 0.0], [0.1, 0.2, 0.3, 0.4], [0.1, 0.3, 0.2, 0.4], [0.1, 0.9, 0.0, 0.0]])
    k = qb.slq_node_kinds(nodes, weights, dim=D, steps=4, deflated=0, extra_probes=0)
    assert k[0].tolist() == [1, 1, 1, 1] and k[3].tolist() == [1, 1, 1, 1]  # 2 < 4 nodes: invariant subspace
    assert k[1].tolist() == [0, 0, 0, 0] and k[2].tolist() == [0, 0, 0, 0]  # all 4 steps ran: Gauss
    weights[2, 0] = weights[3, 0] = 1.0 / D  # one deflated eigenvalue (-4) in rows 2 and 3
    k = qb.slq_node_kinds(nodes, weights, dim=D, steps=3, deflated=1, extra_probes=0)
    assert k[2].tolist() == [1, 0, 0, 0] and k[3].tolist() == [1, 1, 1, 1]
    assert (k[0] == qb.UNKNOWN).all() and (k[1] == qb.UNKNOWN).all()  # rows without the deflated node
    # extra probes ran for the longest run seen: only a shorter one proves an invariant subspace
    k = qb.slq_node_kinds(nodes[:1].repeat(3, 0), weights[:1].repeat(3, 0), dim=D, steps=5, deflated=0,
                          extra_probes=2)
    assert k[0].tolist() == [1, 1, 1, 1] and (k[1:, :2] == qb.GAUSS).all() and (k[1:, 2:] == qb.EXACT).all()


def test_budget_filling_rows_count_exactly_only_when_proven():
    """Probes that stopped early are exact; the extra probes ran only as long as the longest stop,
    so one that used all its steps proves nothing and keeps Gauss bounds (conservative)."""
    op = op_with_spectrum(spectra(24)["degenerate"], seed=1)  # 3 distinct eigenvalues: runs stop at 3
    res = spectral_density(op, num_probes=3, num_steps=8, deflate=False, generator=0)
    assert "extra probe(s)" in res.info.status and res.num_probes > 3
    kinds = res.node_kind.numpy()
    assert (kinds[:3] == qb.EXACT).all() and (kinds[3:, :3] == qb.GAUSS).all()
    for t in (-3.0, -2.0, 0.0, 2.0, 5.0):
        lo, hi = res.fraction_below_bounds(t)
        assert lo - 1e-12 <= res.fraction_below(t) <= hi + 1e-12


def test_kpm_result_raises_naming_method_and_fix():
    op = op_with_spectrum(spectra(12)["indefinite"])
    res = spectral_density(op, num_probes=2, num_steps=6, method="kpm", generator=0)
    assert res.node_kind is None
    with pytest.raises(ValueError, match=r"fraction_below_bounds: expected an SLQ result .* got method='kpm'; "
                                         r"rerun spectral_density\(op, method='slq'\)"):
        res.fraction_below_bounds(0.0)
