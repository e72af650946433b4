"""Each rule on synthetic summaries sitting just above and just below its threshold."""

from __future__ import annotations

import pytest

from curvlens.recommend import RULES, Measurements, RecommendationContext
from curvlens.recommend import thresholds as T
from curvlens.recommend.rules import run_rule

UP, DOWN = 1.001, 0.999
BY_NAME = {r.name: r for r in RULES}


def fire(name: str, summary: dict, **ctx):
    return run_rule(BY_NAME[name], Measurements(summary), RecommendationContext(**ctx))


def weights(out) -> dict[str, float]:
    w: dict[str, float] = {}
    for e in out.evidence:
        w[e.optimizer] = w.get(e.optimizer, 0.0) + e.weight
    return w


def vetoed(out) -> set[str]:
    return {e.optimizer for e in out.evidence if e.veto}


def test_rule_table_names_unique_and_documented():
    names = [r.name for r in RULES]
    assert len(names) == len(set(names)) == 17
    assert all(r.fn.__doc__ and r.reads for r in RULES)


# --- stability: lambda_max vs (2 + 2 beta) / lr
@pytest.mark.parametrize("beta", [0.0, 0.9])
def test_stability_just_above_and_below(beta):
    lr = 0.1
    thr = (2 + 2 * beta) / lr
    above = fire("stability", {"lambda_max": thr * UP}, lr=lr, momentum=beta)
    assert len(above.warnings) == 1 and "above the stability threshold" in above.warnings[0]
    assert f"{thr:.3g}" in above.warnings[0] and weights(above)["sgd_momentum"] < 0
    edge = fire("stability", {"lambda_max": thr * DOWN}, lr=lr, momentum=beta)
    assert len(edge.warnings) == 1 and "edge of stability" in edge.warnings[0] and not edge.evidence
    below = fire("stability", {"lambda_max": thr * T.STABILITY_RATIO_EDGE * DOWN}, lr=lr, momentum=beta)
    assert below.warnings == [] and below.evidence == []


def test_stability_uses_analysis_lr_when_context_has_none_and_skips_adam():
    out = fire("stability", {"lambda_max": 30.0, "lr": 0.1})  # threshold 20
    assert "above the stability threshold" in out.warnings[0]
    assert fire("stability", {"lambda_max": 30.0}, lr=0.1, optimizer="adam").warnings == []
    missing = fire("stability", {"lambda_max": 30.0})
    assert missing.missing and "set lr" in missing.missing[0]


# --- conditioning
def test_conditioning_ill_just_above_and_below():
    above = fire("conditioning", {"condition_number": T.ILL_CONDITIONED * UP})
    w = weights(above)
    assert w["newton_cg"] > 0 and w["lbfgs"] > 0 and w["kfac"] > 0 and w["sgd_momentum"] < 0
    assert "condition number 1.001e+04 > 1e+04 (ill-conditioned)" in above.evidence[0].reason
    below = fire("conditioning", {"condition_number": T.ILL_CONDITIONED * DOWN})
    assert below.evidence == []


def test_conditioning_well_just_above_and_below():
    below = fire("conditioning", {"condition_number": T.WELL_CONDITIONED * DOWN})
    w = weights(below)
    assert w["sgd_momentum"] > 0 and w["kfac"] < 0 and w["newton_cg"] < 0
    assert "99.9 < 100 (well-conditioned)" in below.evidence[0].reason
    assert fire("conditioning", {"condition_number": T.WELL_CONDITIONED * UP}).evidence == []


def test_conditioning_falls_back_to_effective_and_eigen_ratio():
    eff = fire("conditioning", {"condition_number": None, "effective_condition_number": 5e4})
    assert "effective condition number 5e+04" in eff.evidence[0].reason
    ratio = fire("conditioning", {"lambda_max": 1.0, "lambda_min": 1e-5})
    assert "lambda_max/lambda_min 1e+05" in ratio.evidence[0].reason
    assert "measure condition_number" in fire("conditioning", {}).missing[0]


# --- negative curvature
def test_negative_mass_saddle_threshold():
    above = fire("negative_curvature", {"negative_mass": T.NEGATIVE_MASS_SADDLE * UP, "negative_mass_stderr": 0.01})
    assert "in a saddle region" in above.warnings[0] and "+- 0.01" in above.warnings[0]
    assert weights(above)["lbfgs"] < 0 and weights(above)["sgd_momentum"] > 0
    below = fire("negative_curvature", {"negative_mass": T.NEGATIVE_MASS_SADDLE * DOWN})
    assert below.warnings == [] and weights(below) == {"lbfgs": pytest.approx(0.3)}


def test_negative_mass_strong_threshold():
    above = fire("negative_curvature", {"negative_mass": T.NEGATIVE_MASS_STRONG * UP})
    below = fire("negative_curvature", {"negative_mass": T.NEGATIVE_MASS_STRONG * DOWN})
    assert "strongly indefinite" in above.warnings[0] and "in a saddle region" in below.warnings[0]
    assert weights(above)["lbfgs"] < weights(below)["lbfgs"] < 0
    assert "s^T y > 0" in [e.reason for e in above.evidence if e.optimizer == "lbfgs"][0]


def test_negative_ratio_strong_threshold_and_verdict_fallback():
    base = {"negative_mass": 0.06, "lambda_max": 10.0}
    above = fire("negative_curvature", {**base, "lambda_min": -10.0 * T.NEGATIVE_RATIO_STRONG * UP})
    below = fire("negative_curvature", {**base, "lambda_min": -10.0 * T.NEGATIVE_RATIO_STRONG * DOWN})
    assert "strongly indefinite" in above.warnings[0] and "|lambda_min|/lambda_max" in above.warnings[0]
    assert "in a saddle region" in below.warnings[0]
    verdict = fire("negative_curvature", {"saddle_verdict": "strongly_indefinite"})
    assert "saddle verdict 'strongly_indefinite'" in verdict.warnings[0]
    ggn = fire("negative_curvature", {"curvature": "ggn", "negative_mass": 0.5})
    assert ggn.warnings == [] and "curvature='hessian'" in ggn.missing[0]


# --- curvature noise: batch vs critical batch
def test_curvature_noise_critical_batch():
    s = {"critical_batch_lambda_max": 900.0, "num_samples": 10_000}
    below = fire("curvature_noise", s, batch_size=899)
    assert weights(below)["kfac"] < 0 and weights(below)["newton_cg"] < 0 and weights(below)["lbfgs"] < 0
    assert "batch 899 is below the curvature critical batch size ~900" in below.evidence[0].reason
    assert "too noisy for K-FAC or Newton-CG" in below.evidence[0].reason
    above = fire("curvature_noise", s, batch_size=900)
    assert weights(above)["kfac"] > 0 and weights(above)["newton_cg"] > 0


def test_curvature_noise_from_noise_study_cites_relative_error():
    s = {"noise_batch_sizes": [16, 64, 256], "noise_rstderr_lambda_max": [0.7, 0.35, 0.101], "num_samples": 10_000}
    out = fire("curvature_noise", s, batch_size=64)
    reason = out.evidence[0].reason
    assert "relative error of l_max 35% at B=64" in reason and "extrapolated" in reason
    # 0.101 at 256 -> critical 256 * 1.01^2 = 261.1: batch 262 is above, 261 below
    assert weights(fire("curvature_noise", s, batch_size=262))["kfac"] > 0
    assert weights(fire("curvature_noise", s, batch_size=261))["kfac"] < 0
    ok = {**s, "noise_rstderr_lambda_max": [0.7, 0.35, 0.099]}
    assert "~256" in fire("curvature_noise", ok, batch_size=300).evidence[0].reason
    assert "set batch_size" in fire("curvature_noise", s).missing[0]


# --- gradient noise scale
def test_gradient_noise_thresholds():
    s = {"gradient_noise_scale": 1000.0, "num_samples": 100_000}
    noisy = fire("gradient_noise", s, batch_size=99)  # 0.099 < 0.1
    assert weights(noisy)["sgd_momentum"] > 0 and weights(noisy)["kfac"] < 0
    assert "(< 0.1)" in noisy.evidence[0].reason
    for batch in (101, 999):  # between the thresholds: SGD's cheaper step, and the mini-batch note against L-BFGS
        mid = fire("gradient_noise", s, batch_size=batch).evidence
        assert [(e.optimizer, "deterministic loss" in e.reason, "below the critical batch" in e.reason)
                for e in mid] == [("sgd_momentum", False, True), ("lbfgs", True, False)]
    big = fire("gradient_noise", s, batch_size=1000)
    assert weights(big)["kfac"] > 0 and "curvature-limited" in big.evidence[0].reason


def test_full_batch_favours_lbfgs():
    out = fire("gradient_noise", {"num_samples": 200}, batch_size=200)
    assert weights(out)["lbfgs"] > weights(out)["newton_cg"] > 0 and "full batch" in out.evidence[0].reason
    assert fire("gradient_noise", {"num_samples": 201}, batch_size=200).missing  # asks for gradient_noise_scale


# --- memory
def test_memory_veto_and_tight_thresholds():
    p = 1_000_000  # 4 MB per copy in float32
    unit = 4 * p
    just_fits = fire("memory", {"num_params": p}, memory_bytes=int(T.MEMORY_COPIES["kfac"] * unit * UP))
    assert "kfac" not in vetoed(just_fits) and weights(just_fits)["kfac"] < 0  # > 50%: tight
    no_fit = fire("memory", {"num_params": p}, memory_bytes=int(T.MEMORY_COPIES["kfac"] * unit * DOWN))
    assert "kfac" in vetoed(no_fit) and "> memory budget" in [e.reason for e in no_fit.evidence if e.veto][0]
    roomy = fire("memory", {"num_params": p}, memory_bytes=int(2 * T.MEMORY_COPIES["kfac"] * unit * UP))
    assert "kfac" not in weights(roomy)


def test_memory_smaller_than_params_warns_and_asks():
    out = fire("memory", {"num_params": 1e9}, memory_bytes="1GB")
    assert "smaller than the parameters themselves" in out.warnings[0]
    assert vetoed(out) == set(T.MEMORY_COPIES)
    assert "set memory_bytes" in fire("memory", {"num_params": 10}).missing[0]


# --- layers
def test_layer_support():
    assert "kfac" in vetoed(fire("layer_support", {}, layer_types="lstm,layernorm"))
    partial = fire("layer_support", {}, layer_types="linear,layernorm,relu")
    assert weights(partial)["kfac"] < 0 and "not layernorm" in partial.evidence[0].reason
    full = fire("layer_support", {}, layer_types=("Linear", "nn.Conv2d", "ReLU"))
    assert weights(full)["kfac"] > 0


# --- product cost
def test_product_cost_threshold():
    above = fire("product_cost", {"hvp_cost": T.HVP_COST_EXPENSIVE * UP})
    below = fire("product_cost", {"hvp_cost": T.HVP_COST_EXPENSIVE * DOWN})
    assert weights(above)["newton_cg"] < 0 < weights(below)["newton_cg"]
    assert "(> 3.0)" in above.evidence[0].reason


# --- phase / current optimizer / time budget / consistency
def test_phase_and_current_optimizer():
    assert weights(fire("phase", {}, phase="fine-tuning"))["adamw"] > 0
    early = weights(fire("phase", {}, phase="early"))
    assert early == {"sgd_momentum": pytest.approx(0.3), "adamw": pytest.approx(0.3)}  # curvature methods' order kept
    assert fire("phase", {}, phase="mid").evidence == []
    assert weights(fire("current_optimizer", {}, optimizer="K-FAC", phase="mid")) == {"kfac": pytest.approx(0.3)}
    assert fire("current_optimizer", {}, optimizer="kfac", phase="early").evidence == []


def test_time_budget_threshold():
    s = {"gradient_seconds": 0.05}  # one measured gradient 0.05 s
    few = fire("time_budget", s, time_budget_s=0.05 * T.FEW_STEPS * DOWN)
    assert weights(few)["newton_cg"] < 0 and "SGD steps (< 1000" in few.evidence[0].reason
    assert "measured at 0.05 s" in few.evidence[0].reason
    assert fire("time_budget", s, time_budget_s=0.05 * T.FEW_STEPS * UP).evidence == []
    # the analysis' own wall time is not a gradient time: without a measured one, nothing is converted
    old = fire("time_budget", {"seconds": 10.0, "matvecs": 100, "hvp_cost": 2.0}, time_budget_s=1.0)
    assert old.evidence == [] and "measure gradient_seconds" in old.missing[0]


def test_consistency_warnings():
    out = fire("consistency", {"num_samples": 100, "lr": 0.01}, batch_size=128, lr=0.1)
    assert any("larger than the 100 samples" in w for w in out.warnings)
    assert any("context lr=0.1 differs from lr=0.01" in w for w in out.warnings)
    assert fire("consistency", {"num_samples": 128, "lr": 0.1}, batch_size=128, lr=0.1).warnings == []


def test_finite_values_and_certification():
    out = fire("finite_values", {"lambda_max": float("nan"), "noise_rstderr_trace": [0.1, float("inf")]})
    assert any("lambda_max is non-finite" in w and "re-run analyze" in w for w in out.warnings)
    assert any("noise_rstderr_trace is non-finite" in w for w in out.warnings)
    cert = fire("certification", {"lambda_max": 5.0, "lambda_max_certified": False, "lambda_min": -1.0,
                                  "lambda_min_certified": True})
    assert len(cert.warnings) == 1 and "lambda_max = 5 is not certified" in cert.warnings[0]
