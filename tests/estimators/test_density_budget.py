"""spectral_density(num_matvecs=...): the budget split and its accuracy against the exact spectrum."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from curvlens.estimators._density_budget import split_budget
from curvlens.estimators.density import spectral_density
from curvlens.estimators.wasserstein import wasserstein_1
from tests.estimators._density_spectra import spectra
from tests.linalg._spectra import hessian_like_spectrum, with_spectrum


@pytest.mark.parametrize("M, D, expected", [
    (800, 2714, (6, 133)), (300, 2714, (3, 100)), (5000, 2714, (10, 500)), (800, 10**6, (1, 800)),
    (5000, 10**6, (1, 5000)), (6000, 10**6, (3, 2000)), (100, 10**6, (1, 100)), (2, 10**6, (1, 2)),
    (800, 50, (16, 50)), (20, 600, (1, 20)), (100, 600, (1, 100)), (200, 600, (3, 66)), (200, 400, (4, 50)),
])
def test_split_budget(M, D, expected):
    P, m = split_budget(M, D)
    assert (P, m) == expected and P * m <= M


def test_num_matvecs_spends_the_budget_and_is_reproducible():
    op = with_spectrum(hessian_like_spectrum(300), seed=1)
    res = spectral_density(op, num_matvecs=240, generator=3)
    assert res.info.matvecs <= 240 and "5 probe(s) x 48 step(s)" in res.info.status
    again = spectral_density(op, num_matvecs=240, generator=3)
    assert torch.equal(res.nodes, again.nodes) and torch.equal(res.weights, again.weights)


def test_budget_split_beats_many_short_runs_in_w1():
    ev = hessian_like_spectrum(600, seed=2)
    op = with_spectrum(ev, seed=3)
    w_split, w_short = [], []
    for s in range(4):
        a = spectral_density(op, num_matvecs=240, generator=s)
        b = spectral_density(op, num_probes=12, num_steps=20, generator=s)
        w_split.append(wasserstein_1(a.nodes.numpy(), a.weights.numpy(), ev))
        w_short.append(wasserstein_1(b.nodes.numpy(), b.weights.numpy(), ev))
    assert np.mean(w_split) < 0.7 * np.mean(w_short)


@pytest.mark.parametrize("name, D, budgets", [
    ("hessian_like", 600, (50, 200)),
    ("indefinite", 400, (200,)), ("rank_deficient", 400, (200,)), ("clustered", 400, (200,)),
])
def test_chosen_split_never_worse_than_one_long_run(name, D, budgets):
    """The rule's split has a mean W1 <= one probe x all steps at the same budget, with (default)
    and without deflation; at 200 products these spectra get 3 or 4 probes, at 50 one."""
    ev = hessian_like_spectrum(D, seed=2) if name == "hessian_like" else spectra(D)[name]
    op = with_spectrum(ev, seed=3)
    for M in budgets:
        P, m = split_budget(M, D)
        assert (P > 1) == (M == 200)
        w_rule, w_one, w_plain = [], [], []
        for s in range(6):
            a = spectral_density(op, num_matvecs=M, generator=s)
            b = spectral_density(op, num_probes=1, num_steps=M, generator=s)
            c = spectral_density(op, num_probes=1, num_steps=M, deflate=False, generator=s)
            w_rule.append(wasserstein_1(a.nodes.numpy(), a.weights.numpy(), ev))
            w_one.append(wasserstein_1(b.nodes.numpy(), b.weights.numpy(), ev))
            w_plain.append(wasserstein_1(c.nodes.numpy(), c.weights.numpy(), ev))
        assert np.mean(w_rule) <= min(np.mean(w_one), np.mean(w_plain)), (
            name, D, M, P, m, np.mean(w_rule), np.mean(w_one), np.mean(w_plain))


def test_one_probe_split_has_no_stderr_but_a_valid_measure():
    ev = hessian_like_spectrum(600, seed=2)
    res = spectral_density(with_spectrum(ev, seed=3), num_matvecs=20, generator=0)
    assert res.num_probes == 1 and res.info.matvecs <= 20
    # converged outliers carry exactly 1/D: the row sums to one in expectation, the density to one
    assert float(res.weights.sum()) == pytest.approx(1.0, abs=0.05)
    assert float(np.trapezoid(res.density.numpy(), res.grid.numpy())) == pytest.approx(1.0, abs=1e-3)
    assert np.isnan(res.density_stderr.numpy()).all()


def test_num_matvecs_errors():
    op = with_spectrum(np.linspace(-1, 1, 30))
    with pytest.raises(ValueError, match="num_matvecs: expected either num_matvecs or num_probes/num_steps"):
        spectral_density(op, num_matvecs=100, num_probes=4)
    with pytest.raises(ValueError, match="num_matvecs: expected a positive int, got 0"):
        spectral_density(op, num_matvecs=0)
    with pytest.raises(ValueError, match="num_matvecs: expected at least 2 products"):
        spectral_density(op, num_matvecs=1)
