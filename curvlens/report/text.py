"""Headline numbers of an analysis, with their uncertainties, as rows and as a terminal table."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from curvlens.diagnostics.saddle import STRONGLY_INDEFINITE
from curvlens.report._format import NOT_MEASURED, as_array, as_float, fmt, fmt_pm, part, summary_dict
from curvlens.report.wording import Words, analysis_words

__all__ = ["headline_rows", "summary_table"]


def _first(x: Any) -> float | None:
    a = as_array(x)
    return float(a.reshape(-1)[0]) if a is not None and a.size else None


def _pick(*values: Any) -> Any:
    for v in values:
        if v is not None:
            return v
    return None


def _certified(flag: Any) -> str:
    if flag is None:
        return ""
    return "certified" if bool(flag) else "NOT certified: raise budget="


def _condition_note(s: dict, cond: Any) -> str:
    """Why the condition number is missing, and what stands in for it."""
    if s.get("condition_number") is not None:
        return ""
    lmin, certified = as_float(s.get("lambda_min")), s.get("lambda_min_certified")
    bound = as_float(part(cond, "condition_number_lower_bound"))
    if lmin is None:
        return "needs λmin (the conditioning analysis measures it)"
    if certified and lmin < 0:
        return "undefined: λmin < 0, the loss is not locally convex here; see the effective condition number"
    if bound is not None and math.isfinite(bound) and bound > 0:
        if certified:
            return (f"at least {fmt(bound, 3)}: λmin lies within its residual of 0 (usual for networks, with "
                    "many eigenvalues near 0); the effective condition number stands in")
        return f"at least {fmt(bound, 3)} (λmin not certified); raise budget="
    return "defined only for a certified λmin > 0" + ("" if certified else "; raise budget=")


def _condition_value(s: dict, cond: Any) -> str:
    """The condition number, or what stands in for it: ``"undefined"`` (certified λmin < 0) or ``"≥ bound"``."""
    if s.get("condition_number") is not None:
        return fmt(s.get("condition_number"))
    lmin, bound = as_float(s.get("lambda_min")), as_float(part(cond, "condition_number_lower_bound"))
    if lmin is not None and s.get("lambda_min_certified") and lmin < 0:
        return "undefined"
    if bound is not None and math.isfinite(bound) and bound > 0:
        return f"≥ {fmt(bound, 3)}"
    return NOT_MEASURED


def _hvp_note(cost: Any) -> str:
    c = as_float(cost)
    if c is None:
        return ""
    if c < 0.5:  # a product is a gradient plus a backward through the gradient graph: below 1 is a timing artefact
        return "x one gradient (implausibly low: timing noise on a busy machine or a tiny model)"
    return "x one gradient"


def headline_rows(analysis: Any, *, words: Words | None = None) -> list[tuple[str, str, str, str]]:
    """The headline numbers as ``(key, label, value text, note)`` rows.

    Values come from ``analysis.summary()`` (the keys documented with ``AnalysisResult``);
    uncertainties from the parts: eigenvalue residuals ``||Av - lv||`` (some eigenvalue lies
    within it), standard errors of the stochastic estimates. Unmeasured values read
    ``"not measured"``.

    Args:
        analysis: an ``AnalysisResult``, or a Mapping of summary keys (then without the
            eigenvalue residuals, which only the parts hold).
        words: rewrites each note into the caller's interface (default
            :func:`~curvlens.report.wording.analysis_words`: ``analyze``'s arguments).
    """
    words = analysis_words if words is None else words
    s = summary_dict(analysis)
    cond, top, bottom = (part(analysis, k) for k in ("conditioning", "top", "bottom"))
    res_max = _pick(as_float(part(cond, "lambda_max_residual")), _first(part(top, "residuals")))
    res_min = _pick(as_float(part(cond, "lambda_min_residual")), _first(part(bottom, "residuals")))
    lr, mom = s.get("lr"), s.get("momentum")
    thr_name = "(2+2·momentum)/lr" if mom else "2/lr"
    rows: list[tuple[str, str, str, str]] = [
        ("curvature", "curvature", fmt(s.get("curvature")), ""),
        ("num_params", "parameters D", fmt(s.get("num_params")), ""),
        ("num_samples", "samples N", fmt(s.get("num_samples")), ""),
        ("lambda_max", "largest eigenvalue λmax", fmt_pm(s.get("lambda_max"), res_max),
         _certified(s.get("lambda_max_certified")) if s.get("lambda_max") is not None else ""),
        ("lambda_min", "smallest eigenvalue λmin", fmt_pm(s.get("lambda_min"), res_min),
         _certified(s.get("lambda_min_certified")) if s.get("lambda_min") is not None else ""),
        ("condition_number", "condition number λmax/λmin", _condition_value(s, cond), _condition_note(s, cond)),
        ("effective_condition_number", "effective condition number", fmt(s.get("effective_condition_number")),
         ""),
        ("trace", "trace", fmt_pm(s.get("trace"), s.get("trace_stderr")), "± standard error"),
        ("saddle_index", "saddle index (fraction λ < 0)", fmt_pm(s.get("saddle_index"),
                                                                   s.get("saddle_index_stderr")),
         _quadrature_note(s.get("saddle_index_bounds"), s.get("saddle_index_resolved"))),
        ("negative_mass", "negative mass Σ|λ<0| / Σ|λ|", fmt_pm(s.get("negative_mass"),
                                                               s.get("negative_mass_stderr")), ""),
        ("saddle_verdict", "saddle verdict", fmt(s.get("saddle_verdict")), ""),
        ("lr", "learning rate", fmt(lr), ""),
        ("momentum", "momentum", fmt(mom), ""),
        ("stability_threshold", f"stability threshold {thr_name}", fmt(s.get("stability_threshold")), ""),
        ("sharpness_ratio", "sharpness ratio λmax / threshold", fmt(s.get("sharpness_ratio"), 3),
         _stability(s.get("sharpness_ratio"))),
        ("critical_batch_lambda_max", "critical batch size (λmax)", fmt(s.get("critical_batch_lambda_max"), 3),
         ""),
        ("critical_batch_trace", "critical batch size (trace)", fmt(s.get("critical_batch_trace"), 3), ""),
        ("gradient_noise_scale", "gradient noise scale B_simple", fmt(s.get("gradient_noise_scale"), 3), ""),
        ("hvp_cost", "curvature product cost", fmt(s.get("hvp_cost"), 3), _hvp_note(s.get("hvp_cost"))),
        ("matvecs", "curvature products", fmt(s.get("matvecs")), ""),
        ("seconds", "wall time (s)", fmt(s.get("seconds"), 3), ""),
    ]
    return [(k, label, value, words(note) if note else note) for k, label, value, note in rows]


def _quadrature_note(bounds: Any, resolved: Any) -> str:
    """``"quadrature bounds [0.00, 0.85]: NOT resolved, ..."`` (decimals enough to show the width)."""
    b = as_array(bounds)
    if b is None or b.shape != (2,) or not np.isfinite(b).all():
        return ""
    lo, hi = float(b[0]), float(b[1])
    scale = hi - lo if hi > lo else abs(hi)  # the width, or the value when the bounds meet
    decimals = min(max(1 - math.floor(math.log10(scale)), 2), 6) if scale > 0 else 2
    text = f"quadrature bounds [{lo:.{decimals}f}, {hi:.{decimals}f}]"
    if resolved is None:
        return text
    if bool(resolved):
        return text
    if lo >= STRONGLY_INDEFINITE:
        return text + f": NOT resolved, but at least {STRONGLY_INDEFINITE:g}"
    return text + ": NOT resolved, verdict from negative mass"


def _stability(ratio: Any) -> str:
    r = as_float(ratio)
    if r is None or r != r:
        return ""
    return "stable (< 1)" if r < 1 else "UNSTABLE (>= 1): lower the learning rate"


def summary_table(analysis: Any, *, show_missing: bool = True, words: Words | None = None) -> str:
    """Plain-text table of the headline numbers with their uncertainties, for a terminal.

    Args:
        analysis: an ``AnalysisResult`` (or a Mapping of its summary keys).
        show_missing: include rows whose value was not measured.
        words: rewrites each note (see :func:`headline_rows`).

    Returns:
        A multi-line string (no trailing newline).

    Example:
        >>> print(summary_table({"curvature": "hessian", "lambda_max": 12.3}))  # doctest: +ELLIPSIS
        curvlens analysis
        ...
          largest eigenvalue λmax           12.3
        ...
    """
    rows = [r for r in headline_rows(analysis, words=words) if show_missing or r[2] != NOT_MEASURED]
    width = max((len(r[1]) for r in rows), default=0)
    vwidth = max((len(r[2]) for r in rows), default=0)
    lines = ["curvlens analysis"]
    for _, label, value, note in rows:
        line = f"  {label:<{width}}  {value:<{vwidth}}"
        lines.append((line + "  " + note if note else line).rstrip())
    return "\n".join(lines)
