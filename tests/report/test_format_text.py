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
    lo, hi = a.saddle.fraction_negative_bounds  # 16 nodes over a 40-point bulk: bounds shown in the note
    note = rows["saddle_index"][3]
    shown = [float(v) for v in note.split("[")[1].split("]")[0].split(", ")]
    assert note.startswith("quadrature bounds [") and shown == pytest.approx([lo, hi], abs=0.006)
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


@pytest.mark.parametrize("bounds, resolved, note", [
    ([0.0084, 0.8783], False, "quadrature bounds [0.01, 0.88]: NOT resolved, verdict from negative mass"),
    ([0.3469, 0.4300], False, "quadrature bounds [0.347, 0.430]: NOT resolved, but at least 0.25"),
    ([0.0201, 0.0231], True, "quadrature bounds [0.0201, 0.0231]"),   # decimals enough to show the width
    ([0.25, 0.25], True, "quadrature bounds [0.25, 0.25]"),
    ([0.0012, 0.0012], True, "quadrature bounds [0.0012, 0.0012]"),
    ([0.1, 0.3], None, "quadrature bounds [0.10, 0.30]"),
    (None, None, ""),                                                  # KPM, or a file from before the bounds
    ([0.1], False, ""),
])
def test_saddle_index_note_shows_quadrature_bounds(bounds, resolved, note):
    s = {"saddle_index": 0.0354, "saddle_index_stderr": 0.0099, "saddle_index_bounds": bounds,
         "saddle_index_resolved": resolved}
    rows = {r[0]: r for r in headline_rows(s)}
    assert rows["saddle_index"][2] == "0.0354 ± 0.0099" and rows["saddle_index"][3] == note
    text = summary_table(s)
    line = next(ln for ln in text.splitlines() if "saddle index" in ln)
    assert line.endswith(note) if note else line.rstrip().endswith("0.0354 ± 0.0099")
