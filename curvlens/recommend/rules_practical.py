"""Rules that weigh noise, cost and the training setup (batch, memory, layers, phase, time).

Same signature as :mod:`curvlens.recommend.rules_curvature`:
``rule(m: Measurements, ctx: RecommendationContext, out: Outcome) -> None``.
"""

from __future__ import annotations

import math

from curvlens.recommend import thresholds as T
from curvlens.recommend.context import RecommendationContext
from curvlens.recommend.evidence import CANDIDATES, SECOND_ORDER, Measurements, Outcome, fmt

#: layers without parameters: ignored by the K-FAC layer check
PARAMETER_FREE_LAYERS = frozenset({
    "relu", "gelu", "silu", "tanh", "sigmoid", "softmax", "logsoftmax", "dropout", "identity", "flatten",
    "maxpool1d", "maxpool2d", "maxpool3d", "avgpool1d", "avgpool2d", "avgpool3d", "adaptiveavgpool2d",
    "leakyrelu", "elu", "softplus", "sequential",
})


def _full_batch(m: Measurements, ctx: RecommendationContext) -> bool:
    return m.full_batch(ctx.batch_size, ctx.dataset_size)


def rule_consistency(m: Measurements, ctx: RecommendationContext, out: Outcome) -> None:
    """Flag context values that contradict what the analysis was run with."""
    n = m.num("num_samples")
    if ctx.batch_size is not None and n is not None and ctx.batch_size > n:
        out.warn(f"batch_size {ctx.batch_size} is larger than the {int(n)} samples the analysis used: noise "
                 "numbers are extrapolated; re-run analyze on at least batch_size samples, or check batch_size")
    for key in ("lr", "momentum"):
        a, c = m.num(key), getattr(ctx, key)
        if a is not None and c is not None and not math.isclose(a, c, rel_tol=1e-2, abs_tol=1e-12):
            out.warn(f"context {key}={fmt(c)} differs from {key}={fmt(a)} recorded in the analysis; the context "
                     "value is used: pass the lr you actually train with")


def rule_curvature_noise(m: Measurements, ctx: RecommendationContext, out: Outcome) -> None:
    """Second-order methods need curvature estimates that are reliable at the training batch.

    The relative standard error of lambda_max measured on minibatches of size B (the noise
    study) must be at most MAX_CURVATURE_RSTDERR; the critical batch is where it gets there.
    """
    if ctx.batch_size is None:
        out.ask("batch_size", "curvature noise at the training batch size decides whether K-FAC, Newton-CG "
                "or L-BFGS can use minibatch curvature")
        return
    if _full_batch(m, ctx):  # the limit of "batch >= critical batch": no sampling noise at all
        reason = (f"full batch (batch {ctx.batch_size} covers every sample): curvature estimates (K-FAC factors, "
                  "curvature products) carry no mini-batch sampling noise")
        out.support(("kfac", "newton_cg"), 0.5, reason)
        out.support(("lbfgs", "diag_hessian"), 0.2, reason)
        return
    crit = m.critical_batch("lambda_max")
    if crit is None:
        out.need("noise study (noise_batch_sizes, noise_rstderr_lambda_max)",
                 "tells whether curvature estimates are reliable at your batch size")
        return
    bc, source = crit
    b = ctx.batch_size
    at = m.noise_rstderr_at(b, "lambda_max")
    err = f" (relative error of l_max {100 * at[0]:.0f}% at B={b})" if at is not None else ""
    if at is not None and at[1] == b and (at[0] <= T.MAX_CURVATURE_RSTDERR) == (b < bc):
        # the study measured this very batch and its error contradicts the critical-batch estimate (a
        # summary across batch sizes): the measurement at the training batch decides
        ok = at[0] <= T.MAX_CURVATURE_RSTDERR
        bc = b if ok else b + 1
        source += (f"; measured at B={b} itself: {100 * at[0]:.1f}% {'<=' if ok else '>'} "
                   f"{100 * T.MAX_CURVATURE_RSTDERR:.0f}%, which decides over the estimate ~{crit[0]:.0f}")
        err = ""
    if b < bc:
        reason = (f"batch {b} is below the curvature critical batch size ~{bc:.0f}{err}, where the relative error "
                  f"reaches {100 * T.MAX_CURVATURE_RSTDERR:.0f}% [{source}]: curvature estimates at this batch size "
                  "are too noisy for K-FAC or Newton-CG")
        out.oppose(("kfac", "newton_cg"), 1.0, reason)
        out.oppose("lbfgs", 1.2, reason.replace("K-FAC or Newton-CG", "L-BFGS (noisy curvature pairs)"))
        out.oppose("saddle_free_newton", 1.0, reason.replace("K-FAC or Newton-CG", "saddle-free Newton"))
        out.oppose("diag_hessian", 0.3, reason.replace("K-FAC or Newton-CG", "a Hessian-diagonal estimate"))
    else:
        reason = (f"batch {b} is at or above the curvature critical batch size ~{bc:.0f}{err} [{source}]: "
                  f"minibatch curvature is reliable to {100 * T.MAX_CURVATURE_RSTDERR:.0f}%")
        out.support(("kfac", "newton_cg"), 0.5, reason)
        out.support(("lbfgs", "diag_hessian"), 0.2, reason)


def rule_gradient_noise(m: Measurements, ctx: RecommendationContext, out: Outcome) -> None:
    """Batch size against the gradient noise scale B_noise = tr(Sigma)/|g|^2 (McCandlish et al. 2018).

    Far below B_noise steps are noise-limited (first-order methods are compute-efficient); between
    that and B_noise preconditioning hardly cuts the steps, so SGD-momentum's cheaper step is
    favoured; above it they are curvature-limited and preconditioning pays off (Zhang et al. 2019). Full batch is
    deterministic: line-search methods (L-BFGS) are reliable, and a full batch at or above B_noise
    is curvature-limited like any batch that large (a full batch cannot be noise-limited).
    """
    if ctx.batch_size is None:
        return  # asked for by rule_curvature_noise
    b = ctx.batch_size
    if _full_batch(m, ctx):
        reason = (f"full batch (batch {b} covers all {int(m.num('num_samples') or ctx.dataset_size)} samples): "
                  "gradients are exact, so deterministic methods with line searches converge reliably")
        out.support("lbfgs", 1.2, reason)
        out.support("newton_cg", 0.6, reason)
        out.support("saddle_free_newton", 0.3, reason)
        _gradient_noise_scale(m, b, out, full=True)
        return
    _gradient_noise_scale(m, b, out)
    _minibatch_line_search(out, b, int(m.num("num_samples") or ctx.dataset_size or 0))


def _gradient_noise_scale(m: Measurements, b: int, out: Outcome, *, full: bool = False) -> None:
    bn = m.num("gradient_noise_scale")
    if bn is None or bn <= 0:
        if not full:
            out.need("gradient_noise_scale", "compares your batch with the batch beyond which curvature pays off")
        return
    frac = b / bn
    if frac < T.NOISE_DOMINATED_FRACTION and not full:
        reason = (f"batch {b} is {fmt(frac)} of the gradient noise scale {fmt(bn)} (< {T.NOISE_DOMINATED_FRACTION}): "
                  "steps are noise-limited, first-order methods use compute best")
        out.support("sgd_momentum", 0.6, reason)
        out.support("adamw", 0.3, reason)
        out.oppose(SECOND_ORDER, 0.5, reason)
    elif frac >= T.CURVATURE_LIMITED_FRACTION:
        reason = (f"batch {b} is {fmt(frac)} x the gradient noise scale {fmt(bn)} (>= {T.CURVATURE_LIMITED_FRACTION}): "
                  "steps are curvature-limited, preconditioning keeps paying off")
        out.support("kfac", 0.6, reason)
        out.support("newton_cg", 0.4, reason)
        out.support(("adamw", "diag_hessian"), 0.3, reason)
    elif not full:
        _below_critical_batch(m, b, bn, frac, out)


def _below_critical_batch(m: Measurements, b: int, bn: float, frac: float, out: Outcome) -> None:
    """A mini-batch below the gradient noise scale but not far below it.

    Below the critical batch (~B_noise) the steps a method needs to reach a loss depend on the
    batch, not on its preconditioning: SGD-momentum, Adam and K-FAC need about the same number
    (Zhang et al. 2019, noisy quadratic model; McCandlish et al. 2018), so the cheaper step wins
    a fixed-time race. Of the first-order methods SGD-momentum has the cheaper step: Adam's update
    is SGD-momentum's plus a second-moment update and a division per weight, never fewer
    operations. The measured step times (``step_seconds_<candidate>``) are stated as the size of
    that difference. Curvature methods are left to the rules on their own cost and on the
    curvature noise (their factors may still pay back at this batch).
    """
    sgd, adam = m.num("step_seconds_sgd_momentum"), m.num("step_seconds_adamw")
    if sgd is not None and adam is not None and sgd > 0 and adam > 0:
        how = f"measured: SGD {fmt(sgd, 3)} s, Adam {fmt(adam, 3)} s per step"
    else:
        how = "one gradient per step; Adam adds a second-moment update and a division per weight"
    reason = (f"batch {b} is {fmt(frac)} of the gradient noise scale {fmt(bn)} ({T.NOISE_DOMINATED_FRACTION} to "
              f"{T.CURVATURE_LIMITED_FRACTION}): below the critical batch first-order methods need about the same "
              f"steps with or without preconditioning (Zhang et al. 2019), so SGD-momentum's cheaper step wins "
              f"({how})")
    if m.num("kfac_progress_ratio") is not None:
        reason += "; K-FAC's progress at this batch was measured and is weighed by its own rule (kfac_progress)"
    out.support("sgd_momentum", T.BELOW_CRITICAL_CHEAPER_STEP, reason)


def _minibatch_line_search(out: Outcome, b: int, total: int) -> None:
    out.oppose("lbfgs", 0.8, f"mini-batch (batch {b} of {total or 'more'} samples): L-BFGS line searches and "
               "curvature pairs need a deterministic loss; use it at full batch")


def rule_memory(m: Measurements, ctx: RecommendationContext, out: Outcome) -> None:
    """Optimizer state must fit in the memory budget next to activations and data."""
    p = m.num("num_params")
    if ctx.memory_bytes is None:
        out.ask("memory_bytes", "rejects optimizers whose state does not fit (L-BFGS history, K-FAC factors)")
        return
    if p is None:
        out.need("num_params", "needed to size each optimizer's state against the memory budget")
        return
    budget, unit = float(ctx.memory_bytes), p * ctx.bytes_per_param
    if unit > budget:
        out.warn(f"memory budget {_gb(budget)} is smaller than the parameters themselves ({_gb(unit)}): "
                 "check --memory (units) or bytes_per_param")
    for opt, copies in T.MEMORY_COPIES.items():
        floor = 3.0 + 2 * 3 if opt == "lbfgs" else copies  # L-BFGS can shrink its history to 3
        need = copies * unit
        if floor * unit > budget:
            out.veto(opt, f"{CANDIDATES[opt]} needs ~{_gb(floor * unit)} of state ({floor:.0f} copies of "
                     f"{fmt(p)} params) > memory budget {_gb(budget)}")
        elif need > T.MEMORY_TIGHT_FRACTION * budget:
            out.oppose(opt, 0.5, f"{CANDIDATES[opt]} state ~{_gb(need)} ({copies:.0f} copies of the params) is "
                       f"{100 * need / budget:.0f}% > {100 * T.MEMORY_TIGHT_FRACTION:.0f}% of the memory budget "
                       f"{_gb(budget)}, leaving little for activations")


def _gb(x: float) -> str:
    return f"{x / 1e9:.3g} GB" if x >= 1e8 else f"{x / 1e6:.3g} MB"


def rule_layer_support(m: Measurements, ctx: RecommendationContext, out: Outcome) -> None:
    """K-FAC needs Kronecker-factored layers (Linear, Conv; Martens & Grosse 2015, Grosse & Martens 2016)."""
    if ctx.layer_types is None:
        out.ask("layer_types", "K-FAC only supports some layers (linear, conv)")
        return
    kinds = set(ctx.layer_types)
    supported = sorted(kinds & T.KFAC_SUPPORTED_LAYERS)
    unsupported = sorted(kinds - T.KFAC_SUPPORTED_LAYERS - PARAMETER_FREE_LAYERS)
    ok = ", ".join(sorted(T.KFAC_SUPPORTED_LAYERS))
    if not supported:
        out.veto("kfac", f"no K-FAC-supported layer among {', '.join(sorted(kinds))} (supported: {ok})")
    elif unsupported:
        out.oppose("kfac", 0.4, f"K-FAC covers {', '.join(supported)} but not {', '.join(unsupported)}, whose "
                   "parameters fall back to a first-order update")
    else:
        out.support("kfac", 0.3, f"every parameterized layer ({', '.join(supported)}) is supported by K-FAC")


def rule_product_cost(m: Measurements, ctx: RecommendationContext, out: Outcome) -> None:
    """Expensive curvature products hurt methods that need many per step (Newton-CG).

    Newton-CG's products are sequential (CG applies one vector at a time): their cost is the
    probe's ``sequential_hvp_cost`` when measured; an analysis' ``hvp_cost`` may come from
    products batched together, cheaper per vector.
    """
    c = m.num("hvp_cost")
    if c is None or c <= 0:
        out.need("hvp_cost", f"the cost of a curvature product sets per-step cost and refresh intervals (assumed "
                 f"{T.DEFAULT_HVP_COST} gradients)")
        return
    seq = m.num("sequential_hvp_cost")
    for opt, cost, how in (("newton_cg", seq if seq is not None and seq > 0 else c,
                            " one vector at a time, as CG applies it" if seq is not None and seq > 0 else ""),
                           ("diag_hessian", c, "")):
        if cost > T.HVP_COST_EXPENSIVE:
            out.oppose(opt, 0.6 if opt == "newton_cg" else 0.3,
                       f"a curvature product costs {fmt(cost)} gradients{how} (> {T.HVP_COST_EXPENSIVE}): methods "
                       "that need many products per step are slow")
        elif opt == "newton_cg":
            out.support(opt, 0.2, f"a curvature product costs {fmt(cost)} gradients{how} (<= "
                        f"{T.HVP_COST_EXPENSIVE}): CG iterations are affordable")


def rule_phase(m: Measurements, ctx: RecommendationContext, out: Outcome) -> None:
    """Training phase: early curvature changes fast; fine-tuning favours AdamW with a small lr.

    Early on, curvature measured at earlier steps describes a landscape that has moved; how fast
    that hurts each curvature method (L-BFGS's pair history, K-FAC's averaged factors, Newton-CG's
    fresh products) is not measured, so the rule favours the methods that use no curvature and
    leaves the curvature methods' order to the measurements.
    """
    if ctx.phase is None:
        out.ask("phase", "early training, mid training and fine-tuning favour different optimizers")
        return
    if ctx.phase == "early":
        reason = ("phase 'early': curvature changes quickly, so curvature estimates go stale; first-order methods "
                  "use none")
        out.support(("sgd_momentum", "adamw"), 0.3, reason)
    elif ctx.phase == "fine-tuning":
        reason = ("phase 'fine-tuning': small, well-behaved steps from a pretrained point; AdamW with a small lr "
                  "is the established default")
        out.support("adamw", 0.5, reason)
        out.oppose(("kfac", "newton_cg"), 0.2, reason)


def rule_current_optimizer(m: Measurements, ctx: RecommendationContext, out: Outcome) -> None:
    """Switching mid-training resets optimizer state and needs re-tuning: keep the current one if close."""
    cur = ctx.optimizer_id
    if cur is None or ctx.phase not in ("mid", "fine-tuning"):
        return
    out.support(cur, 0.3, f"{CANDIDATES[cur]} is already in use in phase '{ctx.phase}': switching resets its "
                "state and needs re-tuning")


def rule_time_budget(m: Measurements, ctx: RecommendationContext, out: Outcome) -> None:
    """A tight time budget penalizes methods with a high cost per step.

    The time of one gradient is the measured ``gradient_seconds`` (:mod:`curvlens.recommend.probe`:
    one full-data gradient, scaled from ``num_samples`` to ``batch_size``). Without it the budget
    is not converted (the analysis' wall time includes its own overheads, far above a gradient).
    """
    if ctx.time_budget_s is None:
        return
    t_grad, n = m.num("gradient_seconds"), m.num("num_samples")
    if t_grad is None or t_grad <= 0:
        out.need("gradient_seconds", "the measured time of one gradient turns the time budget into steps (pass "
                 "model=, loss_fn=, data= to recommend())")
        return
    if ctx.batch_size is not None and n is not None and n > 0 and ctx.batch_size < n:
        t_grad *= ctx.batch_size / n
    steps = ctx.time_budget_s / max(t_grad, 1e-12)
    if steps < T.FEW_STEPS:
        reason = (f"time budget {fmt(ctx.time_budget_s)} s affords ~{steps:.0f} SGD steps (< {T.FEW_STEPS}, one "
                  f"gradient measured at {fmt(t_grad)} s): costly steps leave too few of them")
        out.oppose("newton_cg", 0.6, reason)
        out.oppose("saddle_free_newton", 0.6, reason)
        out.oppose("kfac", 0.3, reason)
        out.oppose("diag_hessian", 0.2, reason)


def rule_step_cost(m: Measurements, ctx: RecommendationContext, out: Outcome) -> None:
    """The time model: a step that costs ``c`` gradients must make ``c`` times the progress of an SGD step.

    ``c`` is the measured CPU time of one step of the candidate (``step_seconds_<candidate>``,
    timed by :func:`curvlens.recommend.trials.step_seconds` when ``recommend`` gets the model)
    over the measured time of one SGD step timed the same way (one gradient at the training
    batch; else ``gradient_seconds`` scaled to the batch); without
    those, the modelled cost of :func:`curvlens.recommend.hyperparams.suggest` (curvature-product
    cost times the products a step needs). Progress per second, not per step, decides a
    fixed-time race, so the score falls by
    :data:`~curvlens.recommend.thresholds.STEP_COST_PENALTY` per decade of ``c``. A measured ``c``
    below :data:`~curvlens.recommend.thresholds.STEP_COST_RESOLUTION` is within the spread of
    repeated timings and counts as 1 (a note, no penalty). For L-BFGS ``c`` is per iteration.
    """
    from curvlens.recommend.hyperparams import suggest

    t = m.num("gradient_seconds")
    n = m.num("num_samples")
    if t is not None and ctx.batch_size is not None and n is not None and 0 < ctx.batch_size < n:
        t *= ctx.batch_size / n
    sgd = m.num("step_seconds_sgd_momentum")  # one gradient at the training batch, measured the same way
    unit, unit_name = (sgd, "an SGD step") if sgd is not None and sgd > 0 else (t, "a gradient")
    for opt in CANDIDATES:
        sec = m.num(f"step_seconds_{opt}")
        if sec is not None and unit is not None and unit > 0:
            cost = sec / unit
            how = f"measured: {fmt(sec, 3)} s per step against {fmt(unit, 3)} s for {unit_name}"
        else:
            cost = suggest(opt, m, ctx)[1]
            how = "modelled from the curvature-product cost" + ("" if t is None else f", {fmt(t, 3)} s per gradient")
        if cost <= 1.0:
            continue
        if sec is not None and unit is not None and unit > 0 and cost < T.STEP_COST_RESOLUTION:
            out.note(opt, f"a step costs ~{fmt(cost, 3)} gradients ({how}): within the timing resolution "
                     f"({T.STEP_COST_RESOLUTION}x), counted as the cost of an SGD step")
            continue
        out.oppose(opt, T.STEP_COST_PENALTY * math.log10(cost),
                   f"a step costs ~{fmt(cost, 3)} gradients ({how}): it must make {fmt(cost, 3)}x the progress of "
                   f"an SGD step to pay back ({T.STEP_COST_PENALTY} per decade of cost per step)")


def rule_kfac_fit(m: Measurements, ctx: RecommendationContext, out: Outcome) -> None:
    """How well K-FAC's Kronecker curvature fits the Gauss-Newton matrix, at the full batch.

    ``lambda_max(P G)`` (:func:`~curvlens.recommend.kfac_step.kfac_model_step`) is 1 when K-FAC's
    preconditioner is the exact GGN inverse. K-FAC's premise is the unit natural-gradient step,
    and a unit step along ``-P g`` is unstable in the top direction of ``P G`` once
    ``lambda_max(P G) > 2`` (gradient descent's stability edge): the Kronecker factors then
    underestimate the curvature there by ``lambda_max(P G) / 2`` at least, K-FAC's lr must shrink
    by that factor and its progress per step with it, which the time model counts like a step
    cost: :data:`~curvlens.recommend.thresholds.STEP_COST_PENALTY` per decade of the excess.
    Only at the full batch, where the first step's factors are those of every step at these
    weights; at a mini-batch they also carry one batch's sampling error, which the optimizer's
    moving average removes later.
    """
    lam = m.num("kfac_lambda_max")
    if lam is None or lam <= T.KFAC_UNIT_STEP_EDGE or not _full_batch(m, ctx):
        return
    excess = lam / T.KFAC_UNIT_STEP_EDGE
    out.oppose("kfac", T.STEP_COST_PENALTY * math.log10(excess),
               f"K-FAC's curvature misses the GGN along its top direction: lambda_max(P G) = {fmt(lam, 3)} > "
               f"{fmt(T.KFAC_UNIT_STEP_EDGE)} (P = K-FAC's inverse curvature; 1 when exact), so its unit "
               f"natural-gradient step is unstable there and its lr must shrink {fmt(excess, 3)}x "
               f"({T.STEP_COST_PENALTY} per decade, as a step cost)")


def rule_kfac_progress(m: Measurements, ctx: RecommendationContext, out: Outcome) -> None:
    """K-FAC's measured progress per step against the gradient direction's, at a mini-batch.

    ``kfac_progress_ratio`` (:func:`~curvlens.recommend.kfac_step.kfac_model_step`) is the decrease
    of the full-data quadratic model (Gauss-Newton curvature) at the minimiser along K-FAC's first
    direction ``-P g_B`` over the same along the mini-batch gradient ``-g_B``, both as expectations
    over the same drawn batches, so the gradient noise at the training batch is in both (the
    preconditioned and the plain form of McCandlish et al. 2018, sec. 2.2). It measures at this
    point what the noisy quadratic model of Zhang et al. 2019 predicts in general: whether
    preconditioning still cuts the steps at this batch. The time model of
    :func:`rule_step_cost` charges :data:`~curvlens.recommend.thresholds.STEP_COST_PENALTY` per
    decade of cost per step; the same weight per decade of progress per step is credited here.
    Only at a mini-batch, where the alternatives are the first-order methods it is measured
    against; at the full batch the line-search methods (L-BFGS, Newton-CG), whose steps are
    curvature-scaled too, are the alternatives, and this ratio says nothing about them.
    """
    r = m.num("kfac_progress_ratio")
    if r is None or r <= 0 or ctx.batch_size is None or _full_batch(m, ctx):
        return
    reason = (f"K-FAC's first direction is predicted to decrease the loss {fmt(r, 3)}x as much as the gradient "
              f"direction at batch {ctx.batch_size}, each at the minimiser of the quadratic model with the mini-batch "
              f"noise included (measured over the same drawn batches; {T.STEP_COST_PENALTY} per decade of "
              "progress per step, as the step cost)")
    if r >= 1:
        out.support("kfac", T.STEP_COST_PENALTY * math.log10(r), reason)
    else:
        out.oppose("kfac", T.STEP_COST_PENALTY * math.log10(1 / r), reason)
