"""Stated bounds instead of warnings, and the trial bracket of line-search methods."""

from __future__ import annotations

import math

import pytest
import torch

from curvlens.recommend import RULES, Measurements, RecommendationContext, recommend
from curvlens.recommend.rules import run_rule
from curvlens.recommend.trials import TRIAL_BRACKET, run_trials

BY_NAME = {r.name: r for r in RULES}


def fire(name: str, summary: dict, **ctx):
    return run_rule(BY_NAME[name], Measurements(summary), RecommendationContext(**ctx))


UNRESOLVED = {"lambda_max": 2.0, "lambda_max_certified": True, "lambda_min": 1e-6, "lambda_min_certified": False,
              "lambda_min_status": "unresolved", "lambda_min_residual": 1e-5}


def test_an_unresolved_positive_lambda_min_is_a_stated_bound_not_a_warning():
    ill = fire("conditioning", {**UNRESOLVED, "condition_number_lower_bound": 2e6})
    assert ill.warnings == [] and ill.missing == []
    assert "condition number >= 2e+06 > 1e+04 (ill-conditioned) (a lower bound" in ill.evidence[0].reason
    # a bound that does not decide is a missing measurement (what to run), not a warning
    low = fire("conditioning", {**UNRESOLVED, "condition_number_lower_bound": 50.0})
    assert low.warnings == [] and low.evidence == []
    assert len(low.missing) == 1 and "only kappa >= 50 is known" in low.missing[0]
    assert fire("certification", UNRESOLVED).warnings == []  # the bound holds without a certificate


def test_uncertified_values_that_advice_is_derived_from_still_warn():
    neg = fire("certification", {"lambda_max": 2.0, "lambda_max_certified": True, "lambda_min": -0.5,
                                 "lambda_min_certified": False})
    assert len(neg.warnings) == 1 and "lambda_min = -0.5 is not certified" in neg.warnings[0]
    assert "may be more negative" in neg.warnings[0]
    top = fire("certification", {"lambda_max": 2.0, "lambda_max_certified": False})
    assert len(top.warnings) == 1 and "lambda_max = 2 is not certified" in top.warnings[0]


def test_recommendation_with_an_unresolved_bottom_end_has_no_warning_about_it():
    rec = recommend({**UNRESOLVED, "condition_number_lower_bound": 2e6, "num_params": 50, "num_samples": 100,
                     "negative_mass": 0.0}, RecommendationContext(batch_size=100))
    assert not any("lambda_min" in w for w in rec.warnings)
    assert any("(a lower bound of the condition number" in r for r in rec.top.reasons)


def _problem():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(64, 5, generator=g)
    y = (X[:, 0] > 0).long()
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    return model, torch.nn.CrossEntropyLoss(), (X, y)


def test_lbfgs_first_step_is_bracketed_in_trials_and_the_best_adopted():
    model, loss_fn, data = _problem()
    summary = {"num_params": 58, "num_samples": 64, "lambda_max": 4.0, "lambda_min": 0.01, "negative_mass": 0.0}
    rec = recommend(summary, RecommendationContext(batch_size=64))
    lb = next(c for c in rec.candidates if c.optimizer == "lbfgs")
    (t,) = run_trials([lb], model, loss_fn, data, seconds=1.0, seed=0, steps={"lbfgs": 4})
    bracket = [lb.hyperparameters["lr"] * f for f in TRIAL_BRACKET]
    assert list(t.lrs[:3]) == bracket  # then one step beyond the edge when the best run is there
    assert len(t.lrs) == 3 or t.lrs[3] in (bracket[0] / 3, bracket[-1] * 3)
    finals = t.final_losses()
    assert len(set(finals)) == len(t.lrs)  # the first trial step changes the run: each member is its own run
    # the best run is the first to reach the common comparison level, replayed on the stored curves
    from curvlens.recommend.trial_rank import comparison_level, rank_key

    level = comparison_level(t.initial_loss, min(f for f in finals if math.isfinite(f)))
    keys = [(rank_key(t.seconds[t.run_index == i].tolist(), t.losses[t.run_index == i].tolist(), level,
                      bool(t.diverged[i])),
             float(t.lrs[i])) for i in range(len(t.lrs))]
    assert t.best_lr == t.lrs[min(range(len(t.lrs)), key=keys.__getitem__)]


def weights(out) -> dict[str, float]:
    w: dict[str, float] = {}
    for e in out.evidence:
        w[e.optimizer] = w.get(e.optimizer, 0.0) + e.weight
    return w


def test_effective_condition_number_never_shows_a_well_conditioned_problem():
    # lambda_max / (trace / D) <= kappa for a PSD matrix; undefined meaning for an indefinite one
    out = fire("conditioning", {"lambda_max": 5.0, "lambda_min": -3.0, "effective_condition_number": 2.7})
    assert out.evidence == []
    ill = fire("conditioning", {"lambda_max": 5.0, "lambda_min": -3.0, "effective_condition_number": 2e4})
    assert "effective condition number 2e+04 > 1e+04 (ill-conditioned)" in ill.evidence[0].reason


def test_full_batch_curvature_is_the_noise_free_limit_and_curvature_limited():
    full = fire("curvature_noise", {"num_samples": 512, "critical_batch_lambda_max": 35.0}, batch_size=512)
    assert weights(full)["kfac"] == weights(full)["newton_cg"] == pytest.approx(0.5)
    assert "carry no mini-batch sampling noise" in full.evidence[0].reason
    big = fire("gradient_noise", {"num_samples": 512, "gradient_noise_scale": 2.0}, batch_size=512)
    assert weights(big)["kfac"] == pytest.approx(0.6) and weights(big)["lbfgs"] == pytest.approx(1.2)
    assert any("256 x the gradient noise scale 2" in e.reason for e in big.evidence)
    # a full batch below the noise scale is not "noise-limited": its gradient is exact
    small = fire("gradient_noise", {"num_samples": 512, "gradient_noise_scale": 1e5}, batch_size=512)
    assert "sgd_momentum" not in weights(small) and "kfac" not in weights(small)
    assert not any("noise-limited" in e.reason for e in small.evidence)


def test_step_cost_reads_measured_step_times_relative_to_an_sgd_step():
    s = {"gradient_seconds": 0.01, "num_samples": 100, "step_seconds_sgd_momentum": 0.002,
         "step_seconds_newton_cg": 0.2, "step_seconds_kfac": 0.002}
    out = fire("step_cost", s, batch_size=100)
    w = weights(out)
    assert w["newton_cg"] == pytest.approx(-0.5 * 2)  # 100x an SGD step: two decades
    assert "kfac" not in w and "sgd_momentum" not in w  # not slower than an SGD step
    ncg = next(e.reason for e in out.evidence if e.optimizer == "newton_cg")
    assert "measured: 0.2 s per step against 0.002 s for an SGD step" in ncg
    modelled = fire("step_cost", {"hvp_cost": 2.0, "lambda_max": 1.0, "lambda_min": 0.5}, batch_size=100)
    assert weights(modelled)["newton_cg"] < 0
    assert any("modelled from the curvature-product cost" in e.reason for e in modelled.evidence)


def test_capability_without_advantage_is_a_note_not_support():
    out = fire("negative_curvature", {"negative_mass": 0.3, "num_samples": 64}, batch_size=64)
    notes = [e for e in out.evidence if e.weight == 0.0]
    assert {e.optimizer for e in notes} == {"lbfgs", "newton_cg"}
    rec = recommend({"num_params": 58, "num_samples": 64, "lambda_max": 4.0, "lambda_min": -0.5,
                     "negative_mass": 0.3}, RecommendationContext(batch_size=64))
    ncg = next(c for c in rec.candidates if c.optimizer == "newton_cg")
    assert any(r.startswith("note: ") and "copes with indefinite curvature" in r for r in ncg.reasons)


def test_adam_lr_with_negative_curvature_along_sign_g_is_measured_not_a_prior():
    from curvlens.recommend.hyperparams import adam_lr

    lr, why = adam_lr(Measurements({"gradient_l1": 100.0, "sign_curvature": -500.0}),
                      RecommendationContext(phase="fine-tuning"))
    assert lr == pytest.approx(0.5 * 100.0 / 500.0) and "|s^T H s|" in why and "prior" not in why


def test_step_seconds_is_measured_and_leaves_the_model_alone():
    from curvlens.recommend.trials import step_seconds

    model, loss_fn, data = _problem()
    before = [p.detach().clone() for p in model.parameters()]
    rng = torch.random.get_rng_state()
    sec = step_seconds("adamw", {"lr": 1e-3}, model, loss_fn, data, steps=2)
    assert sec is not None and sec > 0
    assert torch.equal(torch.random.get_rng_state(), rng)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert step_seconds("adamw", {"lr": -1.0}, model, loss_fn, data) is None  # cannot be built


def test_a_minibatch_below_the_noise_scale_favours_the_cheaper_first_order_step():
    # 64 / 172 = 0.37: between the noise-dominated (0.1) and curvature-limited (1.0) fractions
    mid = fire("gradient_noise", {"num_samples": 512, "gradient_noise_scale": 172.0,
                                  "step_seconds_sgd_momentum": 0.003, "step_seconds_adamw": 0.0047}, batch_size=64)
    w = weights(mid)
    assert w["sgd_momentum"] == pytest.approx(0.3) and "adamw" not in w and "kfac" not in w
    why = next(e.reason for e in mid.evidence if e.optimizer == "sgd_momentum")
    assert "batch 64 is 0.3721 of the gradient noise scale 172 (0.1 to 1.0)" in why
    assert "measured: SGD 0.003 s, Adam 0.0047 s per step" in why
    # without timings the reason says where the cheaper step comes from, not a measurement
    untimed = fire("gradient_noise", {"num_samples": 512, "gradient_noise_scale": 172.0}, batch_size=64)
    why = next(e.reason for e in untimed.evidence if e.optimizer == "sgd_momentum")
    assert "measured" not in why and "second-moment update" in why
    # the same batch at full batch, or far below / above the noise scale, does not take this branch
    full = fire("gradient_noise", {"num_samples": 64, "gradient_noise_scale": 172.0}, batch_size=64)
    far = fire("gradient_noise", {"num_samples": 512, "gradient_noise_scale": 1000.0}, batch_size=64)
    above = fire("gradient_noise", {"num_samples": 512, "gradient_noise_scale": 20.0}, batch_size=64)
    for out in (full, far, above):
        assert not any("below the critical batch first-order" in e.reason for e in out.evidence)


def test_sgd_lr_is_scaled_by_the_measured_gradient_noise_at_a_minibatch_only():
    from curvlens.recommend.hyperparams import suggest

    base = {"lambda_max": 2.0, "num_samples": 512, "gradient_noise_scale": 96.0}
    hp, _, notes = suggest("sgd_momentum", Measurements(base), RecommendationContext(batch_size=32))
    assert hp["lr"] == pytest.approx(0.5 * 3.8 / 2.0 / 2 * 0.25)  # 1/(1 + 96/32)
    assert any("x 0.25 = 1/(1 + B_noise/B) with gradient noise scale 96 at batch 32" in n for n in notes)
    assert any("stable until lambda_max grows 16x" in n for n in notes)
    # full batch: exact gradients, no noise factor and no noise reason
    hp, _, notes = suggest("sgd_momentum", Measurements(base), RecommendationContext(batch_size=512))
    assert hp["lr"] == pytest.approx(0.5 * 3.8 / 2.0 / 2) and not any("B_noise" in n for n in notes)
    # no measured noise scale: nothing to scale by, and the note does not claim one
    hp, _, notes = suggest("sgd_momentum", Measurements({"lambda_max": 2.0, "num_samples": 512}),
                           RecommendationContext(batch_size=32))
    assert hp["lr"] == pytest.approx(0.475) and not any("B_noise" in n for n in notes)
