"""Both ends of the spectrum at once: :func:`extreme_eigenvalues`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch

from curvlens._rng import resolve_generator
from curvlens.linalg._certify import EigenResult
from curvlens.linalg._validate import check_callback, check_int, check_operator
from curvlens.linalg.eigen import bottom_eigenpairs, default_max_matvecs, top_eigenpairs
from curvlens.results import RunInfo, RunTimer, register_result

if TYPE_CHECKING:
    from curvlens.operators.protocol import LinearOperatorLike


@register_result("extreme_eigenvalues")
@dataclass(frozen=True)
class ExtremeEigenvalues:
    """``lambda_max`` and ``lambda_min`` with their certificates.

    Attributes:
        lambda_max, lambda_min: largest and smallest (algebraic) eigenvalue estimates.
        lambda_max_certified, lambda_min_certified: whether the residual met the tolerance.
        lambda_max_residual, lambda_min_residual: true residuals ``||A v - l v||``.
        top, bottom: the underlying :class:`EigenResult` of each end (with eigenvectors).
        info: run metadata covering both runs.
    """

    lambda_max: float
    lambda_min: float
    lambda_max_certified: bool
    lambda_min_certified: bool
    lambda_max_residual: float
    lambda_min_residual: float
    top: EigenResult
    bottom: EigenResult
    info: RunInfo

    @property
    def condition_number(self) -> float | None:
        """``lambda_max / lambda_min`` when both are positive, else None (indefinite/singular)."""
        if self.lambda_min > 0 and self.lambda_max > 0:
            return self.lambda_max / self.lambda_min
        return None


def extreme_eigenvalues(
    op: LinearOperatorLike,
    *,
    rtol: float = 1e-3,
    atol: float | None = None,
    max_matvecs: int | None = None,
    generator: torch.Generator | int | None = None,
    callback: Callable[[int, int], None] | None = None,
) -> ExtremeEigenvalues:
    """Certified ``lambda_max`` and ``lambda_min`` by two thick-restart Lanczos runs.

    The top end usually converges in a few dozen products; the top run gets half the budget
    and the bottom run the rest (including what the top run did not use), because a Hessian's
    small, clustered negative end needs more products for the same relative residual.

    Args:
        op: a :class:`~curvlens.operators.CurvatureOperator`.
        rtol, atol: residual tolerances, as in :func:`~curvlens.linalg.top_eigenpairs`.
        max_matvecs: total budget for both ends; default ``2 * 500``.
        generator: random starts (Generator, int seed or None for a fresh recorded seed).
        callback: ``callback(matvecs_spent, max_matvecs)``.

    Returns:
        :class:`ExtremeEigenvalues`; not converging at either end gives a certified flag
        False, a status saying what to increase and a ``ConvergenceWarning``.

    Example:
        >>> import torch
        >>> from curvlens.operators import DenseOperator
        >>> op = DenseOperator(torch.diag(torch.linspace(-1.0, 3.0, 40, dtype=torch.float64)))
        >>> ext = extreme_eigenvalues(op, generator=0)
        >>> round(ext.lambda_max, 4), round(ext.lambda_min, 4), ext.lambda_min_certified
        (3.0, -1.0, True)
    """
    check_operator(op)
    if max_matvecs is None:
        max_matvecs = 2 * default_max_matvecs(1, op.dim)
    max_matvecs = check_int(max_matvecs, "max_matvecs", low=4, hint="pass max_matvecs=None for the default")
    check_callback(callback)
    gen = resolve_generator(generator)
    timer = RunTimer(op, gen)
    offset = [0]

    def cb(done, total):
        if callback is not None:
            callback(offset[0] + done, max_matvecs)

    top = top_eigenpairs(op, 1, rtol=rtol, atol=atol, max_matvecs=max_matvecs // 2, generator=gen,
                         callback=cb if callback else None)
    offset[0] = top.info.matvecs
    bottom = bottom_eigenpairs(op, 1, rtol=rtol, atol=atol, max_matvecs=max_matvecs - top.info.matvecs,
                               generator=gen, callback=cb if callback else None)
    ok = bool(top.converged[0]) and bool(bottom.converged[0])
    status = f"lambda_max: {top.info.status}. lambda_min: {bottom.info.status}"
    return ExtremeEigenvalues(
        lambda_max=float(top.eigenvalues[0]),
        lambda_min=float(bottom.eigenvalues[0]),
        lambda_max_certified=bool(top.converged[0]),
        lambda_min_certified=bool(bottom.converged[0]),
        lambda_max_residual=float(top.residuals[0]),
        lambda_min_residual=float(bottom.residuals[0]),
        top=top,
        bottom=bottom,
        info=timer.info(ok, status),
    )
