"""spectral_density(num_matvecs=...): the budget split and its accuracy against the exact spectrum."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from curvlens.estimators._density_budget import split_budget
from curvlens.estimators.density import spectral_density
from curvlens.estimators.wasserstein import wasserstein_1
from tests.linalg._spectra import hessian_like_spectrum, with_spectrum


@pytest.mark.parametrize("M, D, expected", [
    (800, 10**6, (4, 200)), (300, 10**6, (3, 100)), (5000, 10**6, (10, 500)),
    (100, 10**6, (3, 33)), (2, 10**6, (2, 1)), (800, 50, (16, 50)),
])
def test_split_budget(M, D, expected):
    P, m = split_budget(M, D)
    assert (P, m) == expected and P * m <= M


def test_num_matvecs_spends_the_budget_and_is_reproducible():
    op = with_spectrum(hessian_like_spectrum(300), seed=1)
    res = spectral_density(op, num_matvecs=240, generator=3)
    assert res.info.matvecs <= 240 and "3 probe(s) x 80 step(s)" in res.info.status
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


def test_num_matvecs_errors():
    op = with_spectrum(np.linspace(-1, 1, 30))
    with pytest.raises(ValueError, match="num_matvecs: expected either num_matvecs or num_probes/num_steps"):
        spectral_density(op, num_matvecs=100, num_probes=4)
    with pytest.raises(ValueError, match="num_matvecs: expected a positive int, got 0"):
        spectral_density(op, num_matvecs=0)
    with pytest.raises(ValueError, match="num_matvecs: expected at least 2 products"):
        spectral_density(op, num_matvecs=1)
