"""Noise study: confidence intervals, the constrained variance law and its statuses."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from curvlens.diagnostics import curvature_noise
from curvlens.diagnostics._noise_fit import FIT_STATUSES, fit_noise_law, variance_interval
from curvlens.operators import DenseOperator, HessianOperator


def test_gaussian_regression_trace_critical_batch_matches_closed_form():
    """x ~ N(0, I_d), MSE on a linear model: tr(H_B) = (2/B) sum ||x_i||^2, whose relative std
    is sqrt(2 / (d B)); the critical batch for a target t is 2 / (d t^2)."""
    g = torch.Generator().manual_seed(0)
    N, d, target = 4096, 8, 0.1
    X = torch.randn(N, d, generator=g, dtype=torch.float64)
    y = torch.randn(N, 1, generator=g, dtype=torch.float64)
    model = nn.Linear(d, 1, bias=False).double()

    def make(idx):
        return HessianOperator(model, nn.MSELoss(), (X[idx], y[idx]))

    ladder = [4, 8, 16, 32, 64]
    res = curvature_noise(make, N, full_values={"trace": 2.0 * d}, quantities=["trace"], batch_sizes=ladder,
                          num_draws=100, target_rstderr=target, generator=5)
    closed = 2 / (d * target**2)
    assert res.fit_status == ("ok",) or res.fit_status == ("finite_population",)
    assert abs(res.critical("trace") / closed - 1) < 0.25, (res.critical("trace"), closed)
    lo, hi = res.critical_interval("trace")
    assert lo <= res.critical("trace") <= hi and lo <= closed <= hi, (lo, hi, closed)
    assert hi / lo < 2.0  # 5 rungs x 100 draws pin the critical batch to well within a factor 2
    exact = np.sqrt(2 / (d * np.array(ladder)))
    inside = (res.rstderr_low[0].numpy() <= exact) & (exact <= res.rstderr_high[0].numpy())
    assert inside.sum() >= 4, (res.rstderr_low, exact, res.rstderr_high)
    assert torch.all(res.rstderr_low <= res.rstderr) and torch.all(res.rstderr <= res.rstderr_high)
    assert res.confidence == 0.95


def test_bootstrap_interval_covers_the_true_critical_batch():
    rng = np.random.default_rng(0)
    B, N, n, b_true = np.array([4.0, 8, 16, 32, 64]), 10_000, 20, 3.0
    truth = b_true * (1 / B - 1 / N)
    crit_true = math.ceil(b_true / (0.05**2 + b_true / N))
    hits, trials = 0, 200
    for s in range(trials):
        v = truth * rng.chisquare(n - 1, size=B.size) / (n - 1)
        f = fit_noise_law(B, v, num_samples=N, num_draws=n, full_value=1.0, target=0.05, replicates=500, seed=s)
        hits += f.critical_low <= crit_true <= f.critical_high
    assert 0.85 <= hits / trials <= 0.995, hits


def test_fit_statuses_say_why():
    B = [4, 8, 16, 32]
    # variances falling faster than 1/B: the free intercept is below -b/N -> finite-population law
    f = fit_noise_law(B, [1.0, 0.3, 0.08, 0.0], num_samples=40, num_draws=10, full_value=1.0, target=0.1)
    assert f.status == "finite_population" and f.a == pytest.approx(-f.b / 40) and f.b > 0
    assert all(f.a + f.b / b >= 0 for b in range(1, 41)) and math.isfinite(f.critical) and f.critical <= 40
    # a spread that grows with B: no 1/B law; a constant variance above the target gives inf with its reason
    f = fit_noise_law(B, [0.5, 0.6, 0.7, 0.8], num_samples=100, num_draws=10, full_value=1.0, target=0.1)
    assert f.status == "floor_above_target" and math.isinf(f.critical) and "floor" in f.reason
    f = fit_noise_law(B, [0.001, 0.0011, 0.0012, 0.0013], num_samples=100, num_draws=10, full_value=1.0, target=0.1)
    assert f.status == "no_decrease" and f.b == 0.0 and f.critical == 1.0
    # a floor: a + b/B with a > target^2
    f = fit_noise_law(B, [0.05 + 1 / b for b in B], num_samples=1000, num_draws=10, full_value=1.0, target=0.2)
    assert f.status == "floor_above_target" and f.a == pytest.approx(0.05) and math.isinf(f.critical)
    assert math.isinf(f.critical_high)
    f = fit_noise_law(B, [0.0] * 4, num_samples=100, num_draws=10, full_value=2.0, target=0.1)
    assert (f.status, f.critical, f.critical_low, f.critical_high) == ("constant", 1.0, 1.0, 1.0)
    f = fit_noise_law([8], [0.25], num_samples=16, num_draws=10, full_value=1.0, target=0.1)
    assert f.status == "single_rung" and f.b == pytest.approx(4.0) and f.a == pytest.approx(-0.25)
    f = fit_noise_law(B, [math.nan] * 4, num_samples=100, num_draws=10, full_value=1.0, target=0.1)
    assert f.status == "not_measured" and math.isnan(f.critical)
    assert set(FIT_STATUSES) >= {"ok", "finite_population", "floor_above_target", "not_measured"}


def test_study_reports_status_and_interval_of_data_free_curvature():
    make = lambda idx: DenseOperator(torch.diag(torch.tensor([3.0, 1.0], dtype=torch.float64)))  # noqa: E731
    res = curvature_noise(make, 32, full_values={"trace": 4.0}, quantities=["trace"], num_draws=3, generator=0)
    assert res.fit_status == ("constant",) and res.critical("trace") == 1.0
    assert res.critical_interval("trace") == (1.0, 1.0)
    assert any("does not depend on the data" in n for n in res.notes)
    one = curvature_noise(make, 32, full_values={"trace": 4.0}, quantities=["trace"], num_draws=1, generator=0)
    assert one.fit_status == ("not_measured",) and math.isnan(one.critical("trace"))
    assert torch.isnan(one.rstderr_low).all()


def test_variance_interval_and_confidence_errors():
    lo, hi = variance_interval(np.array([2.0]), 31, 0.9)
    assert lo[0] == pytest.approx(2.0 * 30 / 43.772972, rel=1e-6) and hi[0] == pytest.approx(2.0 * 30 / 18.492661, rel=1e-6)
    make = lambda idx: DenseOperator(torch.eye(2, dtype=torch.float64))  # noqa: E731
    with pytest.raises(ValueError, match="confidence"):
        curvature_noise(make, 8, full_values={"trace": 2.0}, quantities=["trace"], confidence=1.0)
