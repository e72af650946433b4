"""The recommender engine: run the rule table, score candidates, derive hyperparameters."""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping
from typing import Any, Sequence

from curvlens.recommend import thresholds as T
from curvlens.recommend.context import RecommendationContext
from curvlens.recommend.evidence import CANDIDATES, Evidence, Measurements
from curvlens.recommend.hyperparams import suggest
from curvlens.recommend.recommendation import Recommendation, RankedCandidate, RejectedCandidate
from curvlens.recommend.rules import RULES, Rule, run_rule
from curvlens.recommend.rules_curvature import _CORE, _negative_level
from curvlens.results import RunTimer

logger = logging.getLogger(__name__)


def as_summary(analysis: Any) -> dict[str, Any]:
    """The flat summary dict of ``analysis`` (an object with ``.summary()``, a summary Mapping,
    or a ``summary.json`` document with a ``"summary"`` entry)."""
    if callable(getattr(analysis, "summary", None)) and not isinstance(analysis, Mapping):
        summary = analysis.summary()
    else:
        summary = analysis
    if not isinstance(summary, Mapping):
        raise TypeError(
            f"analysis: expected an AnalysisResult (with .summary()) or a Mapping of summary keys, got "
            f"{type(analysis).__name__}; pass the result of analyze(...) or json.load() of summary.json"
        )
    if isinstance(summary.get("summary"), Mapping):  # a summary.json document
        summary = summary["summary"]
    bad = [k for k in summary if not isinstance(k, str)]
    if bad:
        raise TypeError(f"analysis: expected str keys in the summary, got {bad[0]!r}")
    return dict(summary)


def _as_context(context: Any) -> RecommendationContext:
    if context is None:
        return RecommendationContext()
    if isinstance(context, RecommendationContext):
        return context
    if isinstance(context, Mapping):
        names = {f.name for f in dataclasses.fields(RecommendationContext)}
        unknown = sorted(set(context) - names)
        if unknown:
            raise ValueError(f"context: unknown field(s) {', '.join(map(str, unknown))}; expected some of "
                             f"{', '.join(sorted(names))}")
        return RecommendationContext(**context)
    raise TypeError(f"context: expected a RecommendationContext, a dict of its fields or None, got "
                    f"{type(context).__name__}")


def _coverage(m: Measurements, ctx: RecommendationContext) -> float:
    """Fraction of the key inputs that are available."""
    have = [
        m.num("lambda_max") is not None,
        m.condition() is not None,
        _negative_level(m) is not None or m.text("curvature") in ("ggn", "fisher"),
        m.critical_batch("lambda_max") is not None,
        m.num("gradient_noise_scale") is not None,
        m.num("hvp_cost") is not None,
        ctx.batch_size is not None,
    ]
    return sum(have) / len(have)


def _reasons(evidence: Sequence[Evidence]) -> list[str]:
    seen: set[str] = set()
    out = []
    for e in sorted(evidence, key=lambda e: (not e.veto, -abs(e.weight))):
        text = ("rejected: " if e.veto else "for: " if e.weight > 0 else "against: ") + e.reason
        if e.reason not in seen:
            seen.add(e.reason)
            out.append(text)
    return out


def recommend(analysis: Any, context: RecommendationContext | Mapping | None = None, *,
              rules: Sequence[Rule] = RULES) -> Recommendation:
    """Recommend an optimizer from curvature measurements and the training context.

    Every rule of the table (:data:`curvlens.recommend.rules.RULES`) reads the analysis summary
    and the context and adds evidence for or against SGD+momentum, Adam/AdamW, a
    diagonal-Hessian method, L-BFGS, K-FAC and Newton-CG, each with a reason that quotes the
    measured number and the threshold (:mod:`curvlens.recommend.thresholds`). Candidates are
    ranked by prior + evidence; hard constraints (memory, unsupported layers) reject them.
    Missing or non-finite measurements lower the confidence and are listed in ``missing``;
    they never raise.

    Args:
        analysis: an ``AnalysisResult`` (anything with ``.summary()``) or a Mapping with the
            summary keys (``lambda_max``, ``condition_number``, ``negative_mass``,
            ``critical_batch_lambda_max``, ``gradient_noise_scale``, ``hvp_cost``, ...); a
            ``summary.json`` document (with a ``"summary"`` entry) is accepted too.
        context: what cannot be measured: a :class:`RecommendationContext`, a dict of its
            fields, or None.
        rules: the rule table to apply (default: all rules).

    Returns:
        A :class:`Recommendation` (ranked ``candidates``, ``rejected``, ``warnings``, ``missing``).

    Example:
        >>> rec = recommend({"lambda_max": 50.0, "lambda_min": 0.001, "num_params": 1000},
        ...                 RecommendationContext(batch_size=1000, dataset_size=1000))
        >>> rec.top.optimizer
        'lbfgs'
    """
    timer = RunTimer()
    m = Measurements(as_summary(analysis))
    ctx = _as_context(context)
    evidence: list[Evidence] = []
    warnings: list[str] = []
    missing: list[str] = []
    for rule in rules:
        out = run_rule(rule, m, ctx)
        logger.debug("rule %s: %d evidence, %d warnings, %d missing", rule.name, len(out.evidence),
                     len(out.warnings), len(out.missing))
        evidence += out.evidence
        warnings += [w for w in out.warnings if w not in warnings]
        missing += [s for s in out.missing if s not in missing]

    scores = {o: T.PRIOR_SCORE[o] + sum(e.weight for e in evidence if e.optimizer == o) for o in CANDIDATES}
    by_opt = {o: [e for e in evidence if e.optimizer == o] for o in CANDIDATES}
    rejected, alive = [], []
    for o in CANDIDATES:
        vetoed = any(e.veto for e in by_opt[o])
        if vetoed or scores[o] < T.REJECT_SCORE:
            reasons = [r for r in _reasons(by_opt[o]) if not r.startswith("for: ")]
            if not vetoed:
                reasons.append(f"score {scores[o]:+.2f} below the rejection threshold {T.REJECT_SCORE:+.2f}")
            rejected.append(RejectedCandidate(o, CANDIDATES[o], tuple(reasons)))
        else:
            alive.append(o)
    order = list(CANDIDATES)
    alive.sort(key=lambda o: (-scores[o], order.index(o)))

    quality = max(0.5, 1.0 - 0.1 * len(m.nonfinite & set(_CORE)))
    if any(m.num(k) is not None and m.flag(f"{k}_certified") is False for k in ("lambda_max", "lambda_min")):
        quality *= 0.85
    base = (0.3 + 0.7 * _coverage(m, ctx)) * quality
    best = scores[alive[0]] if alive else 0.0
    gap = best - scores[alive[1]] if len(alive) > 1 else 1.0
    candidates = []
    for i, o in enumerate(alive):
        decisive = 0.5 + 0.5 * (1 - math.exp(-gap / 0.5)) if i == 0 else 0.5 * math.exp(-(best - scores[o]))
        hp, cost, notes = suggest(o, m, ctx)
        candidates.append(RankedCandidate(
            optimizer=o, label=CANDIDATES[o], score=round(scores[o], 4), confidence=round(base * decisive, 2),
            cost_per_step=round(cost, 3), hyperparameters=hp, reasons=tuple(_reasons(by_opt[o]) + notes)))
    confidence = candidates[0].confidence if candidates else 0.0
    status = (f"applied {len(rules)} rules; {len(candidates)} candidates ranked, {len(rejected)} rejected; "
              f"{len(missing)} inputs missing" + (" (see missing to raise confidence)" if missing else ""))
    return Recommendation(candidates=tuple(candidates), rejected=tuple(rejected), warnings=tuple(warnings),
                          missing=tuple(missing), confidence=confidence, context=dataclasses.asdict(ctx),
                          info=timer.info(True, status))
