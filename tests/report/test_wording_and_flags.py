"""Hints in the caller's words, and flags on numbers that need a comment (report and comparison)."""

from __future__ import annotations

import math
from types import SimpleNamespace

from curvlens.report import _html_parts as H
from curvlens.report.compare import comparison_table, comparison_warnings
from curvlens.report.text import headline_rows, summary_table
from curvlens.report.wording import analysis_words, translate_all
from tests.report._fixtures import full_analysis


def _run(**summary):
    return SimpleNamespace(summary=lambda: dict(summary),
                           info=SimpleNamespace(status=summary.pop("status", ""), dtype="torch.float32"))


def test_analysis_words_turn_solver_arguments_into_analyze_arguments():
    assert analysis_words("bottom: not converged; increase max_matvecs (now 48) or loosen rtol (now 0.01); 0 "
                          "restart(s)") == "bottom: not converged; raise budget= (this measurement had 48 products); 0 restart(s)"
    assert analysis_words("an extreme eigenvalue is not certified: increase the eigensolver's max_matvecs") == (
        "an extreme eigenvalue is not certified: raise budget=")
    assert translate_all({"a": ["raise max_matvecs", 3], "b": ("x",)}, str.upper) == {"a": ["RAISE MAX_MATVECS", 3],
                                                                                    "b": ("X",)}


def test_headline_notes_go_through_words():
    table = summary_table({"lambda_max": 3.0, "lambda_max_certified": False})
    assert "NOT certified: raise budget=" in table and "max_matvecs" not in table
    shouted = summary_table({"lambda_max": 3.0, "lambda_max_certified": False}, words=str.upper)
    assert "NOT CERTIFIED: RAISE BUDGET=" in shouted


def test_implausible_product_cost_is_flagged():
    notes = {k: n for k, _, _, n in headline_rows({"hvp_cost": 0.133})}
    assert notes["hvp_cost"].startswith("x one gradient (implausibly low")
    assert {k: n for k, _, _, n in headline_rows({"hvp_cost": 1.4})}["hvp_cost"] == "x one gradient"


def test_condition_number_says_why_it_is_missing():
    rows = {k: (v, n) for k, _, v, n in headline_rows({"lambda_min": -0.5, "lambda_min_certified": True})}
    assert rows["condition_number"] == ("undefined", "undefined: λmin < 0, the loss is not locally convex here; "
                                                     "see the effective condition number")
    rows = {k: (v, n) for k, _, v, n in headline_rows({"lambda_min": 0.01, "lambda_min_certified": False})}
    assert rows["condition_number"] == ("not measured", "defined only for a certified λmin > 0; raise budget=")


def test_negative_noise_intercept_is_explained():
    nz = SimpleNamespace(quantities=("lambda_max", "trace"), full_values=[1.0, 2.0], fit_a=[-0.01, 0.02],
                         fit_b=[3.0, 4.0], critical_batch=[64.0, 128.0], notes=())
    html = H.noise_table(nz)
    assert "fit a &lt; 0 for lambda_max: a variance cannot be negative" in html and "for trace" not in html


def test_comparison_flags_budgets_unresolved_saddle_and_infinite_critical_batch():
    runs = [_run(status="6 measurement(s), 300 matvecs of budget 300", saddle_index=0.93,
                 saddle_index_resolved=False, saddle_index_bounds=[0.01, 0.97], critical_batch_trace=math.inf),
            _run(status="6 measurement(s), 600 matvecs of budget 600", saddle_index=0.02, saddle_index_resolved=True)]
    flags = comparison_warnings(runs, ["e1", "e2"])
    assert flags[0].startswith("the runs were made with different budgets (e1: 300, e2: 600)")
    assert "e1: saddle index 0.93 NOT resolved (quadrature bounds [0.01, 0.97]): compare the negative mass" in flags[1]
    assert flags[2].startswith("e1: critical batch size (trace) is inf: no batch size of the study reached")
    assert len(flags) == 3  # e2 is resolved and finite
    text = comparison_table([full_analysis(), full_analysis(lr=0.01)], ["a", "b"])
    assert text.startswith("quantity")
