"""Rules that read the curvature measurements: validity, stability, conditioning, saddles.

Each rule is ``rule(m: Measurements, ctx: RecommendationContext, out: Outcome) -> None``: it
reads measurements and context and appends evidence, warnings and missing-measurement notes
to ``out``. Reason sentences quote the measured number and the threshold it was compared with.
"""

from __future__ import annotations

from curvlens.recommend import thresholds as T
from curvlens.recommend.context import RecommendationContext
from curvlens.recommend.evidence import Measurements, Outcome, fmt

#: summary keys whose non-finite value matters most
_CORE = ("lambda_max", "lambda_min", "trace", "condition_number", "effective_condition_number",
         "negative_mass", "gradient_noise_scale", "hvp_cost")


def rule_finite_values(m: Measurements, ctx: RecommendationContext, out: Outcome) -> None:
    """Warn about NaN / infinite measurements; they are treated as not measured."""
    for key in sorted(m.nonfinite):
        out.warn(f"{key} is non-finite ({m.raw.get(key)!r}) in the analysis and was ignored: the loss or a "
                 "curvature product overflowed or became NaN; re-run analyze (float64, smaller lr or a "
                 "checkpoint before divergence)" if key in _CORE else
                 f"{key} is non-finite in the analysis and was ignored")


def rule_certification(m: Measurements, ctx: RecommendationContext, out: Outcome) -> None:
    """Warn when an extreme eigenvalue that advice is derived from was not certified.

    lambda_max sets the learning rates and damping: uncertified, they are approximate (a warning).
    A positive, uncertified lambda_min is used only through the bound that holds without a
    certificate (Ritz values lie inside the spectrum: ``lambda_min <= theta_min``, so
    ``kappa >= theta_max / theta_min``); the conditioning rule states that bound, nothing is
    wrong. A negative one sets the damping that must exceed ``|lambda_min|``; uncertified, the
    true ``lambda_min`` may be more negative still (a warning).
    """
    lmax, lmin = m.num("lambda_max"), m.num("lambda_min")
    if lmax is not None and m.flag("lambda_max_certified") is False:
        out.warn(f"lambda_max = {fmt(lmax)} is not certified (its eigensolver did not converge): learning rates "
                 "and damping derived from it are approximate; re-run analyze with more matvecs")
    if lmin is not None and lmin < 0 and m.flag("lambda_min_certified") is False:
        out.warn(f"lambda_min = {fmt(lmin)} is not certified (its eigensolver did not converge) and only bounds the "
                 "smallest eigenvalue from above: the true one may be more negative, so a damping derived from it "
                 "may not make H + damping I positive definite; re-run analyze with more matvecs")


def _lr_momentum(m: Measurements, ctx: RecommendationContext) -> tuple[float | None, float, str]:
    if ctx.lr is not None:
        return ctx.lr, ctx.effective_momentum, "context"
    lr = m.num("lr")
    mom = ctx.momentum if ctx.momentum is not None else (m.num("momentum") or 0.0)
    return lr, float(mom), "analysis"


def rule_stability(m: Measurements, ctx: RecommendationContext, out: Outcome) -> None:
    """Compare lambda_max with the (momentum-adjusted) stability threshold (2 + 2*beta) / lr.

    Cohen et al. 2021 (edge of stability): gradient descent with step ``lr`` is unstable along
    directions with curvature above ``2/lr``; heavy-ball momentum ``beta`` moves the limit to
    ``(2 + 2 beta)/lr``. Adaptive methods have their own (preconditioned) threshold, not measured.
    """
    lmax = m.num("lambda_max")
    lr, beta, source = _lr_momentum(m, ctx)
    if lmax is None:
        out.need("lambda_max", "the learning rate is derived from the sharpest curvature")
        return
    if lr is None:
        out.ask("lr", "needed to compare lambda_max with the stability threshold (2+2*momentum)/lr")
        return
    if ctx.optimizer_id in ("adamw", "diag_hessian"):
        return  # stability of adaptive methods depends on preconditioned sharpness (not measured)
    threshold = (2.0 + 2.0 * beta) / lr
    ratio = lmax / threshold
    where = f"lambda_max {fmt(lmax)} vs stability threshold (2+2*{fmt(beta)})/lr = {fmt(threshold)} at lr={fmt(lr)}"
    if ratio > T.STABILITY_RATIO_UNSTABLE:
        out.warn(f"above the stability threshold: {where} (ratio {ratio:.2f} > {T.STABILITY_RATIO_UNSTABLE}); "
                 f"gradient descent oscillates or diverges along the sharpest direction: lower lr below "
                 f"{fmt((2 + 2 * beta) / lmax)}")
        out.oppose("sgd_momentum", 0.2, f"at the current lr SGD is unstable ({where}, ratio {ratio:.2f} > "
                   f"{T.STABILITY_RATIO_UNSTABLE}): it needs a smaller lr")
    elif ratio > T.STABILITY_RATIO_EDGE:
        out.warn(f"at the edge of stability: {where} (ratio {ratio:.2f} > {T.STABILITY_RATIO_EDGE}); "
                 "expect loss spikes, or lower lr slightly")


_COND_NAMES = {
    "condition_number": "condition number",
    "lambda_max/lambda_min": "lambda_max/lambda_min",
    "condition_number_lower_bound": "condition number >=",
    "effective_condition_number": "effective condition number",
}


def rule_conditioning(m: Measurements, ctx: RecommendationContext, out: Outcome) -> None:
    """Ill-conditioned problems favour curvature-aware methods; well-conditioned ones SGD.

    Gradient descent needs O(kappa) iterations to reduce the error by a constant factor,
    CG / Newton-type methods O(sqrt(kappa)) or O(1) (Nesterov 2004; Nocedal & Wright 2006).
    Ritz values lie inside the spectrum, so ``theta_max / theta_min`` is a lower bound of kappa:
    when the bottom end is unresolved only that bound is used, and a lower bound can show that a
    problem is ill-conditioned, never that it is well-conditioned. The effective condition number
    (``lambda_max / (trace/D)``) is a different quantity, used only where kappa is undefined
    (an indefinite Hessian) or unmeasured, and named as such; it too can only show
    ill-conditioning: for a PSD matrix ``trace/D >= lambda_min``, so it is at most kappa, and for
    an indefinite one the mean mixes positive and negative curvature and says nothing about how
    fast first-order methods converge.
    """
    cond = m.condition()
    if cond is None:
        if m.num("lambda_min") is not None and m.num("lambda_min") > 0 and m.num("lambda_max") is None:
            out.need("lambda_max", "the condition number needs the top end too")
            return
        out.need("condition_number", "conditioning decides between first- and second-order methods "
                 "(needs lambda_max and lambda_min, or the effective condition number)")
        return
    kappa, key = cond
    name = _COND_NAMES[key]
    bound = key == "condition_number_lower_bound" or key == "lambda_max/lambda_min"
    note = ""
    if bound:
        note = " (a lower bound of the condition number: Ritz values lie inside the spectrum)"
        if key == "condition_number_lower_bound" and kappa <= T.ILL_CONDITIONED:
            out.need("lambda_min resolved (analyze in float64: model.double(), or a larger budget)",
                     f"the bottom end is unresolved, so only kappa >= {fmt(kappa)} is known: a lower bound at or "
                     f"below {fmt(T.ILL_CONDITIONED)} cannot tell a well-conditioned problem from an "
                     "ill-conditioned one")
    if key == "effective_condition_number":
        note = " (lambda_max over the mean curvature, not the condition number: lambda_min is negative or unmeasured)"
    text = f"{name} {fmt(kappa)}" if key != "condition_number_lower_bound" else f"condition number >= {fmt(kappa)}"
    if kappa > T.ILL_CONDITIONED:
        reason = (f"{text} > {fmt(T.ILL_CONDITIONED)} (ill-conditioned){note}: SGD needs ~kappa steps per e-fold "
                  "along the flattest direction, curvature-aware methods ~sqrt(kappa) or fewer")
        out.support(("newton_cg", "lbfgs"), 1.0, reason)
        out.support("kfac", 0.8, reason)
        out.support("diag_hessian", 0.5, reason)
        out.support("adamw", 0.3, reason)
        out.oppose("sgd_momentum", 1.0, reason)
    elif kappa < T.WELL_CONDITIONED and key not in ("condition_number_lower_bound", "effective_condition_number"):
        reason = (f"{text} < {fmt(T.WELL_CONDITIONED)} (well-conditioned){note}: first-order methods "
                  "converge in a few hundred steps; a curvature method's overhead does not pay back")
        out.support("sgd_momentum", 0.6, reason)
        out.support("adamw", 0.2, reason)
        out.oppose(("kfac", "newton_cg", "saddle_free_newton"), 0.5, reason)
        if m.full_batch(ctx.batch_size, ctx.dataset_size):
            out.oppose("lbfgs", 0.2, reason.replace("a curvature method's overhead does not pay back",
                                                    "L-BFGS costs ~1.25 gradients per iteration, little to gain"))
        else:
            out.oppose("lbfgs", 0.5, reason)
        out.oppose("diag_hessian", 0.3, reason)


def _negative_level(m: Measurements) -> tuple[str, str] | None:
    """("strong" | "saddle" | "none", reason) from negative mass, lambda ratio or the verdict."""
    nm, lmax, lmin = m.num("negative_mass"), m.num("lambda_max"), m.num("lambda_min")
    se = m.num("negative_mass_stderr")
    ratio = -lmin / lmax if (lmin is not None and lmax is not None and lmax > 0 and lmin < 0) else None
    pm = f" +- {fmt(se)}" if se is not None else ""
    if nm is not None:
        if nm > T.NEGATIVE_MASS_STRONG:
            return "strong", f"negative spectral mass {fmt(nm)}{pm} > {T.NEGATIVE_MASS_STRONG}"
        if ratio is not None and ratio > T.NEGATIVE_RATIO_STRONG and nm > T.NEGATIVE_MASS_SADDLE:
            return "strong", (f"|lambda_min|/lambda_max = {fmt(ratio)} > {T.NEGATIVE_RATIO_STRONG} with negative "
                              f"mass {fmt(nm)}{pm} > {T.NEGATIVE_MASS_SADDLE}")
        if nm > T.NEGATIVE_MASS_SADDLE:
            return "saddle", f"negative spectral mass {fmt(nm)}{pm} > {T.NEGATIVE_MASS_SADDLE}"
        return "none", f"negative spectral mass {fmt(nm)}{pm} <= {T.NEGATIVE_MASS_SADDLE}"
    verdict = m.text("saddle_verdict")
    if verdict == "strongly_indefinite":
        return "strong", "saddle verdict 'strongly_indefinite'"
    if verdict == "saddle_region":
        return "saddle", "saddle verdict 'saddle_region'"
    if verdict == "near_minimum":
        return "none", "saddle verdict 'near_minimum'"
    if ratio is not None:
        if ratio > T.NEGATIVE_RATIO_STRONG:
            return "strong", f"|lambda_min|/lambda_max = {fmt(ratio)} > {T.NEGATIVE_RATIO_STRONG}"
        return "none", f"|lambda_min|/lambda_max = {fmt(ratio)} <= {T.NEGATIVE_RATIO_STRONG}"
    if lmin is not None and lmin >= 0:
        return "none", f"lambda_min {fmt(lmin)} >= 0"
    return None


def rule_negative_curvature(m: Measurements, ctx: RecommendationContext, out: Outcome) -> None:
    """Negative curvature: what it means depends on whether the gradients are exact.

    Dauphin et al. 2014 (saddle points dominate high-dimensional losses). At mini-batch, BFGS
    pairs need ``s^T y > 0`` (Nocedal & Wright 2006, sec. 6.1) and noisy pairs break it, while
    stochastic first-order methods escape strict saddles (Ge et al. 2015), and so does K-FAC at a
    mini-batch: a step preconditioned by a fixed positive-definite ``P`` is an SGD step in the
    coordinates ``P^{-1/2} theta``, whose Hessian ``P^{1/2} H P^{1/2}`` has the inertia of ``H``. At full batch a
    line-search method handles negative curvature itself (the strong-Wolfe line search only
    accepts steps that decrease the loss and curvature pairs with ``s^T y > 0``; pairs that fail
    are skipped), so it is no reason against L-BFGS, and there is no gradient noise to escape with.
    """
    curvature = m.text("curvature")
    if curvature in ("ggn", "fisher"):
        out.need("negative_mass with curvature='hessian'", f"the {curvature} is PSD by construction and cannot "
                 "show saddles")
        return
    level = _negative_level(m)
    if level is None:
        out.need("negative_mass", "negative curvature decides whether quasi-Newton methods are safe")
        return
    kind, why = level
    full = m.full_batch(ctx.batch_size, ctx.dataset_size)
    if kind in ("strong", "saddle"):
        out.warn(f"strongly indefinite (saddle region): {why}; the point is far from a minimum" if kind == "strong"
                 else f"in a saddle region: {why}")
        if full:  # what only copes with negative curvature is noted, not counted for it
            out.note("lbfgs", f"{why} at full batch: the strong-Wolfe line search only accepts steps that "
                     "lower the loss and skips curvature pairs with s^T y <= 0, so negative curvature is no veto")
            out.support("saddle_free_newton", 0.6 if kind == "strong" else 0.3,
                        f"{why} at full batch: saddle-free Newton steps along |Lambda|, away from negative curvature")
            out.note("newton_cg", f"{why}: Newton-CG with damping > |lambda_min| (or the GGN) copes with "
                     "indefinite curvature")
            return
        w = 1.5 if kind == "strong" else 0.7
        out.oppose("lbfgs", w, f"{why} at mini-batch: BFGS curvature pairs need s^T y > 0, so updates are skipped or "
                   "the quadratic model is indefinite" if kind == "strong" else
                   f"{why} at mini-batch: quasi-Newton updates become unreliable with negative curvature")
        out.support(("sgd_momentum", "adamw"), 0.5 if kind == "strong" else 0.3,
                    f"{why}: stochastic first-order methods escape strict saddles" if kind == "strong" else
                    f"{why}: stochastic first-order methods escape saddles")
        out.support("kfac", 0.5 if kind == "strong" else 0.3,
                    f"{why} at mini-batch: K-FAC's steps are stochastic gradient steps preconditioned by a "
                    "positive-definite (damped) P, i.e. SGD in the coordinates P^-1/2 theta, where a strict saddle "
                    "stays a strict saddle (Sylvester's law of inertia), so they escape it as SGD does")
        if kind == "strong":
            out.note("newton_cg", f"{why}: Newton-CG with damping > |lambda_min| (or the GGN) copes with "
                     "indefinite curvature")
    else:
        out.support("lbfgs", 0.3, f"{why}: curvature is essentially positive, a quasi-Newton model fits")
