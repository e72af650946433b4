"""Suggested hyperparameters and cost per step of each candidate, derived from measurements.

- learning rate of SGD from ``lambda_max`` and the stability threshold ``(2 + 2 beta)/lr``;
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


def suggest(opt: str, m: Measurements, ctx: RecommendationContext) -> tuple[dict[str, Any], float, list[str]]:
    """Hyperparameters, cost per step (x SGD) and notes for candidate ``opt``."""
    notes: list[str] = []
    c = m.num("hvp_cost")
    if c is None or c <= 0:
        c = T.DEFAULT_HVP_COST
        if opt in ("diag_hessian", "kfac", "newton_cg"):
            notes.append(f"note: hvp_cost not measured, cost and interval assume {T.DEFAULT_HVP_COST} gradients")
    lmax = m.num("lambda_max")
    hp: dict[str, Any]
    if opt == "sgd_momentum":
        beta = ctx.momentum if ctx.momentum is not None and ctx.momentum > 0 else T.DEFAULT_MOMENTUM
        limit = (2 + 2 * beta) / lmax if lmax is not None and lmax > 0 else None
        lr = None if limit is None else T.LR_FRACTION_OF_THRESHOLD * limit
        hp = {"lr": lr, "momentum": beta, "lr_stability_limit": limit}
        if lr is None:
            notes.append("note: lr not derived: measure lambda_max (lr = (1 + momentum) / lambda_max)")
        else:
            notes.append(f"note: lr {fmt(lr)} = {T.LR_FRACTION_OF_THRESHOLD} x stability limit "
                         f"(2+2*{fmt(beta)})/lambda_max = {fmt(limit)}")
        return hp, 1.0, notes
    if opt == "adamw":
        if ctx.optimizer_id == "adamw" and ctx.lr is not None:
            lr, src = ctx.lr, "current lr kept"
        elif ctx.phase == "fine-tuning":
            lr, src = T.ADAM_FINETUNE_LR, "fine-tuning default"
        else:
            lr, src = T.ADAM_DEFAULT_LR, "Kingma & Ba default"
        notes.append(f"note: lr {fmt(lr)} is a prior ({src}); Adam's stability depends on the preconditioned "
                     "sharpness, which was not measured")
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
        every = refresh_interval("kfac", c)
        hp = {"lr": round(1 - T.KFAC_MOMENTUM, 12), "momentum": T.KFAC_MOMENTUM, "damping": damping,
              "inverse_update_interval": every, "min_batch_size": mb}
        return hp, 1.0 + T.KFAC_STATS_OVERHEAD + T.REFRESH_PRODUCTS["kfac"] * c / every, notes
    if opt == "lbfgs":
        hist = T.LBFGS_HISTORY
        p = m.num("num_params")
        if ctx.memory_bytes is not None and p is not None:
            room = T.MEMORY_TIGHT_FRACTION * ctx.memory_bytes / (p * ctx.bytes_per_param)
            hist = int(min(T.LBFGS_HISTORY, max(3, (room - 3) // 2)))
        n = m.num("num_samples") or ctx.dataset_size
        hp = {"lr": 1.0, "history_size": hist, "line_search_fn": "strong_wolfe",
              "min_batch_size": int(n) if n is not None and (mb is None or n <= mb) else mb}
        return hp, T.LBFGS_EVALS_PER_STEP, notes
    if opt == "newton_cg":
        lmin = m.num("lambda_min")
        iters = cg_iterations(m, damping)
        hp = {"lr": 1.0, "damping": damping, "cg_max_iters": iters, "cg_rtol": T.CG_TOL,
              "curvature": "ggn" if lmin is not None and lmin < 0 else "hessian", "min_batch_size": mb}
        return hp, 1.0 + iters * c, notes
    raise ValueError(f"opt: expected a candidate id, got {opt!r}")
