"""Diagnostics on problems whose answers are known in closed form."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from curvlens.diagnostics import (
    conditioning_from, curvature_noise, fit_variance_law, gradient_noise_scale, per_layer_breakdown, saddle_from,
    saddle_verdict, sharpness,
)
from curvlens.estimators import hutchinson_trace
from curvlens.estimators.density import spectral_density
from curvlens.linalg import bottom_eigenpairs, top_eigenpairs
from curvlens.operators import Block, DenseOperator, HessianOperator


def _rotated(eigs, seed=0):
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((len(eigs), len(eigs))))
    A = Q @ np.diag(eigs) @ Q.T
    return torch.from_numpy((A + A.T) / 2)


# ------------------------------------------------------------------ conditioning
def test_conditioning_psd_matches_exact():
    eigs = np.geomspace(0.01, 10.0, 20)
    op = DenseOperator(_rotated(eigs))
    top, bot = top_eigenpairs(op, 3, rtol=1e-8, generator=0), bottom_eigenpairs(op, 1, rtol=1e-8, generator=0)
    c = conditioning_from(top, bot, trace=float(eigs.sum()), dim=20)
    assert c.lambda_max_certified and c.lambda_min_certified
    assert c.condition_number == pytest.approx(1000.0, rel=1e-6)
    assert c.effective_names == ("l_max/l_k(k=3)", "l_max/(trace/D)")
    assert c.effective_values[0] == pytest.approx(10.0 / eigs[-3], rel=1e-6)
    assert c.effective_values[1] == pytest.approx(10.0 * 20 / eigs.sum(), rel=1e-6)
    assert c.effective_condition_number == c.effective_values[1]


def test_conditioning_indefinite_and_singular_have_no_condition_number():
    op = DenseOperator(_rotated(np.array([-1.0, 0.5, 1.0, 2.0, 4.0])))
    c = conditioning_from(top_eigenpairs(op, 1, generator=0), bottom_eigenpairs(op, 1, generator=0))
    assert c.condition_number is None and c.lambda_min == pytest.approx(-1.0, abs=1e-6)
    sing = DenseOperator(_rotated(np.array([0.0, 0.0, 1.0, 2.0])))
    c2 = conditioning_from(top_eigenpairs(sing, 1, generator=0), bottom_eigenpairs(sing, 1, generator=0))
    assert c2.condition_number is None


def test_conditioning_errors():
    with pytest.raises(TypeError, match="top: expected an EigenResult"):
        conditioning_from(3.0)
    op = DenseOperator(_rotated(np.array([1.0, 2.0])))
    with pytest.raises(ValueError, match="dim: expected the operator dimension"):
        conditioning_from(top_eigenpairs(op, 1, generator=0), trace=3.0)


# ------------------------------------------------------------------ sharpness
def test_sharpness_thresholds():
    s = sharpness(30.0, lr=0.1)
    assert (s.threshold, s.ratio, s.stable) == (20.0, 1.5, False)
    m = sharpness(30.0, lr=0.1, momentum=0.9)
    assert m.threshold == pytest.approx(38.0) and m.ratio == pytest.approx(30 / 38) and m.stable
    assert sharpness(1.0, 0.5).ratio == pytest.approx(0.5 * 1.0 / 2)


@pytest.mark.parametrize("kw, exc, msg", [
    (dict(lambda_max=1.0, lr=0.0), ValueError, "lr: expected a finite number > 0"),
    (dict(lambda_max=1.0, lr=0.1, momentum=1.0), ValueError, "momentum: expected a finite number >= 0 and < 1"),
    (dict(lambda_max="x", lr=0.1), TypeError, "lambda_max: expected a real number"),
])
def test_sharpness_errors(kw, exc, msg):
    with pytest.raises(exc, match=msg):
        sharpness(**kw)


# ------------------------------------------------------------------ saddle
def test_saddle_index_of_quadratic_with_known_negatives():
    eigs = np.concatenate([-np.linspace(0.5, 2.0, 5), np.linspace(0.1, 3.0, 15)])
    op = DenseOperator(_rotated(eigs, seed=3))
    dens = spectral_density(op, num_probes=12, num_steps=20, deflate=False, generator=1)
    bot = bottom_eigenpairs(op, 2, rtol=1e-8, generator=1)
    s = saddle_from(dens, bot)
    assert abs(s.fraction_negative - 0.25) <= 3 * s.fraction_negative_stderr + 1e-9
    exact_mass = np.abs(eigs[eigs < 0]).sum() / np.abs(eigs).sum()
    assert abs(s.negative_mass - exact_mass) <= 3 * s.negative_mass_stderr + 1e-9
    assert s.fraction_negative_stderr > 0  # plain SLQ: probes differ
    np.testing.assert_allclose(s.bottom_eigenvalues.numpy(), [-2.0, np.sort(eigs)[1]], atol=1e-6)
    assert bool(s.bottom_certified.all())
    assert s.verdict == saddle_verdict(s.negative_mass, s.fraction_negative)
    assert s.verdict in ("saddle_region", "strongly_indefinite")  # exact: f = 0.25, m = 0.19


def test_saddle_verdict_thresholds_and_fallback():
    assert saddle_verdict(0.05, 0.2) == "near_minimum"
    assert saddle_verdict(0.06, 0.1) == "saddle_region"
    assert saddle_verdict(0.25, 0.0) == "strongly_indefinite"
    assert saddle_verdict(0.1, 0.3) == "strongly_indefinite"
    assert saddle_verdict(None, lambda_min=-0.01, lambda_max=1.0) == "near_minimum"
    assert saddle_verdict(None, lambda_min=-0.5, lambda_max=1.0) == "strongly_indefinite"
    op = DenseOperator(_rotated(np.array([-0.3, 1.0, 2.0])))
    s = saddle_from(None, bottom_eigenpairs(op, 1, generator=0), lambda_max=2.0)
    assert s.fraction_negative is None and s.verdict == "saddle_region"
    with pytest.raises(ValueError, match="density, bottom: expected at least one"):
        saddle_from(None, None)


# ------------------------------------------------------------------ noise: diagonal-Gaussian model
def test_noise_law_exact_for_diagonal_gaussian_model():
    """Per-sample curvature diag(d_i), d_i Gaussian: tr(A_B) is a sample mean, var = a + b/B exactly."""
    N, D = 256, 3
    g = torch.Generator().manual_seed(0)
    d = 1.0 + 0.3 * torch.randn(N, D, generator=g, dtype=torch.float64)

    def make(idx):
        return DenseOperator(torch.diag(d[idx].mean(0)))

    t = d.sum(1)
    s2 = float(t.var(unbiased=False))
    a_exact, b_exact = -s2 / (N - 1), N * s2 / (N - 1)
    res = curvature_noise(make, N, full_values={"trace": float(t.mean())}, quantities=["trace"],
                          batch_sizes=[4, 16, 64], num_draws=300, target_rstderr=0.02, generator=1)
    var = res.stds[0] ** 2
    exact_var = torch.tensor([a_exact + b_exact / B for B in (4, 16, 64)], dtype=torch.float64)
    rel_se = math.sqrt(2 / 299) * 1.3  # relative standard error of a 300-draw variance (+30% for tails)
    assert torch.all((var / exact_var - 1).abs() < 4 * rel_se), (var, exact_var)
    assert res.fit_b[0] == pytest.approx(b_exact, rel=4 * rel_se)
    crit_exact = math.ceil(b_exact / ((0.02 * float(t.mean())) ** 2 - a_exact))
    assert res.critical("trace") == pytest.approx(crit_exact, rel=0.3)
    assert res.num_draws == 300 and res.info.seed == 1


def test_fit_variance_law_and_degenerate_fits():
    a, b = fit_variance_law([2, 4, 8, 16], [0.5 + 3 / B for B in (2, 4, 8, 16)])
    assert a == pytest.approx(0.5) and b == pytest.approx(3.0)
    assert fit_variance_law([8], [0.25]) == (0.0, 2.0)
    assert all(math.isnan(x) for x in fit_variance_law([2], [math.nan]))


# ------------------------------------------------------------------ noise + gradient noise: least squares
def _least_squares(N=48, d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(N, d, generator=g, dtype=torch.float64) * torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)
    y = torch.randn(N, 1, generator=g, dtype=torch.float64)
    model = nn.Linear(d, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.3, -0.2, 0.5]], dtype=torch.float64))
    return model, X, y


def test_noise_study_on_linear_least_squares_matches_data():
    """MSE loss: H_B = 2 X_B^T X_B / B; trace and directional curvature are sample means."""
    model, X, y = _least_squares()
    N = X.shape[0]
    H = 2 * X.T @ X / N
    evals, evecs = torch.linalg.eigh(H)
    u = evecs[:, -1]

    def make(idx):
        return HessianOperator(model, nn.MSELoss(), (X[idx], y[idx]))

    full = {"lambda_max": float(evals[-1]), "trace": float(H.trace()), "directional": float(evals[-1])}
    res = curvature_noise(make, N, full_values=full, direction=u, batch_sizes=[4, 12], num_draws=60,
                          eig_max_matvecs=12, generator=2)
    assert res.quantities == ("lambda_max", "trace", "directional")
    rel_se = math.sqrt(2 / 59) * 1.5
    for q, per_sample in (("trace", 2 * (X ** 2).sum(1)), ("directional", 2 * (X @ u) ** 2)):
        i = res.quantities.index(q)
        s2 = float(per_sample.var(unbiased=False))
        for j, B in enumerate((4, 12)):
            exact = s2 * (N - B) / ((N - 1) * B)
            assert abs(float(res.stds[i, j]) ** 2 / exact - 1) < 4 * rel_se, (q, B)
            assert float(res.means[i, j]) == pytest.approx(full[q], rel=4 * math.sqrt(exact / 60) / full[q] + 1e-9)
        assert float(res.rstderr[i, 0]) == pytest.approx(float(res.stds[i, 0]) / full[q])
    assert all("exceeds the 48 samples (extrapolated" in n or "fit: " in n for n in res.notes), res.notes
    for q, status in zip(res.quantities, res.fit_status):  # inf only with the status that says why
        assert math.isinf(res.critical(q)) == (status == "floor_above_target"), (q, status)
        assert (status == "ok") == (not any(n.startswith(f"'{q}' fit: ") for n in res.notes))


def test_gradient_noise_scale_exact_for_least_squares():
    model, X, y = _least_squares()
    w = model.weight.detach().reshape(-1)
    gi = 2 * (X @ w - y[:, 0])[:, None] * X  # per-sample gradients of (w.x - y)^2
    G = gi.mean(0)
    tr = float(((gi - G) ** 2).sum(1).mean())
    res = gradient_noise_scale(model, nn.MSELoss(), (X, y), chunk_size=7)
    assert res.method == "per_sample" and res.num_samples == 48
    assert res.trace_sigma == pytest.approx(tr, rel=1e-10)
    assert res.grad_norm_sq == pytest.approx(float(G @ G), rel=1e-10)
    assert res.b_simple == pytest.approx(tr / float(G @ G), rel=1e-10)
    two = gradient_noise_scale(model, nn.MSELoss(), [(X[:20], y[:20]), (X[20:], y[20:])], method="two_batch",
                               num_small=1500, generator=0)
    assert two.method == "two_batch" and two.grad_norm_sq == pytest.approx(float(G @ G), rel=1e-10)
    assert two.trace_sigma == pytest.approx(tr, rel=0.2)
    with pytest.raises(ValueError, match="method: expected 'auto', 'per_sample' or 'two_batch'"):
        gradient_noise_scale(model, nn.MSELoss(), (X, y), method="magic")


# ------------------------------------------------------------------ per layer
def test_per_layer_matches_dense_blocks():
    A = _rotated(np.array([0.5, 1.0, 2.0, 3.0, 4.0, 8.0]), seed=5)
    blocks = [Block("a", 0, 4), Block("b", 4, 6)]
    op = DenseOperator(A, blocks=blocks)
    tr = hutchinson_trace(op, 64, per_block=True, generator=0)
    top = top_eigenpairs(op, 1, rtol=1e-8, generator=0)
    res = per_layer_breakdown(op, trace=tr, top=top, rtol=1e-8, max_matvecs=60, generator=0)
    for i, b in enumerate(blocks):
        sub = A[b.slice, b.slice]
        assert float(res.lambda_max[i]) == pytest.approx(float(torch.linalg.eigvalsh(sub)[-1]), rel=1e-6)
        assert abs(float(res.traces[i]) - float(sub.trace())) <= 4 * float(res.trace_stderr[i]) + 1e-9
    assert float(res.trace_share.sum()) == pytest.approx(1.0)
    u = torch.linalg.eigh(A)[1][:, -1]
    assert float(res.lambda_max_share[1]) == pytest.approx(float((u[4:] ** 2).sum()), rel=1e-6)
    assert res.sizes.tolist() == [4, 2] and res.block_names == ("a", "b")
    with pytest.raises(ValueError, match="trace: expected a TraceResult of this operator computed with per_block"):
        per_layer_breakdown(op, trace=hutchinson_trace(op, 4, generator=0))
