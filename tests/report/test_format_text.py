"""Number formatting and the terminal summary table."""

from __future__ import annotations

import math

import pytest
import torch

from curvlens.report import headline_rows, summary_table
from curvlens.report._format import fmt, fmt_pm
from tests.report._fixtures import empty_analysis, full_analysis, spectrum


@pytest.mark.parametrize("value, err, expected", [
    (12.3456, 0.0412, "12.346 ± 0.041"),
    (107.2, 15.3, "107 ± 15"),
    (0.2821, 0.0113, "0.282 ± 0.011"),
    (-0.6, 5e-6, "-0.6 ± 5.0e-06"),           # residual far below the value: compact
    (1.5e7, 2.3e5, "(1.500 ± 0.023)e+07"),
    (3.0, None, "3"),
    (3.0, math.nan, "3"),
    (None, 1.0, "not measured"),
    (torch.tensor(2.5, dtype=torch.float64), torch.tensor(0.25), "2.50 ± 0.25"),
])
def test_fmt_pm(value, err, expected):
    assert fmt_pm(value, err) == expected


@pytest.mark.parametrize("value, expected", [
    (None, "not measured"), (math.nan, "nan"), (math.inf, "inf"), (True, "yes"), (12345, "12,345"),
    (0.05, "0.05"), (1.25e-6, "1.250e-06"), ([8, 16], "[8, 16]"), ("hessian", "hessian"),
])
def test_fmt(value, expected):
    assert fmt(value) == expected


def test_summary_table_has_headline_numbers_with_uncertainties():
    a = full_analysis()
    s = a.summary()
    text = summary_table(a)
    lam = float(a.top.eigenvalues[0])
    assert abs(lam - max(spectrum())) < 1e-8
    rows = {r[0]: r for r in headline_rows(a)}
    # lambda_max with its residual, certified
    assert rows["lambda_max"][2] == fmt_pm(lam, float(a.top.residuals[0]))
    assert "±" in rows["lambda_max"][2] and rows["lambda_max"][3] == "certified"
    # trace +- stderr, as estimated
    assert rows["trace"][2] == fmt_pm(s["trace"], s["trace_stderr"])
    assert rows["saddle_index"][2] == fmt_pm(s["saddle_index"], s["saddle_index_stderr"])
    # lr = 0.05 -> threshold 40 < 50: unstable
    assert rows["stability_threshold"][2] == "40"
    assert rows["sharpness_ratio"][2] == "1.25" and "UNSTABLE" in rows["sharpness_ratio"][3]
    for r in rows.values():
        if r[2] != "not measured":
            assert r[2] in text and r[1] in text
    assert "critical batch size (λmax)" in text and fmt(s["critical_batch_lambda_max"], 3) in text
    assert "B_simple" in text and "96" in text


def test_summary_table_missing_values():
    a = empty_analysis()
    text = summary_table(a)
    assert "largest eigenvalue λmax  " in text and "not measured" in text
    short = summary_table(a, show_missing=False)
    assert "not measured" not in short and "parameters D" in short and "40" in short


def test_summary_table_of_a_mapping_and_summary_json_document():
    s = {"lambda_max": 3.0, "lambda_max_certified": False, "sharpness_ratio": 0.5, "lr": 0.1}
    text = summary_table(s)
    assert "NOT certified" in text and "stable (< 1)" in text
    assert summary_table({"summary": s}) == text
