"""Advice along a training run: read a monitor's curvature series and say whether to switch now.

A :class:`~curvlens.io.series.CurvatureSeries` (written by :class:`curvlens.hooks.CurvatureMonitor`)
holds ``lambda_max``, the learning rate, the stability ratio and other columns per record. The
latest values become an analysis summary for :func:`~curvlens.recommend.recommend`, with the
growth of ``lambda_max`` over the run as a *measured* sharpening margin. Switching is advised
only when the top candidate differs from the optimizer in use, its confidence is at least
medium, and the sharpness has settled (relative change over the last records below
:data:`SETTLED_CHANGE`): while the curvature still moves, measurements go stale and a switch
made now is made on numbers that will not hold.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from curvlens.recommend.context import OPTIMIZER_ALIASES, RecommendationContext
from curvlens.recommend.recommendation import Recommendation
from curvlens.results import register_result

__all__ = ["RunAdvice", "advise_run", "SETTLED_CHANGE"]

#: relative change of lambda_max over the last records below which the curvature has settled
SETTLED_CHANGE = 0.10
#: records looked back over for the trend
TREND_RECORDS = 3
#: smallest confidence of the top candidate for which a switch is advised
SWITCH_CONFIDENCE = 0.4
_COLUMNS = ("lambda_max", "lambda_max_residual", "trace", "trace_stderr", "negative_mass", "negative_mass_stderr",
            "lr", "preconditioned_sharpness")


@register_result("run_advice")
@dataclass(frozen=True)
class RunAdvice:
    """Whether to switch optimizers at the latest record of a run.

    Attributes:
        switch_now: True when switching to ``switch_to`` is advised now.
        current: candidate id of the optimizer in use (from the context or the series' meta), or None.
        switch_to: the top candidate, or None.
        step: training step of the latest record.
        reasons: sentences for the decision.
        summary: the summary the recommendation was made from.
        recommendation: the full recommendation at that record.
    """

    switch_now: bool
    current: str | None
    switch_to: str | None
    step: int
    reasons: tuple[str, ...]
    summary: dict
    recommendation: Recommendation

    def to_text(self) -> str:
        head = (f"At step {self.step}: switch now to {self.switch_to}" if self.switch_now else
                f"At step {self.step}: keep {self.current or 'the current optimizer'} for now")
        return "\n".join([head] + [f"  - {r}" for r in self.reasons] + ["", self.recommendation.to_text()])


def _last(col: np.ndarray) -> float | None:
    ok = np.isfinite(col)
    return float(col[ok][-1]) if ok.any() else None


def advise_run(series: Any, context: RecommendationContext | dict | None = None, **recommend_kwargs: Any) -> RunAdvice:
    """Advice at the latest record of ``series`` (a CurvatureSeries or anything with ``steps`` and ``columns``).

    Args:
        series: the run's curvature series (:func:`curvlens.io.series.load_series`).
        context: the training setup; ``optimizer`` defaults to the series' ``meta["optimizer"]``.
        recommend_kwargs: passed on to :func:`~curvlens.recommend.recommend` (``model=``, ``trial=``...).

    Example:
        >>> import numpy as np
        >>> from curvlens.io.series import CurvatureSeries
        >>> s = CurvatureSeries(steps=np.array([0, 100, 200]), columns={"lambda_max": np.array([2.0, 8.0, 8.2]),
        ...     "lr": np.array([0.1, 0.1, 0.1])}, alert_steps=np.zeros(0, dtype=np.int64),
        ...     alert_kinds=np.array([], dtype=object), alert_messages=np.array([], dtype=object),
        ...     meta={"optimizer": "SGD"})
        >>> a = advise_run(s)
        >>> a.summary["lambda_max_growth"], a.current
        (4.1, 'sgd_momentum')
    """
    from curvlens.recommend.engine import _as_context, recommend

    steps, cols = getattr(series, "steps", None), getattr(series, "columns", None)
    if steps is None or not isinstance(cols, dict):
        raise TypeError(f"series: expected a CurvatureSeries (steps and columns), got {type(series).__name__}; "
                        "load one with curvlens.io.series.load_series(path)")
    if len(steps) == 0:
        raise ValueError("series: expected at least one record, got an empty series; let the monitor record first")
    ctx = _as_context(context)
    meta = dict(getattr(series, "meta", {}) or {})
    if ctx.optimizer is None and isinstance(meta.get("optimizer"), str):
        name = meta["optimizer"].strip()
        if OPTIMIZER_ALIASES.get(name.lower().replace(" ", "")):
            ctx = dataclasses.replace(ctx, optimizer=name)
    summary: dict[str, Any] = {"curvature": str(meta.get("curvature", "hessian"))}
    for k in _COLUMNS:
        if k in cols:
            v = _last(np.asarray(cols[k], dtype=np.float64))
            if v is not None:
                summary[k] = v
    reasons: list[str] = []
    settled = True
    if "lambda_max" in cols:
        lm = np.asarray(cols["lambda_max"], dtype=np.float64)
        lm = lm[np.isfinite(lm) & (lm > 0)]
        if lm.size >= 2:
            growth = float(lm[-1] / lm[0])
            summary["lambda_max_growth"] = round(growth, 6)
            recent = lm[-min(TREND_RECORDS, lm.size):]
            change = float(abs(recent[-1] - recent[0]) / recent[0])
            settled = change < SETTLED_CHANGE
            reasons.append(f"lambda_max went from {lm[0]:.4g} to {lm[-1]:.4g} ({growth:.3g}x) over the run; over the "
                           f"last {recent.size} records it changed {100 * change:.0f}% "
                           f"({'settled' if settled else 'still moving'}, threshold {100 * SETTLED_CHANGE:.0f}%)")
    if "lr" in summary and ctx.lr is None:
        ctx = dataclasses.replace(ctx, lr=summary["lr"])
    rec = recommend(summary, ctx, **recommend_kwargs)
    current, top = ctx.optimizer_id, rec.top
    switch_to = top.optimizer if top is not None else None
    switch = False
    if top is None:
        reasons.append("no candidate survived the constraints: keep the current optimizer")
    elif current == switch_to:
        reasons.append(f"the top candidate is the optimizer in use ({top.label}): no switch")
    elif top.confidence < SWITCH_CONFIDENCE:
        reasons.append(f"the top candidate {top.label} has confidence {top.confidence:.2f} < {SWITCH_CONFIDENCE}: "
                       "not enough to pay for a switch (re-tuning, lost optimizer state)")
    elif not settled:
        reasons.append(f"the curvature is still changing: wait for it to settle before switching to {top.label}")
    else:
        switch = True
        reasons.append(f"{top.label} ranks first with confidence {top.confidence:.2f} on settled curvature"
                       + (f", ahead of the current {current}" if current else ""))
    ratio = None
    if "lambda_max" in summary and ctx.lr is not None and current not in ("adamw", "diag_hessian"):
        ratio = summary["lambda_max"] * ctx.lr / (2 + 2 * ctx.effective_momentum)
        if ratio > 1:
            reasons.append(f"lambda_max {summary['lambda_max']:.4g} is above the stability threshold at lr "
                           f"{ctx.lr:.3g} (ratio {ratio:.2f}): lower the lr now whatever the optimizer")
    step = int(steps[-1])
    return RunAdvice(switch_now=switch, current=current, switch_to=switch_to, step=step, reasons=tuple(reasons),
                     summary={k: (v if not isinstance(v, float) or math.isfinite(v) else None)
                              for k, v in summary.items()}, recommendation=rec)
