"""Scenario fixtures: the expected top choice and the presence of the key reason."""

from __future__ import annotations

import pytest

from curvlens.recommend import RecommendationContext, recommend

VISION = dict(  # ResNet-like, batch 128, noisy gradients, mild curvature
    summary={"num_params": 11_000_000, "num_samples": 50_000, "curvature": "hessian", "lambda_max": 40.0,
             "lambda_max_certified": True, "lambda_min": -0.5, "lambda_min_certified": True,
             "condition_number": None, "effective_condition_number": 60.0, "negative_mass": 0.02,
             "negative_mass_stderr": 0.005, "critical_batch_lambda_max": 2000, "gradient_noise_scale": 4000.0,
             "hvp_cost": 1.5, "lr": 0.05, "momentum": 0.9},
    context=dict(batch_size=128, lr=0.05, momentum=0.9, memory_bytes="16GB", phase="mid", optimizer="sgd",
                 layer_types="conv2d,batchnorm2d,linear,relu"),
)
REGRESSION = dict(  # 50 features, 500 samples, full batch, kappa 1e6
    summary={"num_params": 50, "num_samples": 500, "curvature": "hessian", "lambda_max": 1e3,
             "lambda_min": 1e-3, "condition_number": 1e6, "negative_mass": 0.0, "hvp_cost": 1.3},
    context=dict(batch_size=500, memory_bytes="1GB"),
)
INDEFINITE = dict(
    summary={"num_params": 200_000, "num_samples": 10_000, "curvature": "hessian", "lambda_max": 20.0,
             "lambda_min": -5.0, "effective_condition_number": 1e3, "negative_mass": 0.3,
             "negative_mass_stderr": 0.03, "saddle_verdict": "strongly_indefinite",
             "critical_batch_lambda_max": 200, "gradient_noise_scale": 1000.0, "hvp_cost": 1.5},
    context=dict(batch_size=256, memory_bytes="8GB", phase="early"),  # 256 / 1000: below the noise scale
)
LARGE_NOISY = dict(  # big model, small batch, ill-conditioned but curvature too noisy to use
    summary={"num_params": 100_000_000, "num_samples": 4096, "curvature": "hessian", "lambda_max": 300.0,
             "lambda_min": -1.0, "effective_condition_number": 1e5, "negative_mass": 0.03,
             "noise_batch_sizes": [32, 128, 512], "noise_rstderr_lambda_max": [0.6, 0.3, 0.15],
             "gradient_noise_scale": 5000.0, "hvp_cost": 2.0},
    context=dict(batch_size=32, memory_bytes="80GB", phase="mid", layer_types="linear,layernorm,embedding"),
)
MEMORY_TIGHT = dict(  # 2e9 float32 params = 8 GB per copy, 30 GB budget
    summary={"num_params": 2_000_000_000, "num_samples": 8192, "curvature": "hessian", "lambda_max": 10.0,
             "lambda_min": -0.1, "effective_condition_number": 1e3, "negative_mass": 0.01,
             "critical_batch_lambda_max": 512, "gradient_noise_scale": 2000.0, "hvp_cost": 1.8},
    context=dict(batch_size=1024, memory_bytes="30GB", phase="mid", layer_types="linear,layernorm"),
)

# (scenario, expected top, where the key reason appears, key reason substring)
SCENARIOS = [
    pytest.param(VISION, "sgd_momentum", "top", "steps are noise-limited", id="vision-small-batch"),
    # an effective condition number of 60 on an indefinite Hessian is no evidence of good conditioning
    pytest.param(VISION, "sgd_momentum", "top", "= 1/(1 + B_noise/B) with gradient noise scale 4000 at batch 128", id="vision-lr-margin"),
    pytest.param(REGRESSION, "lbfgs", "top", "condition number 1e+06 > 1e+04 (ill-conditioned)",
                 id="ill-conditioned-full-batch"),
    pytest.param(REGRESSION, "lbfgs", "top", "full batch (batch 500 covers all 500 samples)", id="full-batch"),
    pytest.param(INDEFINITE, "sgd_momentum", "top", "escape strict saddles", id="strongly-indefinite"),
    pytest.param(INDEFINITE, "sgd_momentum", "warnings", "strongly indefinite", id="indefinite-warning"),
    pytest.param(INDEFINITE, "sgd_momentum", "rejected:lbfgs", "s^T y > 0", id="indefinite-rejects-lbfgs"),
    pytest.param(LARGE_NOISY, "adamw", "rejected:kfac", "too noisy for K-FAC or Newton-CG", id="large-noisy"),
    pytest.param(LARGE_NOISY, "adamw", "top", "(ill-conditioned)", id="large-noisy-conditioning"),
    pytest.param(MEMORY_TIGHT, "sgd_momentum", "rejected:adamw", "> memory budget 30 GB", id="memory-tight"),
]


def _texts(rec, where: str) -> list[str]:
    if where == "top":
        return list(rec.top.reasons)
    if where == "warnings":
        return list(rec.warnings)
    name = where.split(":")[1]
    return [r for x in rec.rejected if x.optimizer == name for r in x.reasons]


@pytest.mark.parametrize("scenario,top,where,key", SCENARIOS)
def test_scenario_top_choice_and_key_reason(scenario, top, where, key):
    rec = recommend(scenario["summary"], RecommendationContext(**scenario["context"]))
    assert rec.top.optimizer == top, rec.to_text()
    assert any(key in t for t in _texts(rec, where)), (key, _texts(rec, where))


def test_regression_gets_curvature_hyperparameters():
    rec = recommend(REGRESSION["summary"], REGRESSION["context"])
    lbfgs = rec.top.hyperparameters
    assert lbfgs["history_size"] == 10 and lbfgs["line_search_fn"] == "strong_wolfe"
    assert "min_batch_size" not in lbfgs  # a line-search method runs at full batch, not at a "minimum batch"
    newton = next(c for c in rec.candidates if c.optimizer == "newton_cg")
    assert newton.hyperparameters["damping"] == pytest.approx(1e3 / 1e3)  # lambda_max / MAX_DAMPED_CONDITION
    assert newton.hyperparameters["curvature"] == "hessian"
    assert rec.confidence >= 0.5


def test_vision_sgd_lr_comes_from_lambda_max():
    rec = recommend(VISION["summary"], VISION["context"])
    hp = rec.top.hyperparameters
    assert hp["momentum"] == 0.9
    assert hp["lr_stability_limit"] == pytest.approx(3.8 / 40.0)
    # with the margin for progressive sharpening, times 1/(1 + B_noise/B) for the noise at batch 128
    assert hp["lr"] == pytest.approx(0.5 * 3.8 / 40.0 / 2 / (1 + 4000.0 / 128))
    assert rec.warnings == ()  # lr 0.05 < 3.8/40 = 0.095: below the edge
    kfac = [r for r in rec.rejected if r.optimizer == "kfac"] or [c for c in rec.candidates if c.optimizer == "kfac"]
    assert any("batchnorm2d" in r for r in kfac[0].reasons)


def test_memory_tight_rejects_state_hungry_methods():
    rec = recommend(MEMORY_TIGHT["summary"], MEMORY_TIGHT["context"])
    rejected = {r.optimizer for r in rec.rejected}
    assert {"adamw", "diag_hessian", "lbfgs", "kfac", "newton_cg"} <= rejected
    assert [c.optimizer for c in rec.candidates] == ["sgd_momentum"]
    assert any("80% > 50% of the memory budget" in r for r in rec.top.reasons)
