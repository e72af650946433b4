"""Partial analyses, NaN fields, contradictory or invalid context: clear messages, never a crash."""

from __future__ import annotations

import json
import math

import pytest

from curvlens.recommend import (Recommendation, RecommendationContext, parse_duration, parse_memory,
                                recommend)
from curvlens.recommend.hyperparams import cg_iterations, initial_damping, refresh_interval
from curvlens.recommend.evidence import Measurements
from curvlens.results import RESULT_KINDS

from tests.recommend.test_scenarios import INDEFINITE, REGRESSION, VISION

FULL = {**VISION["summary"]}


@pytest.mark.parametrize("drop", ["lambda_max", "effective_condition_number",
                                  "critical_batch_lambda_max", "gradient_noise_scale", "hvp_cost"])
def test_dropping_a_measurement_lowers_confidence_and_says_what_to_measure(drop):
    ctx = RecommendationContext(**VISION["context"])
    full = recommend(FULL, ctx)
    partial = recommend({k: v for k, v in FULL.items() if k != drop}, ctx)
    assert partial.confidence < full.confidence
    key = {"effective_condition_number": "condition_number",
           "critical_batch_lambda_max": "noise study"}.get(drop, drop)
    if drop == "lambda_max":  # the condition number is still there; stability needs lambda_max
        assert any(s.startswith("measure lambda_max") for s in partial.missing)
    else:
        assert any(s.startswith(f"measure {key}") for s in partial.missing), partial.missing


def test_missing_negative_mass_falls_back_to_eigenvalue_ratio_then_asks():
    ctx = RecommendationContext(**VISION["context"])
    no_mass = recommend({k: v for k, v in FULL.items() if k != "negative_mass"}, ctx)
    assert not any(s.startswith("measure negative_mass") for s in no_mass.missing)  # the ratio stood in
    bare = {k: v for k, v in FULL.items() if k not in ("negative_mass", "lambda_min")}
    rec = recommend(bare, ctx)
    assert any(s.startswith("measure negative_mass") for s in rec.missing)
    assert rec.confidence < recommend(FULL, ctx).confidence


@pytest.mark.parametrize("summary", [{}, {"num_params": 10}, {"lambda_max": None, "saddle_verdict": None},
                                     {"noise_batch_sizes": [], "noise_rstderr_lambda_max": "x"},
                                     {"unknown_key": object(), "lambda_max": "12"}])
def test_partial_or_odd_summaries_never_crash(summary):
    rec = recommend(summary, RecommendationContext(batch_size=8))
    assert rec.top is not None and rec.confidence < 0.5
    assert any("measure lambda_max" in s for s in rec.missing)
    json.dumps(rec.to_dict(), allow_nan=False)


def test_nan_fields_are_ignored_with_warnings():
    bad = {**FULL, "lambda_max": float("nan"), "hvp_cost": float("inf"),
           "noise_rstderr_lambda_max": [float("nan"), 0.2]}
    ctx = RecommendationContext(**VISION["context"])
    rec = recommend(bad, ctx)
    assert any("lambda_max is non-finite" in w for w in rec.warnings)
    assert any("hvp_cost is non-finite" in w for w in rec.warnings)
    assert rec.confidence < recommend(FULL, ctx).confidence
    sgd = next(c for c in rec.candidates if c.optimizer == "sgd_momentum")
    assert sgd.hyperparameters["lr"] is None
    json.dumps(rec.to_dict(), allow_nan=False)  # raises if a NaN leaked into the output


def test_contradictory_context_values():
    with pytest.raises(ValueError, match=r"batch_size: expected at most dataset_size=100, got 128; .*fix one"):
        RecommendationContext(batch_size=128, dataset_size=100)
    rec = recommend({**FULL, "num_samples": 100, "lr": 0.01}, RecommendationContext(batch_size=128, lr=0.1))
    assert any("batch_size 128 is larger than the 100 samples the analysis used" in w for w in rec.warnings)
    assert any("context lr=0.1 differs from lr=0.01" in w for w in rec.warnings)
    rec = recommend({"num_params": 1e9}, RecommendationContext(memory_bytes="100MB"))
    assert any("smaller than the parameters themselves" in w for w in rec.warnings)
    assert rec.candidates == () and len(rec.rejected) == 7 and rec.confidence == 0.0
    assert "no candidate survived" in rec.to_text()


ERRORS = [
    (dict(lr=-0.1), ValueError, r"lr: expected a positive finite learning rate, got -0.1; pass e.g. lr=0.01"),
    (dict(lr=float("nan")), ValueError, r"lr: expected a positive finite"),
    (dict(lr="0.1"), TypeError, r"lr: expected a number, got '0.1'"),
    (dict(momentum=1.0), ValueError, r"momentum: expected a value in \[0, 1\), got 1.0"),
    (dict(momentum=-0.1), ValueError, r"momentum: expected a value in \[0, 1\)"),
    (dict(phase="late"), ValueError, r"phase: expected one of early, mid, fine-tuning, got 'late'"),
    (dict(batch_size=0), ValueError, r"batch_size: expected a positive int, got 0"),
    (dict(batch_size=1.5), TypeError, r"batch_size: expected a positive int, got 1.5"),
    (dict(memory_bytes="8 furlongs"), ValueError, r"memory: expected a size like '8GB'"),
    (dict(memory_bytes=-5), ValueError, r"memory: expected a positive size"),
    (dict(time_budget_s="soon"), ValueError, r"time_budget: expected a duration like"),
    (dict(layer_types=""), ValueError, r"layer_types: expected at least one layer name"),
    (dict(optimizer=3), TypeError, r"optimizer: expected a name such as 'sgd'"),
    (dict(bytes_per_param=0), ValueError, r"bytes_per_param: expected a positive int"),
]


@pytest.mark.parametrize("kwargs,exc,msg", ERRORS)
def test_context_validation_messages(kwargs, exc, msg):
    with pytest.raises(exc, match=msg):
        RecommendationContext(**kwargs)


def test_recommend_argument_errors():
    with pytest.raises(TypeError, match=r"analysis: expected an AnalysisResult \(with .summary\(\)\) or a Mapping"):
        recommend(42)
    with pytest.raises(ValueError, match=r"context: unknown field\(s\) batchsize"):
        recommend({}, {"batchsize": 3})
    with pytest.raises(TypeError, match=r"context: expected a RecommendationContext"):
        recommend({}, [1])


def test_context_normalisation_and_parsers():
    ctx = RecommendationContext(optimizer="Adam", phase="finetuning", memory_bytes="1.5GiB", time_budget_s="30m",
                                layer_types="Linear, nn.Conv2d", batch_size=32.0)
    assert (ctx.optimizer_id, ctx.phase, ctx.memory_bytes, ctx.time_budget_s) == ("adamw", "fine-tuning",
                                                                                   int(1.5 * 2**30), 1800.0)
    assert ctx.layer_types == ("linear", "conv2d") and ctx.batch_size == 32
    assert RecommendationContext(optimizer="lion").optimizer_id is None
    assert parse_memory("8GB") == 8_000_000_000 and parse_memory("512MiB") == 512 * 2**20 and parse_memory(4096) == 4096
    assert parse_duration("2h") == 7200 and parse_duration(90) == 90.0


def test_summary_object_and_summary_json_document_are_accepted():
    class FakeAnalysis:
        def summary(self):
            return dict(REGRESSION["summary"])

    a = recommend(FakeAnalysis(), REGRESSION["context"])
    b = recommend({"curvlens-kind": "analysis", "summary": REGRESSION["summary"]}, REGRESSION["context"])
    c = recommend(REGRESSION["summary"], REGRESSION["context"])
    assert a.to_dict() == b.to_dict() == c.to_dict()


def test_to_dict_shape_text_and_markdown():
    rec = recommend(INDEFINITE["summary"], INDEFINITE["context"])
    d = json.loads(json.dumps(rec.to_dict(), allow_nan=False))
    assert set(d) >= {"candidates", "warnings", "rejected"}
    for c in d["candidates"]:
        assert set(c) >= {"optimizer", "score", "hyperparameters", "cost_per_step", "confidence", "reasons"}
        assert 0.0 <= c["confidence"] <= 1.0 and c["cost_per_step"] >= 1.0
    scores = [c["score"] for c in d["candidates"] if c["runnable"]]  # candidates curvlens cannot build come last
    assert scores == sorted(scores, reverse=True)
    runnable = [c["runnable"] for c in d["candidates"]]
    assert runnable == sorted(runnable, reverse=True)
    assert d["rejected"][0]["optimizer"] == "lbfgs" and d["rejected"][0]["reasons"]
    text, md = rec.to_text(), rec.to_markdown()
    assert text.splitlines()[1].startswith(" 1. SGD+momentum") and "Rejected:" in text and "Warnings:" in text
    assert md.startswith("## Optimizer recommendation") and "| 1 | SGD+momentum |" in md and "### Rejected" in md
    assert rec.info.converged and rec.info.seed is None and rec.info.matvecs == 0


def test_registered_and_frozen():
    assert RESULT_KINDS["recommendation"][0] is Recommendation
    rec = recommend({})
    with pytest.raises(AttributeError):
        rec.confidence = 1.0  # type: ignore[misc]


def test_hyperparameter_formulas():
    m = Measurements({"lambda_max": 100.0, "lambda_min": -2.0})
    assert initial_damping(m) == pytest.approx(2.2)  # 1.1 * |lambda_min| > 100 / 1e3
    assert initial_damping(m, indefinite_ok=True) == pytest.approx(0.1)
    assert initial_damping(Measurements({})) is None
    assert refresh_interval("kfac", 2.0) == 32  # 4 products * 2 gradients / 0.25
    assert refresh_interval("diag_hessian", 0.1) == 1 and refresh_interval("kfac", 1e3) == 100
    # damped kappa (1e3 + 1) / (1e-3 + 1) ~ 1000 -> ceil(0.5 * 31.6 * ln 200) = 84 -> capped 50
    assert cg_iterations(Measurements({"lambda_max": 1e3, "lambda_min": 1e-3}), 1.0) == 50
    # kappa (1 + 0.001) / (1 + 0.001) = 1 -> ceil(0.5 * ln 200) = 3
    assert cg_iterations(Measurements({"lambda_max": 1.0, "lambda_min": 1.0}), 1e-3) == math.ceil(0.5 * math.log(200))


def test_hdf5_round_trip(tmp_path):
    from curvlens.io.hdf5 import load_result, save_result

    rec = recommend(INDEFINITE["summary"], RecommendationContext(**INDEFINITE["context"], layer_types="linear"))
    save_result(rec, tmp_path / "rec.h5")
    back = load_result(tmp_path / "rec.h5")
    assert isinstance(back, Recommendation)
    assert back.to_dict() == rec.to_dict() and back.context == rec.context and back.info == rec.info
