"""MINRES for symmetric indefinite systems ``A x = b``: :func:`minres` and :class:`MinresResult`.

Reference: C. C. Paige and M. A. Saunders, "Solution of sparse indefinite systems of linear
equations", SIAM J. Numer. Anal. 12(4), 1975. MINRES runs the (preconditioned) Lanczos process
on ``A`` and chooses ``x_k`` in the Krylov space minimizing the residual, updated by Givens
rotations of the tridiagonal matrix with three-term recurrences, so memory stays O(D). Unlike
CG it needs no definiteness of ``A`` (a Hessian at a saddle point is fine); a preconditioner
must be symmetric positive definite.

The residual ``r_k = b - A x_k`` is updated alongside ``x_k`` from the same recurrences
(``A w_k`` from ``A v_k``), so :attr:`MinresResult.residual_norms` are 2-norms of residual
vectors with or without a preconditioner, at no extra products. On a singular consistent
system started from zero, the iterates stay in the range of ``A`` and converge to the
minimum-norm solution ``pinv(A) b``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from curvlens.errors import ConvergenceWarning
from curvlens.linalg._validate import check_callback, check_int
from curvlens.linalg._solve import (
    Preconditioner,
    as_operator,
    check_tolerance,
    check_vector,
    default_maxiter,
    dot,
    preconditioner,
)
from curvlens.results import RunInfo, RunTimer, register_result

if TYPE_CHECKING:
    from curvlens.operators.protocol import LinearOperatorLike

log = logging.getLogger(__name__)

STOP_REASONS = ("residual", "maxiter", "breakdown", "nonfinite")


@register_result("minres")
@dataclass(frozen=True)
class MinresResult:
    """The outcome of :func:`minres`.

    Attributes:
        x: the final iterate (operator dtype and device).
        converged: ``||b - A x|| <= max(rtol ||b||, atol)`` was reached.
        iterations: MINRES iterations run (= products, plus one when ``x0`` was given).
        residual_norms: ``||r_k||`` of the recursively updated residual, index 0 for the
            initial iterate (float64).
        stop_reason: ``"residual"``, ``"maxiter"``, ``"breakdown"`` (the Krylov space became
            invariant before the residual met the tolerance: ``b`` is not in the range of ``A``
            and ``x`` minimizes the residual over that space) or ``"nonfinite"``.
        info: run metadata (``info.matvecs``, ``info.status``).
    """

    x: torch.Tensor
    converged: bool
    iterations: int
    residual_norms: tuple[float, ...]
    stop_reason: str
    info: RunInfo

    @property
    def status(self) -> str:
        return self.info.status

    @property
    def residual_norm(self) -> float:
        return self.residual_norms[-1]


def minres(
    op: LinearOperatorLike | torch.Tensor,
    b: torch.Tensor,
    *,
    rtol: float = 1e-5,
    atol: float = 0.0,
    maxiter: int | None = None,
    M: Preconditioner | None = None,
    M_diag: torch.Tensor | None = None,
    x0: torch.Tensor | None = None,
    callback: Callable[[int, float], None] | None = None,
) -> MinresResult:
    """Solve a symmetric, possibly indefinite or singular, system ``A x = b`` by MINRES.

    Args:
        op: the symmetric operator ``A`` (a :class:`~curvlens.operators.CurvatureOperator`,
            anything with ``dim``, ``dtype``, ``device`` and ``matvec``, or a dense symmetric
            tensor).
        b: right-hand side, a flat tensor in the operator's dtype and device.
        rtol, atol: stop when ``||b - A x_k|| <= max(rtol * ||b||, atol)``.
        maxiter: iteration cap; default ``min(10 * D, 10_000)``.
        M: symmetric positive definite preconditioner approximating ``|A|^{-1}``, applied as
            ``M.matvec(r)`` or ``M(r)``.
        M_diag: alternatively a positive flat tensor ``d`` with ``diag(d) ~ |A|`` (``z = r / d``).
        x0: warm start (default zero; costs one product).
        callback: ``callback(iteration, residual_norm)`` after each iteration.

    Returns:
        :class:`MinresResult`; a ``ConvergenceWarning`` when it stops without converging.

    Example:
        >>> import torch
        >>> A = torch.tensor([[1.0, 2.0], [2.0, -1.0]], dtype=torch.float64)  # indefinite
        >>> res = minres(A, torch.tensor([3.0, 1.0], dtype=torch.float64), rtol=1e-12)
        >>> res.stop_reason, [round(v, 6) for v in res.x.tolist()]
        ('residual', [1.0, 1.0])
    """
    op = as_operator(op)
    b = check_vector(b, "b", op)
    rtol, atol = check_tolerance(rtol, "rtol"), check_tolerance(atol, "atol")
    maxiter = default_maxiter(op.dim) if maxiter is None else check_int(maxiter, "maxiter", low=0)
    check_callback(callback)
    precond = preconditioner(M, M_diag, op)
    timer = RunTimer(None)
    eps = torch.finfo(op.dtype).eps
    matvecs = 0

    if x0 is None:
        x, r = torch.zeros_like(b), b.clone()
    else:
        x = check_vector(x0, "x0", op).clone()
        r = b - op.matvec(x)
        matvecs += 1
    tol = max(rtol * math.sqrt(dot(b, b)), atol)
    rnorm = math.sqrt(dot(r, r))
    hist = [rnorm]
    k, reason = 0, None
    if not math.isfinite(rnorm):
        reason = "nonfinite"
    elif rnorm <= tol:
        reason = "residual"
    elif maxiter == 0:
        reason = "maxiter"
    else:
        y = precond(r)
        beta = _beta(dot(r, y), 0.0, eps, 0)
        if not math.isfinite(beta):
            reason = "nonfinite"
        elif beta == 0.0:
            raise ValueError("M: the preconditioner must be positive definite, got r^T M r = 0 for the initial "
                             "residual; use a positive diagonal (M_diag=abs(diag) + lam)")
        r1, r2 = r.clone(), r.clone()  # previous and current unnormalized Lanczos vectors
        oldb, dbar, epsln, phibar, cs, sn, tnorm2 = 0.0, 0.0, 0.0, beta, -1.0, 0.0, 0.0
        w, w2, Aw, Aw2 = (torch.zeros_like(b) for _ in range(4))
    while reason is None:
        v = y / beta
        Av = op.matvec(v)
        matvecs += 1
        y = Av - (beta / oldb) * r1 if k > 0 else Av.clone()
        alfa = dot(v, y)
        if not math.isfinite(alfa):
            reason = "nonfinite"
            break
        y = y - (alfa / beta) * r2
        r1, r2 = r2, y
        y = precond(r2)
        oldb, beta = beta, _beta(dot(r2, y), beta, eps, k + 1)
        if not math.isfinite(beta):
            reason = "nonfinite"
            break
        tnorm2 += alfa**2 + oldb**2 + beta**2
        # apply the previous rotation to the new column of T, then a new rotation to annihilate beta
        oldeps = epsln
        delta = cs * dbar + sn * alfa
        gbar = sn * dbar - cs * alfa
        epsln = sn * beta
        dbar = -cs * beta
        gamma = math.hypot(gbar, beta)
        # gamma >= beta: a tiny gamma means the Krylov space is invariant and T_k singular,
        # i.e. b has a component outside the range of A; stop before dividing by it
        tau = math.sqrt(eps) * math.sqrt(tnorm2)
        if gamma <= tau:
            reason = "breakdown"
            break
        cs, sn = gbar / gamma, beta / gamma
        phi, phibar = cs * phibar, sn * phibar
        w1, w2, Aw1, Aw2 = w2, w, Aw2, Aw
        w = (v - oldeps * w1 - delta * w2) / gamma
        Aw = (Av - oldeps * Aw1 - delta * Aw2) / gamma
        x.add_(w, alpha=phi)
        r.add_(Aw, alpha=-phi)
        rnorm = math.sqrt(dot(r, r))
        k += 1
        hist.append(rnorm)
        if callback is not None:
            callback(k, rnorm)
        if not math.isfinite(rnorm):
            reason = "nonfinite"
        elif rnorm <= tol:
            reason = "residual"
        elif beta <= tau:
            reason = "breakdown"  # invariant Krylov space: no further progress is possible
        elif k >= maxiter:
            reason = "maxiter"

    converged = reason == "residual"
    status = _status(reason, k, rnorm, tol, maxiter)
    if not converged:
        warnings.warn(f"minres: {status}", ConvergenceWarning, stacklevel=2)
    log.debug("minres: %s", status)
    info = dataclasses.replace(timer.info(converged, status), matvecs=matvecs, dtype=str(op.dtype),
                               device=str(op.device))
    return MinresResult(x=x, converged=converged, iterations=k, residual_norms=tuple(hist), stop_reason=reason,
                        info=info)


def _beta(beta_sq: float, prev: float, eps: float, k: int) -> float:
    """``sqrt(r^T M r)``; a clearly negative value means ``M`` is not positive definite."""
    if not math.isfinite(beta_sq):
        return math.nan
    if beta_sq < -100 * eps * max(prev, 1.0) ** 2:
        raise ValueError(f"M: the preconditioner must be symmetric positive definite, got r^T M r = {beta_sq:.3e} "
                         f"at iteration {k}; use a positive diagonal (M_diag=abs(diag) + lam)")
    return math.sqrt(max(beta_sq, 0.0))


def _status(reason: str, k: int, rnorm: float, tol: float, maxiter: int) -> str:
    if reason == "residual":
        return f"converged: residual {rnorm:.3e} <= tolerance {tol:.3e} after {k} iterations"
    if reason == "maxiter":
        return (f"not converged: stopped at maxiter={maxiter} with residual {rnorm:.3e} > tolerance {tol:.3e}; "
                "increase maxiter, loosen rtol/atol, or pass a preconditioner (M= or M_diag=)")
    if reason == "breakdown":
        return (f"stopped at iteration {k}: the Krylov space is invariant with residual {rnorm:.3e} > tolerance "
                f"{tol:.3e}; b is not in the range of A, and x minimizes the residual over that space")
    return f"stopped at iteration {k}: a non-finite value in a product or the preconditioner; check for NaN/inf"
