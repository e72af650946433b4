"""Interleaved step timing, the step-cost resolution, L-BFGS's complete line search and first trial
step, and the bound behind SGD's mini-batch noise factor."""

import importlib
import math

import pytest
import torch

from curvlens.recommend import RecommendationContext, recommend
from curvlens.recommend import thresholds as T
from curvlens.recommend import timing
from curvlens.recommend.build import constructor_kwargs
from curvlens.recommend.evidence import Measurements, Outcome
from curvlens.recommend.hyperparams import lbfgs_lr, noise_lr_factor
from curvlens.recommend.rules_practical import rule_step_cost


def _least_squares():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(64, 6, generator=g)
    y = X @ torch.randn(6, 1, generator=g)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = torch.nn.Linear(6, 1)
    return model, torch.nn.MSELoss(), (X, y)


def test_interleaved_ratios_cancel_a_machine_that_slows_down_between_rounds(monkeypatch):
    trials = importlib.import_module("curvlens.recommend.trials")  # curvlens.recommend is also a function

    base = {"sgd_momentum": 1e-3, "adamw": 2e-3, "kfac": 5e-3}
    speed, calls = [0.5], []

    def fake(optimizer, hp, model, loss_fn, data, **kw):
        if optimizer == "sgd_momentum":
            speed[0] *= 2.0  # every round runs on a machine twice as slow as the last
        calls.append(optimizer)
        return None if optimizer == "kfac" else base[optimizer] * speed[0]

    monkeypatch.setattr(trials, "step_seconds", fake)
    specs = {"adamw": {}, "sgd_momentum": {}, "kfac": {}}
    out = timing.interleaved_step_seconds(specs, None, None, None, rounds=3)
    assert calls[0] == "sgd_momentum" and calls.count("sgd_momentum") == 3
    assert out["adamw"] / out["sgd_momentum"] == pytest.approx(2.0)  # times of 1, 2, 4: ratio exact
    assert out["sgd_momentum"] == pytest.approx(2e-3)  # the median reference time
    assert "kfac" not in out and calls.count("kfac") == 1  # failed once: left out, not retried
    monkeypatch.setattr(timing, "ROUND_SECONDS", 0.0)
    calls.clear()
    timing.interleaved_step_seconds(specs, None, None, None, rounds=3)
    assert calls.count("adamw") == 1  # its CPU allowance was spent after one round


def test_interleaved_timing_rejects_bad_arguments():
    with pytest.raises(ValueError, match="reference: expected one of the timed candidates"):
        timing.interleaved_step_seconds({"adamw": {}}, None, None, None)
    with pytest.raises(ValueError, match="rounds: expected a positive int, got 0"):
        timing.interleaved_step_seconds({"sgd_momentum": {}}, None, None, None, rounds=0)


def test_interleaved_timing_on_a_real_model_leaves_it_alone():
    model, loss_fn, data = _least_squares()
    before = [p.detach().clone() for p in model.parameters()]
    out = timing.interleaved_step_seconds({"sgd_momentum": {"lr": 0.1, "momentum": 0.9}, "adamw": {"lr": 1e-3}},
                                          model, loss_fn, data, rounds=2)
    assert set(out) == {"sgd_momentum", "adamw"} and all(v > 0 for v in out.values())
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_step_cost_ratios_within_the_timing_resolution_are_a_note():
    m = Measurements({"num_samples": 100, "step_seconds_sgd_momentum": 0.002, "step_seconds_adamw": 0.0024,
                      "step_seconds_kfac": 0.003})
    out = Outcome()
    rule_step_cost(m, RecommendationContext(batch_size=100), out)
    by = {e.optimizer: e for e in out.evidence if e.optimizer in ("adamw", "kfac")}
    assert by["adamw"].weight == 0.0 and "within the timing resolution (1.3x)" in by["adamw"].reason
    assert by["kfac"].weight == pytest.approx(-T.STEP_COST_PENALTY * math.log10(1.5))


def test_lbfgs_gets_a_complete_line_search_in_timed_steps():
    from curvlens.recommend.trials import step_seconds

    model, loss_fn, data = _least_squares()
    info: dict = {}
    hp = {"lr": 1e-3, "history_size": 10, "line_search_fn": "strong_wolfe", "max_iter": 20}
    assert step_seconds("lbfgs", hp, model, loss_fn, data, repeats=1, out=info) > 0
    # with torch's default max_eval (1 at max_iter=1) the accepted step could only be lr or 0; a complete
    # strong-Wolfe search extends a first trial step that is far too short
    assert len(info["accepted_steps"]) == 3 and max(info["accepted_steps"]) > 10.0
    assert constructor_kwargs("lbfgs", {"lr": 1.0, "max_iter": 20, "max_eval": 45})["max_eval"] == 45


def test_lbfgs_first_trial_step_prior_and_measured_rule():
    lr, why = lbfgs_lr(Measurements({}))
    assert lr == 1.0 and "Nocedal & Wright" in why and "not measured" in why
    lr, why = lbfgs_lr(Measurements({"lbfgs_accepted_step": 1.0, "lbfgs_first_step_lr": 1.0,
                                     "lbfgs_first_step_kept": 0.8}))
    assert lr == 1.0 and "kept the first trial step in 80%" in why and "so it stays" in why
    lr, why = lbfgs_lr(Measurements({"lbfgs_accepted_step": 0.3, "lbfgs_first_step_lr": 1.0,
                                     "lbfgs_first_step_kept": 0.0}))
    assert lr == pytest.approx(0.3) and "moves to where the search ends" in why


def test_recommend_with_the_model_measures_lbfgs_first_step():
    model, loss_fn, data = _least_squares()
    rec = recommend({"num_params": 7, "num_samples": 64, "lambda_max": 4.0, "lambda_min": 0.5},
                    RecommendationContext(batch_size=64), model=model, loss_fn=loss_fn, data=data)
    lb = next(c for c in rec.candidates if c.optimizer == "lbfgs")
    assert lb.hyperparameters["max_eval"] == lb.hyperparameters["max_iter"] + 25
    assert any("measured: in timed L-BFGS steps from lr 1" in r for r in lb.reasons)
    assert lb.hyperparameters["lr"] > 0


def test_sgd_noise_factor_minimises_the_expected_change_bounded_with_lambda_max():
    # isotropic quadratic H = lam I: the bound is exact, E[dL](eps) = -eps g2 + eps^2/2 lam (g2 + tr(Sigma)/B)
    lam, g2, tr_sigma, b = 3.0, 2.0, 400.0, 32
    f, why = noise_lr_factor(Measurements({"gradient_noise_scale": tr_sigma / g2, "num_samples": 1000}),
                             RecommendationContext(batch_size=b))
    eps = torch.linspace(1e-4, 1.0 / lam, 200_001, dtype=torch.float64)
    change = -eps * g2 + 0.5 * eps**2 * lam * (g2 + tr_sigma / b)
    assert float(eps[int(change.argmin())]) == pytest.approx(f / lam, rel=1e-3)
    assert "McCandlish" in why
    full, none = noise_lr_factor(Measurements({"gradient_noise_scale": 200.0, "num_samples": 64}),
                                 RecommendationContext(batch_size=64))
    assert full == 1.0 and none is None
