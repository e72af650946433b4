"""The recommender engine: run the rule table, score candidates, derive hyperparameters."""

from __future__ import annotations

import dataclasses
import logging
import math
import statistics
from collections.abc import Mapping
from typing import Any, Sequence

from curvlens.recommend import thresholds as T
from curvlens.recommend.context import RecommendationContext
from curvlens.recommend.evidence import CANDIDATES, Evidence, Measurements
from curvlens.recommend.hyperparams import initial_damping, suggest
from curvlens.recommend.recommendation import Recommendation, RankedCandidate, RejectedCandidate
from curvlens.recommend.rules import RULES, Rule, run_rule
from curvlens.recommend.rules_curvature import _CORE, _negative_level
from curvlens.recommend.build import runnable as _runnable
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
    summary = dict(summary)
    cond = getattr(analysis, "conditioning", None)
    if cond is not None and not isinstance(analysis, Mapping):  # keys an older summary() lacks
        for key in ("lambda_min_residual", "lambda_min_status", "lambda_min_upper_bound",
                    "condition_number_lower_bound"):
            if summary.get(key) is None and getattr(cond, key, None) is not None:
                summary[key] = getattr(cond, key)
    return summary


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
        text = ("rejected: " if e.veto else "for: " if e.weight > 0 else "against: " if e.weight < 0 else "note: ") \
            + e.reason
        if e.reason not in seen:
            seen.add(e.reason)
            out.append(text)
    return out


def _check_trial(trial: Any, model: Any, loss_fn: Any, data: Any) -> float | None:
    if trial is None:
        return None
    if isinstance(trial, str):
        from curvlens.recommend.context import parse_duration

        try:
            trial = parse_duration(trial)
        except ValueError:
            raise ValueError(f"trial: expected seconds or a duration like '30s', got {trial!r}; pass e.g. "
                             "trial=30") from None
    if isinstance(trial, bool) or not isinstance(trial, (int, float)) or not math.isfinite(trial) or trial <= 0:
        raise ValueError(f"trial: expected a positive number of seconds, got {trial!r}; pass e.g. trial=30")
    if model is None or loss_fn is None or data is None:
        raise ValueError("trial: expected model=, loss_fn= and data= with it, got "
                         f"{', '.join(k for k, v in (('model', model), ('loss_fn', loss_fn), ('data', data)) if v is None)}"
                         " missing; pass the training problem to run trials on")
    return float(trial)


def recommend(analysis: Any, context: RecommendationContext | Mapping | None = None, *,
              rules: Sequence[Rule] = RULES, model: Any = None, loss_fn: Any = None, data: Any = None,
              trial: float | str | None = None, trial_candidates: int = 3, seed: int = 0) -> Recommendation:
    """Recommend an optimizer from curvature measurements and the training context.

    Every rule of the table (:data:`curvlens.recommend.rules.RULES`) reads the analysis summary
    and the context and adds evidence for or against SGD+momentum, Adam/AdamW, a
    diagonal-Hessian method, L-BFGS, K-FAC, Newton-CG and saddle-free Newton, each with a reason
    that quotes the measured number and the threshold (:mod:`curvlens.recommend.thresholds`).
    Candidates are ranked by prior + evidence; hard constraints (memory, unsupported layers)
    reject them; candidates curvlens cannot build come after every runnable one and say why.
    Missing or non-finite measurements lower the confidence and are listed in ``missing``;
    they never raise.

    With ``model``, ``loss_fn`` and ``data`` the recommender also measures what a summary lacks
    (:func:`~curvlens.recommend.probe.probe_measurements`: the gradient time for the time model,
    the curvature along Adam's step for its learning rate) and times one step of every runnable
    candidate with its suggested hyperparameters (``step_seconds_<candidate>``, the time model of
    the ``step_cost`` rule). With ``trial=seconds`` it then runs
    the top ``trial_candidates`` runnable candidates (and any whose score ties the last of them within
    the step timings' resolution, :func:`trial_set`) over a small lr bracket each
    (:func:`~curvlens.recommend.trials.run_trials`) and re-ranks them by measured loss decrease
    per second down to a common deep loss (:mod:`~curvlens.recommend.trial_rank`); the user's
    model comes back bit-identical and the global RNG is not touched.

    Args:
        analysis: an ``AnalysisResult`` (anything with ``.summary()``) or a Mapping with the
            summary keys (``lambda_max``, ``condition_number``, ``negative_mass``,
            ``critical_batch_lambda_max``, ``gradient_noise_scale``, ``hvp_cost``, ...); a
            ``summary.json`` document (with a ``"summary"`` entry) is accepted too.
        context: what cannot be measured: a :class:`RecommendationContext`, a dict of its
            fields, or None.
        rules: the rule table to apply (default: all rules).
        model, loss_fn, data: the training problem (optional; required with ``trial``).
        trial: CPU seconds for trial runs (a number or a string like ``"30s"``), or None.
        trial_candidates: how many of the top runnable candidates to try.
        seed: seed of the trial runs (mini-batches, dropout, optimizers' own draws).

    Returns:
        A :class:`Recommendation` (ranked ``candidates``, ``rejected``, ``warnings``, ``missing``,
        ``trials``).

    Example:
        >>> rec = recommend({"lambda_max": 50.0, "lambda_min": 0.001, "num_params": 1000},
        ...                 RecommendationContext(batch_size=1000, dataset_size=1000))
        >>> rec.top.optimizer
        'lbfgs'
    """
    timer = RunTimer()
    seconds = _check_trial(trial, model, loss_fn, data)
    if isinstance(trial_candidates, bool) or not isinstance(trial_candidates, int) or trial_candidates < 1:
        raise ValueError(f"trial_candidates: expected a positive int, got {trial_candidates!r}; pass e.g. 3")
    summary = as_summary(analysis)
    ctx = _as_context(context)
    if model is not None and loss_fn is not None and data is not None:
        from curvlens.recommend.probe import probe_measurements

        summary.update({k: v for k, v in probe_measurements(model, loss_fn, data).items() if summary.get(k) is None})
        summary.update(_measure_kfac_step(summary, ctx, model, loss_fn, data))
        summary.update(_measure_steps(summary, ctx, model, loss_fn, data))
    m = Measurements(summary)
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
    can = {o: _runnable(o) for o in alive}
    alive.sort(key=lambda o: (not can[o][0], -scores[o], order.index(o)))

    quality = max(0.5, 1.0 - 0.1 * len(m.nonfinite & set(_CORE)))
    if any(m.num(k) is not None and m.flag(f"{k}_certified") is False for k in ("lambda_max", "lambda_min")):
        quality *= 0.85
    base = (0.3 + 0.7 * _coverage(m, ctx)) * quality
    ranked = [o for o in alive if can[o][0]] or alive
    best = scores[ranked[0]] if ranked else 0.0
    gap = best - scores[ranked[1]] if len(ranked) > 1 else 1.0
    candidates = []
    for i, o in enumerate(alive):
        decisive = 0.5 + 0.5 * (1 - math.exp(-gap / 0.5)) if i == 0 else 0.5 * math.exp(-max(best - scores[o], 0))
        hp, cost, notes = suggest(o, m, ctx)
        ok, how = can[o]
        candidates.append(RankedCandidate(
            optimizer=o, label=CANDIDATES[o], score=round(scores[o], 4),
            confidence=round(base * decisive, 2) if ok else 0.0, cost_per_step=round(cost, 3), hyperparameters=hp,
            reasons=tuple(_reasons(by_opt[o]) + notes + ([] if ok else [f"note: {how}"])), runnable=ok,
            build_note=how))
    trials: tuple = ()
    if seconds is not None:
        candidates, trials = _rerank_by_trials(candidates, model, loss_fn, data, seconds, ctx, m,
                                               trial_candidates, seed)
    confidence = candidates[0].confidence if candidates else 0.0
    status = (f"applied {len(rules)} rules; {len(candidates)} candidates ranked, {len(rejected)} rejected; "
              f"{len(missing)} inputs missing" + (" (see missing to raise confidence)" if missing else "")
              + (f"; re-ranked by {len(trials)} trial(s)" if trials else ""))
    return Recommendation(candidates=tuple(candidates), rejected=tuple(rejected), warnings=tuple(warnings),
                          missing=tuple(missing), confidence=confidence, context=dataclasses.asdict(ctx),
                          info=timer.info(True, status), trials=trials)


def _measure_kfac_step(summary: dict, ctx: RecommendationContext, model: Any, loss_fn: Any, data: Any) -> dict:
    """K-FAC's trusted first step and ``lambda_max(P G)`` (:func:`~curvlens.recommend.kfac_step.kfac_model_step`)
    at the damping the recommender suggests and the training batch size, when K-FAC is runnable and the
    summary lacks them."""
    from curvlens.recommend.kfac_step import kfac_model_step

    if summary.get("kfac_trusted_step") is not None or not _runnable("kfac")[0]:
        return {}
    m = Measurements(summary)
    damping = initial_damping(m, indefinite_ok=True)
    if damping is None:
        return {}
    full = m.full_batch(ctx.batch_size, ctx.dataset_size)
    try:
        return kfac_model_step(model, loss_fn, data, damping=damping,
                               batch_size=None if full or ctx.batch_size is None else ctx.batch_size)
    except (RuntimeError, ValueError, TypeError) as err:  # e.g. a loss K-FAC cannot sample from
        logger.debug("K-FAC step not measured: %s", err)
        return {}


def _measure_steps(summary: dict, ctx: RecommendationContext, model: Any, loss_fn: Any, data: Any) -> dict:
    """``step_seconds_<candidate>``: the measured CPU time of one step of every runnable candidate
    with its suggested hyperparameters, at the training batch size, timed in interleaved rounds
    against an SGD step (:func:`~curvlens.recommend.timing.interleaved_step_seconds`; the time model
    of :func:`~curvlens.recommend.rules_practical.rule_step_cost`); values already present are kept."""
    from curvlens.recommend.timing import interleaved_step_seconds

    m = Measurements(summary)
    full = m.full_batch(ctx.batch_size, ctx.dataset_size)
    todo = [o for o in CANDIDATES if summary.get(f"step_seconds_{o}") is None and _runnable(o)[0]]
    if not todo:
        return {}
    specs = {o: suggest(o, m, ctx)[0] for o in dict.fromkeys(["sgd_momentum", *todo])}
    info: dict = {}
    sec = interleaved_step_seconds(specs, model, loss_fn, data,
                                   batch_size=None if full or ctx.batch_size is None else ctx.batch_size, out=info)
    res = {f"step_seconds_{o}": v for o, v in sec.items() if o in todo and v > 0}
    acc = [a for a in info.get("accepted_steps", {}).get("lbfgs", []) if a > 0]
    if acc and summary.get("lbfgs_accepted_step") is None:  # the line search's verdict on the first trial step
        res["lbfgs_accepted_step"] = float(statistics.median(acc))
        res["lbfgs_first_step_kept"] = sum(abs(a - 1.0) < 1e-9 for a in acc) / len(acc)
        res["lbfgs_first_step_lr"] = float(specs["lbfgs"]["lr"])
    return res


def _rates_to_common_level(trials) -> tuple[dict[str, float], dict[str, tuple]]:
    """Loss decrease per second of each candidate's best run down to one common loss, the comparison
    level of the lowest final loss among them (:mod:`curvlens.recommend.trial_rank`): runs of
    different lengths and costs compare by the time they need to get equally deep. Also the sort
    keys (a run that never reaches the level ranks after those that do, by its final loss)."""
    import numpy as np

    from curvlens.recommend.trial_rank import comparison_level, rank_key

    best = {}
    for t in trials:
        i = int(np.where(t.lrs == t.best_lr)[0][0])
        sel = t.run_index == i
        best[t.optimizer] = ([float(x) for x in t.seconds[sel]], [float(x) for x in t.losses[sel]],
                             bool(t.diverged[i]), t.initial_loss)
    finals = [y[-1] for _, y, d, _ in best.values() if not d and y and math.isfinite(y[-1])]
    l0 = next(iter(best.values()))[3] if best else 0.0
    level = comparison_level(l0, min(finals)) if finals else -math.inf
    keys = {k: rank_key(x, y, level, d) for k, (x, y, d, _) in best.items()}
    rates = {k: (max(l0 - level, 0.0) / key[1] if key[0] == 0 and 0 < key[1] < math.inf else 0.0)
             for k, key in keys.items()}
    return rates, keys


def trial_set(candidates: Sequence[RankedCandidate], k: int) -> list[RankedCandidate]:
    """The candidates a trial runs: the top ``k`` runnable ones, and any further runnable one whose score
    ties the ``k``-th within :data:`~curvlens.recommend.thresholds.TRIAL_TIE_MARGIN` (a difference the
    step timings cannot resolve)."""
    ok = [c for c in candidates if c.runnable]
    if len(ok) <= k:
        return ok
    edge = ok[k - 1].score - T.TRIAL_TIE_MARGIN
    return ok[:k] + [c for c in ok[k:] if c.score >= edge]


def _rerank_by_trials(candidates, model, loss_fn, data, seconds, ctx, m, k, seed):
    """Run the top ``k`` runnable candidates; order them by measured loss decrease per second to a common
    deep loss and adopt each one's best lr. The rest keep their order after them."""
    from curvlens.recommend.trials import run_trials

    tried = trial_set(candidates, k)
    if not tried:
        return candidates, ()
    full = m.full_batch(ctx.batch_size, ctx.dataset_size)
    trials = run_trials(tried, model, loss_fn, data, seconds=seconds, batch_size=None if full else ctx.batch_size,
                        gradient_seconds=m.num("gradient_seconds"), seed=seed)
    by = {t.optimizer: t for t in trials}
    common, keys = _rates_to_common_level(trials)
    order = sorted(tried, key=lambda c: keys[c.optimizer])
    top_rate = common[order[0].optimizer]
    out = []
    for i, c in enumerate(order):
        t = by[c.optimizer]
        hp = dict(c.hyperparameters)
        note = f"trial: {t.summary_line()}"
        if "lr" in hp and hp["lr"] is not None and t.best_lr != hp["lr"] and not all(t.diverged):
            hp["lr"] = t.best_lr
            note += f"; lr set to the trial's best {t.best_lr:.3g}"
        rel = common[c.optimizer] / top_rate if top_rate > 0 else 0.0
        conf = round(min(0.95, 0.5 + 0.45 * (1 - rel if i == 0 and len(order) > 1 else 1.0)) if i == 0
                     else 0.5 * rel, 2)
        if i == 0 and len(order) > 1:
            second = common[order[1].optimizer]
            conf = round(min(0.95, 0.55 + 0.4 * (1 - second / top_rate)) if top_rate > 0 else 0.3, 2)
        out.append(dataclasses.replace(c, hyperparameters=hp, confidence=conf, reasons=(note,) + c.reasons))
    rest = [c for c in candidates if c not in tried]
    return out + rest, trials
