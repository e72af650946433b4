"""Preconditioned conjugate gradients for ``A x = b``: :func:`cg` and :class:`CGResult`.

Reference: M. R. Hestenes and E. Stiefel, "Methods of conjugate gradients for solving linear
systems" (1952); the preconditioned form as in Y. Saad, *Iterative Methods for Sparse Linear
Systems*, 2nd ed., Alg. 9.1; the relative-progress stop and the backtracking schedule of kept
iterates from J. Martens, "Deep learning via Hessian-free optimization" (ICML 2010), Sec. 4.4
and 4.6.

CG minimizes ``phi(x) = 1/2 x^T A x - b^T x`` over growing Krylov spaces, which solves
``A x = b`` when ``A`` is symmetric positive definite. On a matrix that is not (a Hessian, an
undamped singular GGN) it meets a direction ``p`` with ``p^T A p <= 0``; that is reported as
a result (``stop_reason="negative_curvature"`` and the direction), never raised. The loop is in
torch (one product, two or three dot products and three axpys per iteration); only scalars
leave the device.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from curvlens.errors import ConvergenceWarning
from curvlens.linalg._validate import check_callback, check_int, check_positive_float
from curvlens.linalg._solve import (  # noqa: F401  (re-exported for minres and callers)
    Preconditioner, as_operator, check_tolerance, check_vector, default_maxiter, dot, preconditioner,
)
from curvlens.results import RunInfo, RunTimer, register_result

if TYPE_CHECKING:
    from curvlens.operators.protocol import LinearOperatorLike

log = logging.getLogger(__name__)

STOP_REASONS = ("residual", "maxiter", "progress", "negative_curvature", "nonfinite")
_MARTENS_GAMMA = 1.3

@register_result("cg")
@dataclass(frozen=True)
class CGResult:
    """The outcome of :func:`cg`.

    Attributes:
        x: the final iterate (operator dtype and device).
        converged: True when a requested tolerance was met: the residual rule, or Martens'
            relative-progress rule when ``progress_tol`` was given.
        iterations: CG iterations run (= products, plus one when ``x0`` was given).
        stop_reason: one of ``"residual"``, ``"maxiter"``, ``"progress"``,
            ``"negative_curvature"``, ``"nonfinite"``.
        residual_norms: ``||r_i||`` of the recursively updated residual ``r_i = b - A x_i``,
            index 0 for the initial iterate (float64).
        quadratic_values: ``phi(x_i) = 1/2 x_i^T A x_i - b^T x_i`` at every iterate, computed as
            ``-1/2 x_i^T (b + r_i)`` from the recursive residual (no extra products).
        kept_iterations, kept_iterates: the iterations whose iterates were kept (ascending) and
            those iterates; the final iterate is always among them. :attr:`iterates` gives them
            as a dict.
        negative_direction: the first search direction ``p`` with ``p^T A p <= 0``, or None.
        negative_curvature: its ``p^T A p / p^T p`` (float64), or None.
        info: run metadata (``info.matvecs`` counts the products, ``info.status`` says why CG
            stopped and what to change).
    """

    x: torch.Tensor
    converged: bool
    iterations: int
    stop_reason: str
    residual_norms: tuple[float, ...]
    quadratic_values: tuple[float, ...]
    kept_iterations: tuple[int, ...]
    kept_iterates: tuple[torch.Tensor, ...]
    negative_direction: torch.Tensor | None
    negative_curvature: float | None
    info: RunInfo

    def __post_init__(self):
        if len(self.kept_iterations) != len(self.kept_iterates):
            raise ValueError("kept_iterations and kept_iterates must have the same length")

    @property
    def iterates(self) -> dict[int, torch.Tensor]:
        """Kept iterates by iteration number (``0`` is the initial iterate)."""
        return dict(zip(self.kept_iterations, self.kept_iterates))

    @property
    def status(self) -> str:
        return self.info.status

    @property
    def residual_norm(self) -> float:
        return self.residual_norms[-1]


def martens_schedule(maxiter: int, gamma: float = _MARTENS_GAMMA) -> frozenset[int]:
    """Iterations ``ceil(gamma^j)``, ``j = 0, 1, ...`` up to ``maxiter`` (Martens 2010, Sec. 4.6).

    Example:
        >>> sorted(martens_schedule(12))
        [1, 2, 3, 4, 5, 7, 9, 11]
    """
    out, j = set(), 0
    while (i := math.ceil(gamma**j - 1e-9)) <= maxiter:
        out.add(i)
        j += 1
    return frozenset(out)


def _keep_set(keep, maxiter: int) -> frozenset[int]:
    if keep is None:
        return frozenset()
    if isinstance(keep, str):
        if keep != "martens":
            raise ValueError(f"keep: expected 'martens', an iterable of iteration numbers or None, got {keep!r}")
        return martens_schedule(maxiter)
    try:
        items = list(keep)
    except TypeError:
        raise TypeError(f"keep: expected 'martens', an iterable of ints or None, got {type(keep).__name__}; "
                        "pass e.g. keep=[5, 10, 20]") from None
    return frozenset(check_int(i, "keep", low=0, hint="iteration numbers start at 0 (the initial iterate)")
                     for i in items)


def cg(
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
    keep: Iterable[int] | str | None = None,
    progress_tol: float | None = None,
    stop_on_negative_curvature: bool = True,
) -> CGResult:
    """Solve ``A x = b`` by (preconditioned) conjugate gradients.

    Args:
        op: the symmetric operator ``A``: a :class:`~curvlens.operators.CurvatureOperator`,
            anything with ``dim``, ``dtype``, ``device`` and ``matvec``, or a dense symmetric
            ``(D, D)`` tensor.
        b: right-hand side, a flat tensor of length ``D`` in the operator's dtype and device.
        rtol, atol: stop when ``||b - A x_i|| <= max(rtol * ||b||, atol)``.
        maxiter: iteration cap; default ``min(10 * D, 10_000)`` (exact arithmetic needs ``D``;
            rounding on ill-conditioned problems needs more, but beyond 10k products a
            preconditioner or a looser tolerance is the better fix).
        M: preconditioner approximating ``A^{-1}`` (scipy's meaning), applied to the residual
            as ``M.matvec(r)`` (an operator) or ``M(r)`` (a callable); must be symmetric
            positive definite.
        M_diag: alternatively a positive flat tensor ``d`` with ``diag(d) ~ A`` (e.g. an
            estimated diagonal of the curvature plus damping); the residual is divided by it.
        x0: warm start (default zero; costs one product).
        callback: ``callback(iteration, residual_norm)`` after each iteration.
        keep: iterations whose iterates to keep: ints (``0`` = ``x0``) or ``"martens"``
            (``ceil(1.3^j)``, the schedule Martens uses to backtrack along CG iterates).
        progress_tol: Martens' relative-progress stop: at iteration ``i`` with
            ``k = max(10, ceil(0.1 i))``, stop when ``i > k``, ``phi_i < 0`` and
            ``(phi_i - phi_{i-k}) / phi_i < k * progress_tol`` (Martens uses 5e-4).
        stop_on_negative_curvature: stop at a direction with ``p^T A p <= 10 eps ||p|| ||A p||``
            and return the current iterate. With False, CG steps on along directions of
            clearly negative curvature (it then no longer minimizes ``phi``) and still stops at
            numerically zero curvature, where the step is undefined.

    Returns:
        :class:`CGResult`. A ``ConvergenceWarning`` is issued when CG stops at ``maxiter`` or
        on a non-finite value.

    Example:
        >>> import torch
        >>> A = torch.tensor([[4.0, 1.0], [1.0, 3.0]], dtype=torch.float64)
        >>> res = cg(A, torch.tensor([1.0, 2.0], dtype=torch.float64), rtol=1e-12)
        >>> res.stop_reason, res.iterations, [round(v, 6) for v in res.x.tolist()]
        ('residual', 2, [0.090909, 0.636364])
    """
    op = as_operator(op)
    D = op.dim
    b = check_vector(b, "b", op)
    rtol, atol = check_tolerance(rtol, "rtol"), check_tolerance(atol, "atol")
    maxiter = default_maxiter(D) if maxiter is None else check_int(maxiter, "maxiter", low=0)
    if progress_tol is not None:
        progress_tol = check_positive_float(progress_tol, "progress_tol", hint="Martens uses progress_tol=5e-4")
    if not isinstance(stop_on_negative_curvature, bool):
        raise TypeError(f"stop_on_negative_curvature: expected a bool, got {type(stop_on_negative_curvature).__name__}")
    check_callback(callback)
    keep_set = _keep_set(keep, maxiter)
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
    bnorm = math.sqrt(dot(b, b))
    tol = max(rtol * bnorm, atol)
    rnorm = math.sqrt(dot(r, r))
    res_hist, phi_hist = [rnorm], [-0.5 * (dot(x, b) + dot(x, r))]
    kept: dict[int, torch.Tensor] = {0: x.clone()} if 0 in keep_set else {}
    neg_dir, neg_curv = None, None
    i, reason = 0, None
    if not math.isfinite(rnorm):
        reason = "nonfinite"
    elif rnorm <= tol:
        reason = "residual"
    elif maxiter == 0:
        reason = "maxiter"
    else:
        z = precond(r)
        rho = dot(r, z)
        p = z.clone()
    while reason is None:
        if not math.isfinite(rho):
            reason = "nonfinite"
            break
        if rho <= 0:
            raise ValueError(f"M: the preconditioner must be symmetric positive definite, got r^T M r = {rho:.3e} "
                             f"at iteration {i}; use a positive diagonal (M_diag=) or add damping to M")
        Ap = op.matvec(p)
        matvecs += 1
        pAp, pp = dot(p, Ap), dot(p, p)
        if not math.isfinite(pAp):
            reason = "nonfinite"
            break
        zero_band = 10 * eps * math.sqrt(pp * dot(Ap, Ap))
        if pAp <= zero_band:
            if neg_dir is None:
                neg_dir, neg_curv = p.clone(), pAp / pp
            if stop_on_negative_curvature or pAp >= -zero_band:
                reason = "negative_curvature"
                break
        alpha = rho / pAp
        x.add_(p, alpha=alpha)
        r.add_(Ap, alpha=-alpha)
        rnorm = math.sqrt(dot(r, r))
        if not math.isfinite(rnorm):
            x.sub_(p, alpha=alpha)
            reason = "nonfinite"
            break
        i += 1
        res_hist.append(rnorm)
        phi_hist.append(-0.5 * (dot(x, b) + dot(x, r)))
        if i in keep_set:
            kept[i] = x.clone()
        if callback is not None:
            callback(i, rnorm)
        if rnorm <= tol:
            reason = "residual"
        elif progress_tol is not None and _little_progress(phi_hist, i, progress_tol):
            reason = "progress"
        elif i >= maxiter:
            reason = "maxiter"
        else:
            z = precond(r)
            rho_new = dot(r, z)
            p.mul_(rho_new / rho).add_(z)
            rho = rho_new

    kept[i] = x.clone() if i not in kept else kept[i]
    converged = reason in ("residual", "progress")
    status = _status(reason, i, rnorm, tol, maxiter, neg_curv, progress_tol)
    if reason in ("maxiter", "nonfinite"):
        warnings.warn(f"cg: {status}", ConvergenceWarning, stacklevel=2)
    log.debug("cg: %s", status)
    info = dataclasses.replace(timer.info(converged, status), matvecs=matvecs, dtype=str(op.dtype),
                               device=str(op.device))
    order = sorted(kept)
    return CGResult(x=x, converged=converged, iterations=i, stop_reason=reason, residual_norms=tuple(res_hist),
                    quadratic_values=tuple(phi_hist), kept_iterations=tuple(order),
                    kept_iterates=tuple(kept[j] for j in order), negative_direction=neg_dir,
                    negative_curvature=neg_curv, info=info)


def _little_progress(phi: list[float], i: int, tol: float) -> bool:
    """Martens (2010), Sec. 4.4: relative decrease of phi over the last k iterations below k * tol."""
    k = max(10, math.ceil(0.1 * i))
    return i > k and phi[i] < 0 and (phi[i] - phi[i - k]) / phi[i] < k * tol


def _status(reason: str, i: int, rnorm: float, tol: float, maxiter: int, curv, progress_tol) -> str:
    if reason == "residual":
        return f"converged: residual {rnorm:.3e} <= tolerance {tol:.3e} after {i} iterations"
    if reason == "progress":
        return (f"converged: relative progress of phi below progress_tol={progress_tol:g} after {i} iterations "
                f"(residual {rnorm:.3e})")
    if reason == "maxiter":
        return (f"not converged: stopped at maxiter={maxiter} with residual {rnorm:.3e} > tolerance {tol:.3e}; "
                "increase maxiter, loosen rtol/atol, or pass a preconditioner (M= or M_diag=)")
    if reason == "negative_curvature":
        return (f"stopped at iteration {i}: direction of non-positive curvature p^T A p / p^T p = {curv:.3e}; "
                "the operator is not positive definite: add damping (op + lam) or use minres for indefinite A")
    return (f"stopped at iteration {i}: a non-finite value in a product, b, x0 or the preconditioner; check the "
            "operator and the inputs for NaN/inf")
