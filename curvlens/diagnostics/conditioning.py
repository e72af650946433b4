"""Conditioning of a curvature matrix: certified extremes, condition number, effective ones.

Definitions (eigenvalues ``l_1 >= l_2 >= ... >= l_D`` of the symmetric operator ``A``):

* ``condition_number = l_max / l_min``, reported **only** when ``l_min`` is certified and the
  certificate interval ``[l_min - r, l_min + r]`` (``r`` the true residual) lies strictly above
  0. It is always defined for a positive definite GGN/Fisher and is None for an indefinite or
  (numerically) singular matrix, where it would be meaningless.
* ``"l_max/l_k(k=K)"``: ``l_1 / l_K`` for the smallest of the computed top eigenvalues, when it
  is positive: how much the sharpest direction dominates the next ``K - 1`` ones. Defined when
  many eigenvalues are near zero.
* ``"l_max/(trace/D)"``: ``l_1 / (tr(A) / D)``, sharpest curvature over the mean curvature
  (Hessians of trained networks: a few outliers over a bulk near 0). Defined when the trace is
  positive; this is the headline ``effective_condition_number`` when available, else the
  ``l_max/l_k`` one.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from curvlens.linalg import EigenResult
from curvlens.results import RunInfo, register_result

__all__ = ["ConditioningResult", "conditioning_from"]


@register_result("conditioning")
@dataclass(frozen=True)
class ConditioningResult:
    """Extreme eigenvalues with certificates, condition number and effective condition numbers.

    Attributes:
        lambda_max, lambda_max_residual, lambda_max_certified: largest eigenvalue, its true
            residual ``||Av - lv||`` and whether it met its tolerance.
        lambda_min, lambda_min_residual, lambda_min_certified: same for the smallest (None
            when the bottom end was not measured).
        condition_number: ``l_max / l_min`` when certified ``l_min - residual > 0``, else None.
        effective_names, effective_values: the effective condition numbers that are defined
            (see the module docstring for the definitions).
        effective_condition_number: the headline one (``l_max/(trace/D)`` when defined, else
            ``l_max/l_k``), or None.
        info: run metadata (no products of its own: computed from other results).
    """

    lambda_max: float
    lambda_max_residual: float
    lambda_max_certified: bool
    lambda_min: float | None
    lambda_min_residual: float | None
    lambda_min_certified: bool | None
    condition_number: float | None
    effective_names: tuple[str, ...]
    effective_values: tuple[float, ...]
    effective_condition_number: float | None
    info: RunInfo


def conditioning_from(top: EigenResult, bottom: EigenResult | None = None, *, trace: float | None = None,
                      dim: int | None = None) -> ConditioningResult:
    """Build a :class:`ConditioningResult` from measured eigenpairs (and optionally a trace).

    Args:
        top: result of :func:`~curvlens.linalg.top_eigenpairs` (descending eigenvalues).
        bottom: result of :func:`~curvlens.linalg.bottom_eigenpairs` (ascending), or None.
        trace: an estimate of ``tr(A)`` (e.g. ``TraceResult.estimate``), or None.
        dim: ``D``, needed with ``trace``.

    Example:
        >>> import torch
        >>> from curvlens.operators import DenseOperator
        >>> from curvlens.linalg import top_eigenpairs, bottom_eigenpairs
        >>> op = DenseOperator(torch.diag(torch.tensor([1.0, 2.0, 4.0, 8.0], dtype=torch.float64)))
        >>> c = conditioning_from(top_eigenpairs(op, 2, generator=0), bottom_eigenpairs(op, 1, generator=0),
        ...                       trace=15.0, dim=4)
        >>> round(c.condition_number, 6), c.effective_names[0], round(c.effective_values[0], 6)
        (8.0, 'l_max/l_k(k=2)', 2.0)
    """
    if not isinstance(top, EigenResult) or top.k < 1:
        raise TypeError(f"top: expected an EigenResult from top_eigenpairs with k >= 1, got {type(top).__name__}; "
                        "pass top_eigenpairs(op, k)")
    if bottom is not None and not isinstance(bottom, EigenResult):
        raise TypeError(f"bottom: expected an EigenResult from bottom_eigenpairs or None, got {type(bottom).__name__}")
    if trace is not None and (dim is None or int(dim) < 1):
        raise ValueError(f"dim: expected the operator dimension D >= 1 together with trace, got {dim!r}; pass dim=op.dim")
    t0 = time.perf_counter()
    lmax, rmax, cmax = float(top.eigenvalues[0]), float(top.residuals[0]), bool(top.converged[0])
    lmin = rmin = cmin = None
    cond = None
    if bottom is not None and bottom.k >= 1:
        lmin, rmin, cmin = float(bottom.eigenvalues[0]), float(bottom.residuals[0]), bool(bottom.converged[0])
        if cmin and cmax and lmin - rmin > 0 and lmax > 0:
            cond = lmax / lmin
    names: list[str] = []
    values: list[float] = []
    if top.k >= 2:
        lk = float(top.eigenvalues[-1])
        if lk > 0 and lmax > 0:
            names.append(f"l_max/l_k(k={top.k})")
            values.append(lmax / lk)
    headline = values[0] if values else None
    if trace is not None and math.isfinite(float(trace)) and float(trace) > 0 and lmax > 0:
        names.append("l_max/(trace/D)")
        values.append(lmax * int(dim) / float(trace))
        headline = values[-1]
    ok = cmax and (cmin is None or cmin)
    status = "computed from certified extremes" if ok else (
        "an extreme eigenvalue is not certified: increase the eigensolver's max_matvecs")
    info = RunInfo(seed=top.info.seed, matvecs=0, wall_time=time.perf_counter() - t0, converged=ok, status=status,
                   dtype=top.info.dtype, device=top.info.device)
    return ConditioningResult(
        lambda_max=lmax, lambda_max_residual=rmax, lambda_max_certified=cmax,
        lambda_min=lmin, lambda_min_residual=rmin, lambda_min_certified=cmin, condition_number=cond,
        effective_names=tuple(names), effective_values=tuple(float(v) for v in values),
        effective_condition_number=None if headline is None else float(headline), info=info,
    )
