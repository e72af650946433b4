"""Suggested hyperparameters and cost per step of each candidate, derived from measurements.

- learning rate of SGD from ``lambda_max`` and the stability threshold ``(2 + 2 beta)/lr``, with a
  margin for the growth of sharpness during training, scaled by ``1/(1 + B_noise/B)`` at a
  mini-batch (McCandlish et al. 2018);
- learning rate of Adam from the curvature along its early step ``sign(g)`` (measured);
- learning rate of K-FAC from the trusted minimiser of the quadratic model along its own first
  direction, over momentum's amplification, capped by the stability limit from ``lambda_max(P G)``
  and, at a mini-batch, the geometric mean of that step and the lower edge of Polyak's heavy-ball
  interval (the noise floor grows with the lr, the contraction rate does not: the edge serves a long
  run, the model step a short one);
- L-BFGS's first trial step: the unit quasi-Newton step, moved to where its line search ends
  when L-BFGS steps were timed on the model;
- initial damping from the spectrum (bounds the damped condition number, and exceeds
  ``|lambda_min|`` when the curvature is indefinite);
- minimum batch size of second-order methods from the noise study (critical batch);
- refresh (inverse-update) interval from the cost of a curvature product;
- cost per step in gradients of the same batch, i.e. relative to one SGD step.
"""

from __future__ import annotations

import math
from typing import Any

from curvlens.recommend import thresholds as T
from curvlens.recommend.context import RecommendationContext
from curvlens.recommend.evidence import Measurements, fmt


def initial_damping(m: Measurements, *, indefinite_ok: bool = False) -> float | None:
    """Initial (Levenberg-Marquardt) damping: ``max(lambda_max / MAX_DAMPED_CONDITION,
    NEGATIVE_DAMPING_MARGIN * |lambda_min|)``; the second term only when ``indefinite_ok`` is False.

    Example:
        >>> from curvlens.recommend.evidence import Measurements
        >>> initial_damping(Measurements({"lambda_max": 100.0, "lambda_min": -2.0}))
        2.2
    """
    lmax, lmin = m.num("lambda_max"), m.num("lambda_min")
    if lmax is None or lmax <= 0:
        return None
    d = lmax / T.MAX_DAMPED_CONDITION
    if not indefinite_ok and lmin is not None and lmin < 0:
        d = max(d, T.NEGATIVE_DAMPING_MARGIN * -lmin)
    return d


def refresh_interval(kind: str, hvp_cost: float) -> int:
    """Steps between curvature refreshes so that their amortised cost stays under
    ``MAX_CURVATURE_OVERHEAD`` gradients per step: ``ceil(REFRESH_PRODUCTS[kind] * hvp_cost / overhead)``."""
    r = T.REFRESH_PRODUCTS[kind] * hvp_cost
    n = math.ceil(r / T.MAX_CURVATURE_OVERHEAD - 1e-9)
    return int(min(max(n, T.MIN_REFRESH_INTERVAL), T.MAX_REFRESH_INTERVAL))


def min_batch_size(m: Measurements) -> int | None:
    """Smallest batch whose lambda_max estimate is reliable (the curvature critical batch)."""
    crit = m.critical_batch("lambda_max")
    return None if crit is None else int(math.ceil(crit[0]))


def cg_iterations(m: Measurements, damping: float | None) -> int:
    """CG iterations for relative residual ``CG_TOL`` on the damped system:
    ``ceil(sqrt(kappa_d)/2 * ln(2/CG_TOL))``, capped at ``MAX_CG_ITERS``."""
    lmax, lmin = m.num("lambda_max"), m.num("lambda_min")
    if lmax is None or damping is None:
        return T.MAX_CG_ITERS
    low = max(lmin, 0.0) if lmin is not None else 0.0
    kappa = (lmax + damping) / max(low + damping, 1e-300) if lmin is None or lmin >= 0 else \
        (lmax + damping) / max(lmin + damping, 1e-300)
    n = math.ceil(0.5 * math.sqrt(max(kappa, 1.0)) * math.log(2.0 / T.CG_TOL))
    return int(min(max(n, 1), T.MAX_CG_ITERS))


def sharpening_margin(m: Measurements) -> tuple[float, str]:
    """The factor lambda_max may still grow by: measured along a run (``lambda_max_growth``,
    at least the default) or :data:`~curvlens.recommend.thresholds.SHARPENING_MARGIN`."""
    g = m.num("lambda_max_growth")
    if g is not None and g > T.SHARPENING_MARGIN:
        return min(g, T.MAX_SHARPENING_MARGIN), f"lambda_max grew {fmt(g, 3)}x over the recorded run"
    return T.SHARPENING_MARGIN, "margin for progressive sharpening (Cohen et al. 2021)"


def sgd_lr(m: Measurements, beta: float) -> tuple[float | None, float | None, float]:
    """``(lr, stability_limit, margin)``: ``lr = LR_FRACTION_OF_THRESHOLD * (2 + 2 beta) / lambda_max / margin``.

    Example:
        >>> from curvlens.recommend.evidence import Measurements
        >>> sgd_lr(Measurements({"lambda_max": 10.0}), 0.9)  # 0.5 * 3.8 / 10 / 2
        (0.095, 0.38, 2.0)
    """
    lmax = m.num("lambda_max")
    margin = sharpening_margin(m)[0]
    if lmax is None or lmax <= 0:
        return None, None, margin
    limit = (2 + 2 * beta) / lmax
    return T.LR_FRACTION_OF_THRESHOLD * limit / margin, limit, margin


def noise_lr_factor(m: Measurements, ctx: RecommendationContext) -> tuple[float, str | None]:
    """``(factor, reason)``: the step at batch ``B`` over the noise-free step, ``1 / (1 + B_noise / B)``.

    McCandlish et al. 2018 (sec. 2.2): a step ``-eps G_est`` with a mini-batch gradient of covariance
    ``Sigma / B`` changes the quadratic model by ``E[dL] = -eps |G|^2 + eps^2/2 (G^T H G + tr(H Sigma)/B)``.
    The factor scales the step that the SGD rule derives from ``lambda_max``, not the line-optimal
    step ``|G|^2 / G^T H G``: bounding ``H <= lambda_max I`` in both terms,
    ``E[dL] <= -eps |G|^2 + eps^2/2 lambda_max (|G|^2 + tr(Sigma)/B)``, whose minimiser is
    ``(1/lambda_max) / (1 + B_simple/B)`` with ``B_simple = tr(Sigma)/|G|^2`` (the measured
    ``gradient_noise_scale``; McCandlish et al. derive it under ``H ~ I`` the same way). So the
    stability-based lr (a fixed multiple of ``1/lambda_max``) times this factor is the minimiser of
    an upper bound on the expected loss change: it never exceeds the stability limit and shrinks
    with the noise as McCandlish's step does. The line-optimal step is not used: it is 1.1-220x
    ``1/lambda_max`` on the validation suite's problems (benchmarks/recommender_suite.py), and on
    its digits MLP at batch 32 ``min(stability lr, factor x line-optimal step)`` is the unscaled
    stability lr 0.86, which diverged there.
    A full batch has exact gradients (factor 1), and without a measured noise scale there is
    nothing to scale by (factor 1, reason None).

    Example:
        >>> from curvlens.recommend.evidence import Measurements
        >>> from curvlens.recommend.context import RecommendationContext
        >>> noise_lr_factor(Measurements({"gradient_noise_scale": 96.0, "num_samples": 1000}),
        ...                 RecommendationContext(batch_size=32))[0]
        0.25
    """
    bn, b = m.num("gradient_noise_scale"), ctx.batch_size
    if bn is None or bn <= 0 or b is None or m.full_batch(b, ctx.dataset_size):
        return 1.0, None
    f = 1.0 / (1.0 + bn / b)
    return f, (f"x {fmt(f, 3)} = 1/(1 + B_noise/B) with gradient noise scale {fmt(bn)} at batch {b}: the step that "
               "minimises a bound on the expected loss change under mini-batch noise with curvature lambda_max "
               "(McCandlish et al. 2018)")


def _sgd(m: Measurements, ctx: RecommendationContext, notes: list[str]):
    beta = ctx.momentum if ctx.momentum is not None and ctx.momentum > 0 else T.DEFAULT_MOMENTUM
    lr, limit, margin = sgd_lr(m, beta)
    factor, noise_why = noise_lr_factor(m, ctx)
    if lr is not None:
        lr *= factor
    hp = {"lr": lr, "momentum": beta, "lr_stability_limit": limit}
    if lr is None:
        notes.append("note: lr not derived: measure lambda_max (lr = (1 + momentum) / lambda_max / margin)")
    else:
        why = sharpening_margin(m)[1]
        notes.append(f"note: lr {fmt(lr)} = {T.LR_FRACTION_OF_THRESHOLD} x stability limit (2+2*{fmt(beta)})/"
                     f"lambda_max = {fmt(limit)}, divided by {fmt(margin, 3)} ({why})"
                     + (f", {noise_why}" if noise_why else "")
                     + f": stable until lambda_max grows {fmt(margin / T.LR_FRACTION_OF_THRESHOLD / factor, 3)}x")
    return hp, 1.0, notes


def adam_lr(m: Measurements, ctx: RecommendationContext) -> tuple[float, str]:
    """Adam's learning rate and where it comes from.

    From the measured gradient statistics when present (``gradient_l1`` and ``sign_curvature``,
    see :mod:`curvlens.recommend.probe`): ``ADAM_LR_FRACTION * |g|_1 / (s^T H s)``, the minimiser
    of the quadratic model along Adam's early direction ``sign(g)`` with the sharpening margin
    (``|s^T H s|`` when that curvature is negative: the length over which the model holds);
    else the current lr when Adam is in use; else a prior, said to be one.

    Example:
        >>> from curvlens.recommend.evidence import Measurements
        >>> from curvlens.recommend.context import RecommendationContext
        >>> adam_lr(Measurements({"gradient_l1": 3.0, "sign_curvature": 15.0}), RecommendationContext())[0]
        0.1
    """
    l1, curv = m.num("gradient_l1"), m.num("sign_curvature")
    if l1 is not None and curv is not None and curv > 0 and l1 > 0:
        lr = T.ADAM_LR_FRACTION * l1 / curv
        return lr, (f"{T.ADAM_LR_FRACTION} x |g|_1 / (s^T H s) = {T.ADAM_LR_FRACTION} x {fmt(l1)} / {fmt(curv)} with "
                    "s = sign(g), the minimiser of the quadratic model along Adam's early step, halved as a margin "
                    "for growing curvature")
    if l1 is not None and curv is not None and curv < 0 and l1 > 0:
        lr = T.ADAM_LR_FRACTION * l1 / -curv
        return lr, (f"{T.ADAM_LR_FRACTION} x |g|_1 / |s^T H s| = {T.ADAM_LR_FRACTION} x {fmt(l1)} / {fmt(-curv)} with "
                    "s = sign(g): the curvature along Adam's early step is negative, so the quadratic model has no "
                    "minimiser; this is the step at which its curvature term grows as large as the linear one "
                    "(the length over which the model holds), halved as a margin")
    if ctx.optimizer_id == "adamw" and ctx.lr is not None:
        return ctx.lr, "the current lr, kept (Adam's step was not measured: pass model=, loss_fn=, data=)"
    prior = T.ADAM_FINETUNE_LR if ctx.phase == "fine-tuning" else T.ADAM_DEFAULT_LR
    return prior, ("a prior, not a measurement (" + ("fine-tuning default" if ctx.phase == "fine-tuning" else
                   "Kingma & Ba default") + "): measure the gradient and the curvature along sign(g) by passing "
                   "model=, loss_fn=, data= to recommend(), or run trials")


def lbfgs_lr(m: Measurements) -> tuple[float, str]:
    """L-BFGS's ``lr``: the first trial step of its strong-Wolfe line search, and where it comes from.

    The prior is the unit step along the quasi-Newton direction: for quasi-Newton methods the
    trial step 1 should be tried first, it is eventually accepted and keeps their superlinear
    convergence (Nocedal & Wright 2006, sec. 3.5 and 6.1). When :func:`~curvlens.recommend.recommend`
    timed L-BFGS steps on the model (``lbfgs_accepted_step``: the median over the timed steps of the
    step the search accepted over the first trial step ``lbfgs_first_step_lr``), the first trial
    step moves to where the search ends (a search that keeps shortening or extending it spends
    evaluations each iteration to get there); a median of 1 keeps it.

    Example:
        >>> from curvlens.recommend.evidence import Measurements
        >>> lbfgs_lr(Measurements({}))[0]
        1.0
        >>> lbfgs_lr(Measurements({"lbfgs_accepted_step": 0.25, "lbfgs_first_step_lr": 1.0,
        ...                        "lbfgs_first_step_kept": 0.2}))[0]
        0.25
    """
    ratio, tried, kept = m.num("lbfgs_accepted_step"), m.num("lbfgs_first_step_lr"), m.num("lbfgs_first_step_kept")
    prior = ("the unit quasi-Newton step, tried first by quasi-Newton line searches (Nocedal & Wright 2006, "
             "sec. 6.1)")
    if ratio is None or tried is None or ratio <= 0 or tried <= 0:
        return 1.0, prior + "; not measured (pass model=, loss_fn=, data= to recommend())"
    lr = float(min(max(tried * ratio, 1e-3), 10.0))
    seen = (f"measured: in timed L-BFGS steps from lr {fmt(tried, 3)} the strong-Wolfe search kept the first trial "
            f"step in {100 * (kept or 0.0):.0f}% of them, median accepted step {fmt(ratio, 3)}x the first trial")
    if lr == tried:
        return lr, f"{prior}; {seen}, so it stays"
    return lr, f"{seen}: the first trial step moves to where the search ends (prior: {prior})"


def polyak_lower_edge(beta: float, curvature: float = 1.0) -> float:
    """The least heavy-ball lr at which an eigendirection of ``curvature`` converges at the full rate.

    Heavy-ball momentum ``beta`` on a quadratic contracts an eigendirection of curvature ``lam`` by
    ``sqrt(beta)`` per step for every ``lr`` with ``(1 - sqrt(beta))^2 <= lr lam <= (1 + sqrt(beta))^2``
    (the characteristic roots are complex there, of modulus ``sqrt(beta)``; Polyak 1964, Goh 2017
    "Why Momentum Really Works"); below that interval the direction is over-damped and slower.

    Example:
        >>> round(polyak_lower_edge(0.9), 6)  # (1 - sqrt(0.9))^2
        0.002633
    """
    return (1.0 - math.sqrt(beta)) ** 2 / curvature


def kfac_lr(m: Measurements, beta: float, *, noisy: bool = False) -> tuple[float, str]:
    """K-FAC's learning rate under heavy-ball momentum ``beta``, and where it comes from.

    Measured (:func:`~curvlens.recommend.kfac_step.kfac_model_step`): ``alpha_t``, the minimiser
    ``alpha* = g^T P g / E[(P g_B)^T G (P g_B)]`` of the quadratic model along K-FAC's first
    direction (Martens & Grosse 2015, sec. 6.4), halved until the full-data loss falls by at
    least a quarter of the model's prediction (their sec. 6.5 trust threshold ``rho = 1/4``),
    times ``1 - beta``: momentum's steady state multiplies a step by ``1/(1 - beta)``. Capped by
    ``LR_FRACTION_OF_THRESHOLD x (2 + 2 beta) / lambda_max(P G)`` over the sharpening margin, the
    heavy-ball stability limit on the preconditioned curvature with the same margins as SGD's
    rule. Unmeasured: ``1 - beta``, a unit natural-gradient step, said to be a prior.

    With ``noisy`` (mini-batch gradients) the measurements bound the lr from two sides. Below: the
    lower edge of Polyak's interval for the curvature K-FAC models exactly, ``(1 - sqrt(beta))^2``
    (:func:`polyak_lower_edge` at eigenvalue 1 of ``P G``, K-FAC's premise ``P ~ G^-1``): every lr
    of the interval contracts those directions at the same heavy-ball rate ``sqrt(beta)`` per step,
    while the stationary loss excess that mini-batch noise leaves grows linearly with the lr, about
    ``lr / (1 - beta) tr(P Sigma) / (4 B)`` on the quadratic model (the preconditioned form of the
    SGD noise floor, Mandt et al. 2017; McCandlish et al. 2018), so a long run to a deep loss is
    best served there. Above: the model step, the best single step with the noise included, which
    serves a short run. Which applies depends on the run's length, which the recommender does not
    know, so the lr is their geometric mean: the value whose worst-case factor from an optimum
    anywhere between the two bounds, ``sqrt(model step / edge)``, is least (the minimax choice on a
    log scale). A trial (:func:`~curvlens.recommend.trials._bracket`) runs both bounds and the mean.
    A model step below the edge is kept.

    Example:
        >>> from curvlens.recommend.evidence import Measurements
        >>> round(kfac_lr(Measurements({"kfac_trusted_step": 0.3, "kfac_lambda_max": 1.0}), 0.9)[0], 9)  # 0.3 x 0.1
        0.03
        >>> round(kfac_lr(Measurements({"kfac_trusted_step": 3.0, "kfac_lambda_max": 95.0}), 0.9)[0], 9)  # 0.5x3.8/95/2
        0.01
        >>> kfac_lr(Measurements({}), 0.9)[0]
        0.1
        >>> round(kfac_lr(Measurements({"kfac_trusted_step": 0.3, "kfac_lambda_max": 1.0}), 0.9, noisy=True)[0], 6)
        0.008888
    """
    lr, why = _kfac_model_lr(m, beta)
    if noisy:
        edge = polyak_lower_edge(beta)
        if edge < lr:
            mean = math.sqrt(edge * lr)
            return mean, (f"sqrt({fmt(edge, 3)} x {fmt(lr, 3)}), the geometric mean of two measured bounds, within "
                          f"{fmt(lr / mean, 3)}x of either: below, (1 - sqrt(momentum {fmt(beta)}))^2 = {fmt(edge, 3)}, "
                          "the least lr at which heavy-ball momentum contracts the directions K-FAC models exactly "
                          "(eigenvalue 1 of P G) at its full rate sqrt(momentum) per step (Polyak 1964), where the "
                          "loss floor left by mini-batch noise, which grows with the lr (lr / (1 - momentum) x "
                          "tr(P Sigma) / 4B, Mandt et al. 2017), is lowest: best for a long run; above, the model "
                          f"step {fmt(lr)}, best for a short one: {why}; the run's length decides (trial= runs both "
                          "bounds)")
        why += f"; at or below the noise-floor edge (1 - sqrt(momentum))^2 = {fmt(edge, 3)}"
    return lr, why


def _kfac_model_lr(m: Measurements, beta: float) -> tuple[float, str]:
    """:func:`kfac_lr` without the mini-batch edge: the trusted model step, capped by stability."""
    a, lam = m.num("kfac_trusted_step"), m.num("kfac_lambda_max")
    if a is None or a <= 0:
        return round(1 - beta, 12), ("1 - momentum: a unit natural-gradient step (Martens & Grosse 2015), a prior, "
                                     "not measured (pass model=, loss_fn=, data= to recommend())")
    lr = a * (1 - beta)
    rho = m.num("kfac_reduction_ratio")
    why = (f"{fmt(a, 3)} x (1 - momentum {fmt(beta)}): the step along K-FAC's own first direction that minimises "
           f"the quadratic model (GGN curvature, mini-batch noise included), halved until the loss falls by at "
           f"least 1/4 of the predicted decrease" + (f" (measured ratio {fmt(rho, 3)})" if rho is not None else "")
           + ", over momentum's amplification 1/(1 - momentum)")
    if lam is not None and lam > 0:
        margin, mwhy = sharpening_margin(m)
        cap = T.LR_FRACTION_OF_THRESHOLD * (2 + 2 * beta) / lam / margin
        if cap < lr:
            return cap, (f"{T.LR_FRACTION_OF_THRESHOLD} x heavy-ball stability limit (2+2*{fmt(beta)})/"
                         f"lambda_max(P G) with lambda_max(P G) = {fmt(lam, 3)}, divided by {fmt(margin, 3)} ({mwhy}); "
                         f"below the model step {fmt(lr)} = {why}")
        why += f"; under the stability cap {fmt(cap)} from lambda_max(P G) = {fmt(lam, 3)}"
    return lr, why


def suggest(opt: str, m: Measurements, ctx: RecommendationContext) -> tuple[dict[str, Any], float, list[str]]:
    """Hyperparameters, cost per step (x SGD) and notes for candidate ``opt``."""
    notes: list[str] = []
    c = m.num("hvp_cost")
    seq = m.num("sequential_hvp_cost")
    if opt in ("newton_cg", "saddle_free_newton") and seq is not None and seq > 0:
        c = seq  # their inner Krylov iterations apply one product at a time (measured that way)
        notes.append(f"note: one curvature product, one vector at a time as CG/Lanczos apply it, measured at "
                     f"{fmt(seq, 3)} gradients")
    if c is None or c <= 0:
        c = T.DEFAULT_HVP_COST
        if opt in ("diag_hessian", "kfac", "newton_cg"):
            notes.append(f"note: hvp_cost not measured, cost and interval assume {T.DEFAULT_HVP_COST} gradients")
    hp: dict[str, Any]
    if opt == "sgd_momentum":
        return _sgd(m, ctx, notes)
    if opt == "adamw":
        lr, src = adam_lr(m, ctx)
        notes.append(f"note: lr {fmt(lr)}: {src}")
        hp = {"lr": lr, "betas": [0.9, 0.999], "weight_decay": T.ADAMW_WEIGHT_DECAY, "eps": 1e-8}
        return hp, 1.0 + T.ADAM_OVERHEAD, notes
    damping = initial_damping(m, indefinite_ok=opt == "kfac")
    if damping is None and opt != "lbfgs":
        notes.append("note: damping not derived: measure lambda_max (and lambda_min)")
    mb = min_batch_size(m)
    if opt == "diag_hessian":
        every = refresh_interval("diag_hessian", c)
        hp = {"lr": T.DIAG_HESSIAN_LR, "betas": [0.9, 0.999], "damping": damping,
              "hessian_update_interval": every, "hutchinson_probes": 1}
        return hp, 1.0 + T.ADAM_OVERHEAD + T.REFRESH_PRODUCTS["diag_hessian"] * c / every, notes
    if opt == "kfac":
        # a refresh eigendecomposes the Kronecker factors, whose cost depends on the layer widths, not
        # on the cost of a curvature product: the optimizer's own interval is kept (the measured step
        # time of the step_cost rule includes the refreshes it makes)
        noisy = ctx.batch_size is not None and not m.full_batch(ctx.batch_size, ctx.dataset_size)
        lr, why = kfac_lr(m, T.KFAC_MOMENTUM, noisy=noisy)
        hp = {"lr": lr, "momentum": T.KFAC_MOMENTUM, "damping": damping, "min_batch_size": mb}
        model_lr = _kfac_model_lr(m, T.KFAC_MOMENTUM)[0]
        if noisy and model_lr > lr:  # the one-step optimum above the lr: trials span the noise edge to it
            hp["lr_model_step"] = model_lr
        notes.append(f"note: lr {fmt(lr)}: {why}; the K-FAC step's KL clip bounds each update; inverse refresh "
                     "interval: the optimizer's default")
        return hp, 1.0 + T.KFAC_STATS_OVERHEAD + T.REFRESH_PRODUCTS["kfac"] * c / T.KFAC_INVERSE_INTERVAL, notes
    if opt == "lbfgs":
        hist = T.LBFGS_HISTORY
        p = m.num("num_params")
        if ctx.memory_bytes is not None and p is not None:
            room = T.MEMORY_TIGHT_FRACTION * ctx.memory_bytes / (p * ctx.bytes_per_param)
            hist = int(min(T.LBFGS_HISTORY, max(3, (room - 3) // 2)))
        lr, why = lbfgs_lr(m)
        hp = {"lr": lr, "history_size": hist, "line_search_fn": "strong_wolfe", "max_iter": 20,
              "max_eval": 20 + 25}
        notes.append(f"note: lr {fmt(lr, 3)} is the first trial step of the strong-Wolfe line search, which accepts or "
                     f"changes it: {why}; use the full batch: line searches need a deterministic loss; cost is per "
                     "iteration (max_iter per .step(); max_eval = max_iter + 25 so that every iteration has a "
                     "complete search: torch's default int(1.25 * max_iter) evaluations can cut it short)")
        return hp, T.LBFGS_EVALS_PER_STEP, notes
    if opt == "saddle_free_newton":
        d = initial_damping(m, indefinite_ok=True)
        hp = {"lr": 1.0, "damping": d if d is not None else 1e-2, "subspace": 10}
        return hp, 1.0 + 10 * c, notes
    if opt == "newton_cg":
        lmin = m.num("lambda_min")
        iters = cg_iterations(m, damping)
        hp = {"lr": 1.0, "damping": damping, "cg_max_iters": iters, "cg_rtol": T.CG_TOL,
              "curvature": "ggn" if lmin is not None and lmin < 0 else "hessian", "min_batch_size": mb}
        return hp, 1.0 + iters * c, notes
    raise ValueError(f"opt: expected a candidate id, got {opt!r}")
