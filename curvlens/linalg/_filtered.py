"""The driver behind :func:`~curvlens.linalg.top_eigenpairs` and :func:`~curvlens.linalg.bottom_eigenpairs`.

Plain thick restart at either end; for the bottom with ``filter="chebyshev"``, plain and then
Chebyshev-filtered:

Phase 1 runs plain thick-restart Lanczos for one basis fill (it stops early when the pairs
are certified: an easy bottom end costs nothing extra). Its Ritz values give the filter: the
``(k+1)``-th smallest bounds the wanted eigenvalues from above (interlacing) and becomes the
lower end ``a`` of the damped interval; the largest Ritz value plus its residual estimate
(or a caller's bound, e.g. ``lambda_max`` from :func:`top_eigenpairs`) is the upper end
``b``. Phase 2 runs thick-restart Lanczos for the *largest* eigenvalues of ``p(A)`` from the
phase-1 Ritz vectors, stops when the estimated residuals, mapped back to ``A`` through
``p``, meet the tolerance, and certifies with true residuals of ``A``. A returned vector
whose Rayleigh quotient lies above ``b`` means ``b`` was not an upper bound: phase 2 is
rerun with ``b`` raised past it.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from curvlens._memory import available_memory
from curvlens.linalg._certify import default_atol, true_residuals
from curvlens.linalg._thick_restart import thick_restart
from curvlens.linalg.chebyshev import ChebyshevFilter, choose_filter

logger = logging.getLogger(__name__)

MAX_RETRIES = 2  # phase-2 reruns after an eigenvalue above the assumed upper bound


def _start_block(Y: torch.Tensor, b: int) -> torch.Tensor:
    """``b`` start columns that keep every phase-1 Ritz direction: column ``j`` sums the
    Ritz vectors ``j, j + b, ...`` (a sum keeps each component, a choice of b would drop some)."""
    cols = [Y[:, j::b].sum(1) for j in range(min(b, Y.shape[1]))]
    return torch.stack(cols, 1)


PRODUCTS_MEMORY_FRACTION = 0.1  # of available memory, for the stored basis products of the top end


def _products_fit(op, rows: int) -> bool:
    """Whether ``rows`` stored products (``D``-vectors) fit in 10% of available memory."""
    itemsize = torch.finfo(op.dtype).bits // 8
    return rows * op.dim * itemsize <= PRODUCTS_MEMORY_FRACTION * available_memory(op.device)


def run_extreme(op, k, *, largest, rtol, atol, max_matvecs, block_size, basis_size, generator, spent,
                callback, upper=None, use_filter=False, start=None):
    """Thick restart at one end (plain for the top; the two phases above for the bottom with
    ``use_filter``); ``start``: a caller's warm-start block for the (first) plain phase.
    Returns ``(theta, residuals, Y, atol_used, status, method)``."""
    box: dict = {}

    def tol_a(lam, norm_est):
        a = atol if atol is not None else default_atol(op.dtype, op.dim, norm_est)
        return np.maximum(rtol * np.abs(lam), a), a

    def finish(_theta, Y, norm_est, AY=None):
        th, res, Yu = true_residuals(op, Y, AY)
        order = np.argsort(-th if largest else th, kind="stable")
        th, res = th[order], res[order]
        Yu = Yu[:, torch.as_tensor(order.copy(), device=Yu.device)]
        # in phase 2 norm_est is that of p(A): use the bound on ||A|| instead
        tol, a = tol_a(th, max(box.get("norm_a", norm_est), float(np.abs(th).max())))
        box.update(theta=th, res=res, Y=Yu, atol=a, certified=bool((res <= tol).all()))
        return box["certified"], None

    use_filter = use_filter and not largest
    keep = largest and _products_fit(op, basis_size + block_size)  # certificates from stored products
    phase1 = (max_matvecs if keep else max_matvecs - k) if not use_filter else min(max_matvecs - k, basis_size)
    state = thick_restart(
        op, k, largest=largest, block_size=block_size, basis_size=basis_size, max_matvecs=phase1,
        tol=lambda th, n: tol_a(th, n)[0], generator=generator, spent=spent, callback=callback, finish=finish,
        start=start, warm=start is not None, keep_products=keep,
    )
    status = f"{state.restarts} restart(s)"
    if state.exact:
        status += ", invariant subspace reached (Ritz values exact up to rounding)"
    if box["certified"] or state.exact or not use_filter:
        return box["theta"], box["res"], box["Y"], box["atol"], status, "block_thick_restart_lanczos"

    ritz, est = state.ritz_values, state.ritz_estimates  # ascending (wanted end first)
    b_hi = float(ritz[-1] + est[-1])
    b_hi = max(b_hi, float(upper)) if upper is not None else b_hi
    b_hi += 1e-3 * max(b_hi - float(ritz[0]), 1e-300)
    box["norm_a"] = max(abs(b_hi), abs(float(ritz[0])))
    for attempt in range(MAX_RETRIES + 1):
        left = max_matvecs - k - spent()
        filt = choose_filter(ritz, k, b_hi, max_degree=max(1, left // (3 * block_size)))
        if filt is None or left < 2 * block_size * filt.degree:
            break
        start = _start_block(box["Y"], block_size)
        fstate = _run_filtered(op, k, filt, block_size, basis_size, max_matvecs - k, generator, spent,
                               callback, start, finish, tol_a, box)
        status = (f"{status}; then Chebyshev-filtered (degree {filt.degree} on [{filt.lower:.3g}, "
                  f"{filt.upper:.3g}]): {fstate.restarts} restart(s)")
        above = float(box["theta"].max()) > filt.lower
        if not above or attempt == MAX_RETRIES:
            break
        # b was not an upper bound (an eigenvalue above it was amplified): raise it and rerun.
        logger.debug("filtered Lanczos: Rayleigh quotient %.4g above the filter, raising the bound", box["theta"].max())
        b_hi = float(box["theta"].max()) + 2.0 * float(box["res"].max()) + 0.05 * (b_hi - float(ritz[0]))
        box["norm_a"] = max(box["norm_a"], abs(b_hi))
    return box["theta"], box["res"], box["Y"], box["atol"], status, "chebyshev_filtered_thick_restart_lanczos"


def _run_filtered(op, k, filt: ChebyshevFilter, block_size, basis_size, budget, generator, spent, callback,
                  start, finish, tol_a, box):
    """Thick-restart Lanczos on ``p(A)`` (largest end) with the stopping rule mapped back to ``A``."""
    eps_p = filt.damping

    def tol_p(theta_p, _norm_p):
        # A residual r_p of p(A) maps to about r_p / p'(l) for A when the error sits in nearby
        # eigenvectors (the slowly converging ones); components far up in [a, b] are damped by
        # the filter at every step. The map is a stopping heuristic only: the returned pairs
        # are certified with true residuals, and a failed certificate tightens it tenfold.
        lam = filt.inverse(theta_p)
        tol, _ = tol_a(lam, box["norm_a"])
        return np.where(theta_p > 1.01 * eps_p, tol * filt.derivative(lam), 0.0)

    return thick_restart(
        op, k, largest=True, block_size=block_size, basis_size=basis_size, max_matvecs=budget, tol=tol_p,
        generator=generator, matmat=lambda X: filt.apply(op.matmat, X), cost_per_column=filt.degree,
        spent=spent, callback=callback, start=start, finish=finish,
    )
