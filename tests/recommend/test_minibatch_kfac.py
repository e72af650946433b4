"""K-FAC at a mini-batch: its measured progress against the gradient direction, the noise-floor
edge of its lr, the saddle and curvature-noise rules, and the trials' per-step divergence check."""

from __future__ import annotations

import dataclasses
import importlib
import math

import pytest
import torch

from curvlens.recommend import RULES, Measurements, RecommendationContext, recommend
from curvlens.recommend.hyperparams import kfac_lr, polyak_lower_edge, suggest
from curvlens.recommend.kfac_step import kfac_model_step
from curvlens.recommend.rules import run_rule
from curvlens.recommend.trials import DIVERGED_FACTOR, run_trials

importlib.import_module("curvlens.optim.kfac")  # registers K-FAC with the recommender's builder
BY_NAME = {r.name: r for r in RULES}


def fire(name: str, summary: dict, **ctx):
    return run_rule(BY_NAME[name], Measurements(summary), RecommendationContext(**ctx))


def weights(out) -> dict[str, float]:
    w: dict[str, float] = {}
    for e in out.evidence:
        w[e.optimizer] = w.get(e.optimizer, 0.0) + e.weight
    return w


def _linear(seed: int = 0, n: int = 96):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 4, generator=g, dtype=torch.float64) * torch.tensor([3.0, 1.0, 0.3, 0.1], dtype=torch.float64)
    Y = torch.randn(n, 3, generator=g, dtype=torch.float64)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = torch.nn.Linear(4, 3).double()
    return model, torch.nn.MSELoss(), (X, Y)


def test_progress_ratio_is_newton_over_steepest_descent_on_an_exact_ggn():
    # one linear MSE layer, type-2 K-FAC undamped: P = G^-1, so K-FAC's model decrease is g^T G^-1 g / 2 and the
    # gradient direction's |g|^4 / (2 g^T G g); their ratio from the dense float64 GGN
    model, loss_fn, data = _linear()
    m = kfac_model_step(model, loss_fn, data, damping=1e-14, fisher="type2")
    X, Y = data
    A = torch.cat([X, torch.ones(len(X), 1, dtype=X.dtype)], 1)  # [x, 1]: weight rows then bias
    k = Y.shape[1]
    # L = mean over samples and outputs of (W a - y)^2: G = 2/(n k) (I_k kron A^T A) in (W | b) row-major order
    G_w = 2.0 / (len(X) * k) * (A.T @ A)
    G = torch.kron(torch.eye(k, dtype=X.dtype), G_w)
    model.zero_grad()
    loss_fn(model(X), Y).backward()
    W, b = model.weight.grad, model.bias.grad
    g = torch.cat([W, b[:, None]], 1).reshape(-1)
    expected = float(g @ torch.linalg.solve(G, g)) * float(g @ G @ g) / float(g @ g) ** 2
    model.zero_grad(set_to_none=True)
    assert m["kfac_progress_ratio"] == pytest.approx(expected, rel=1e-6)
    assert m["kfac_progress_ratio"] > 1  # Cauchy-Schwarz: Newton never makes less model progress


def test_progress_ratio_at_a_mini_batch_is_seeded():
    model, loss_fn, data = _linear(2)
    a = kfac_model_step(model, loss_fn, data, damping=1e-3, batch_size=16, generator=3)
    b = kfac_model_step(model, loss_fn, data, damping=1e-3, batch_size=16, generator=3)
    assert a["kfac_progress_ratio"] == b["kfac_progress_ratio"] > 0


def test_kfac_lr_at_a_mini_batch_is_the_mean_of_the_polyak_edge_and_the_model_step():
    beta = 0.9
    edge = polyak_lower_edge(beta)
    assert edge == pytest.approx((1 - math.sqrt(0.9)) ** 2)
    # the edge is where the heavy-ball characteristic roots of lr * lam = edge are a double root sqrt(beta)
    roots = torch.linalg.eigvals(torch.tensor([[1 + beta - edge, -beta], [1.0, 0.0]], dtype=torch.float64)).abs()
    assert roots.tolist() == pytest.approx([math.sqrt(beta)] * 2, rel=1e-6)
    m = Measurements({"kfac_trusted_step": 0.3, "kfac_lambda_max": 1.0})
    full, why_full = kfac_lr(m, beta)
    mini, why = kfac_lr(m, beta, noisy=True)
    # the geometric mean: its worst-case factor from an optimum anywhere in [edge, model step] is least
    assert full == pytest.approx(0.03) and mini == pytest.approx(math.sqrt(edge * 0.03))
    assert max(mini / edge, 0.03 / mini) == pytest.approx(math.sqrt(0.03 / edge))
    assert "Polyak" in why and "noise" in why and "geometric mean" in why
    small = Measurements({"kfac_trusted_step": 0.01, "kfac_lambda_max": 1.0})  # a model step below the edge stays
    assert kfac_lr(small, beta, noisy=True)[0] == pytest.approx(0.001)
    summary = {"lambda_max": 10.0, "kfac_trusted_step": 0.3, "kfac_lambda_max": 1.0, "num_samples": 1000}
    hp = suggest("kfac", Measurements(summary), RecommendationContext(batch_size=32))[0]
    assert hp["lr"] == pytest.approx(math.sqrt(edge * 0.03)) and hp["lr_model_step"] == pytest.approx(0.03)
    assert suggest("kfac", Measurements(summary), RecommendationContext(batch_size=1000))[0]["lr"] == \
        pytest.approx(0.03)


@pytest.mark.parametrize("ratio", [20.0, 0.5])
def test_progress_rule_credits_progress_like_the_step_cost_charges_cost(ratio):
    out = fire("kfac_progress", {"kfac_progress_ratio": ratio, "num_samples": 1000}, batch_size=32)
    assert weights(out) == {"kfac": pytest.approx(0.5 * math.log10(ratio))}
    assert "at batch 32" in out.evidence[0].reason and "noise included" in out.evidence[0].reason
    assert weights(fire("kfac_progress", {"kfac_progress_ratio": ratio, "num_samples": 1000}, batch_size=1000)) == {}
    assert weights(fire("kfac_progress", {"num_samples": 1000}, batch_size=32)) == {}


def test_saddle_escape_support_goes_to_kfac_only_at_a_mini_batch():
    s = {"negative_mass": 0.5, "num_samples": 1000}
    mini = weights(fire("negative_curvature", s, batch_size=32))
    assert mini["kfac"] == pytest.approx(mini["sgd_momentum"]) and mini["kfac"] > 0
    assert "kfac" not in weights(fire("negative_curvature", s, batch_size=1000))


def test_the_error_measured_at_the_training_batch_decides_over_the_critical_batch_estimate():
    s = {"critical_batch_lambda_max": 77.0, "noise_batch_sizes": [32, 64, 128], "num_samples": 896,
         "noise_rstderr_lambda_max": [0.003, 0.076, 0.14]}
    out = fire("curvature_noise", s, batch_size=64)  # measured 7.6% <= 10% at B=64 itself
    assert weights(out)["kfac"] > 0 and "measured at B=64 itself: 7.6% <= 10%" in out.evidence[0].reason
    worse = fire("curvature_noise", {**s, "critical_batch_lambda_max": 20.0,
                                     "noise_rstderr_lambda_max": [0.003, 0.2, 0.14]}, batch_size=64)
    assert weights(worse)["kfac"] < 0 and "20.0% > 10%" in worse.evidence[0].reason
    # not measured at the batch: the estimate decides as before
    assert weights(fire("curvature_noise", s, batch_size=70))["kfac"] < 0


def test_full_batch_trial_runs_check_every_step_for_divergence():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(64, 3, generator=g)
    y = X @ torch.randn(3, 1, generator=g)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = torch.nn.Linear(3, 1)
    rec = recommend({"lambda_max": 2.0, "num_params": 4}, RecommendationContext(batch_size=64))
    c = next(c for c in rec.candidates if c.optimizer == "sgd_momentum")
    c = dataclasses.replace(c, hyperparameters={**c.hyperparameters, "lr": 50.0})  # overshoots at once
    t = run_trials([c], model, torch.nn.MSELoss(), (X, y), seconds=0.5, seed=0, steps={"sgd_momentum": 30})[0]
    assert t.diverged[:3].all()
    for i in range(3):  # stopped at the second step (the loss after the first one), not at the next recorded point
        sel = t.run_index == i
        assert t.steps_done[sel][-1] <= 2 and t.losses[sel][-1] > DIVERGED_FACTOR * t.initial_loss
