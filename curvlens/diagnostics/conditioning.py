"""Conditioning of a curvature matrix: certified extremes, condition number, effective ones.

Definitions (eigenvalues ``l_1 >= l_2 >= ... >= l_D`` of the symmetric operator ``A``):

What a residual certificate says: for a Ritz pair ``(theta, v)`` with ``r = ||A v - theta v||``,
*some* eigenvalue of ``A`` lies in ``[theta - r, theta + r]``, not that it is the smallest (or
largest) one: a Krylov space can miss an eigenvector its start vector barely touches. What
always holds is that Ritz values lie inside the spectrum, ``l_min <= theta_min`` and
``theta_max <= l_max``, so

* ``lambda_min_upper_bound = theta_min`` and ``condition_number_lower_bound =
  theta_max / theta_min`` (when ``theta_min > 0``; when a PSD matrix's ``theta_min`` is at the
  rounding level, ``theta_max / r``) hold whether or not the solver converged;
* ``lambda_min_status`` says how far the bottom end is known: ``"verified"`` (a float64 dense
  eigensolve, :func:`resolve_bottom_float64`, found the smallest eigenvalue), ``"resolved"``
  (certified and ``theta_min - r > 0``: an eigenvalue near ``theta_min``; smaller ones are not
  excluded), ``"unresolved"`` (not certified, or the interval reaches 0: in float32 the
  products' rounding, about ``eps * ||A||``, hides eigenvalues that small) or ``"not_measured"``;
* ``condition_number = theta_max / theta_min`` only when the bottom end is resolved or verified
  (then it equals the bound; it is exact when verified), else None, and the bound stands in.
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

__all__ = ["ConditioningResult", "conditioning_from", "resolve_bottom_float64"]


@register_result("conditioning")
@dataclass(frozen=True)
class ConditioningResult:
    """Extreme eigenvalues with certificates, condition number and effective condition numbers.

    Attributes:
        lambda_max, lambda_max_residual, lambda_max_certified: largest eigenvalue, its true
            residual ``||Av - lv||`` and whether it met its tolerance.
        lambda_min, lambda_min_residual, lambda_min_certified: same for the smallest (None
            when the bottom end was not measured).
        condition_number: ``l_max / l_min`` when the bottom end is resolved or verified, else None.
        effective_names, effective_values: the effective condition numbers that are defined
            (see the module docstring for the definitions).
        effective_condition_number: the headline one (``l_max/(trace/D)`` when defined, else
            ``l_max/l_k``), or None.
        info: run metadata (no products of its own: computed from other results).
        lambda_min_status: ``"verified"``, ``"resolved"``, ``"unresolved"`` or ``"not_measured"``.
        lambda_min_upper_bound: ``theta_min``, an upper bound of the smallest eigenvalue (None
            when the bottom end was not measured).
        condition_number_lower_bound: a lower bound of ``l_max / l_min`` that holds without
            convergence (see the module docstring), or None.
        notes: sentences on what the bottom end does and does not show.
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
    lambda_min_status: str = "not_measured"
    lambda_min_upper_bound: float | None = None
    condition_number_lower_bound: float | None = None
    notes: tuple[str, ...] = ()


def conditioning_from(top: EigenResult, bottom: EigenResult | None = None, *, trace: float | None = None,
                      dim: int | None = None, psd: bool = False,
                      verified_lambda_min: float | None = None) -> ConditioningResult:
    """Build a :class:`ConditioningResult` from measured eigenpairs (and optionally a trace).

    Args:
        top: result of :func:`~curvlens.linalg.top_eigenpairs` (descending eigenvalues).
        bottom: result of :func:`~curvlens.linalg.bottom_eigenpairs` (ascending), or None.
        trace: an estimate of ``tr(A)`` (e.g. ``TraceResult.estimate``), or None.
        dim: ``D``, needed with ``trace``.
        psd: the operator is PSD by construction (GGN, Fisher): a ``theta_min`` at the rounding
            level still bounds ``kappa >= theta_max / r``.
        verified_lambda_min: the smallest eigenvalue from an exact check
            (:func:`resolve_bottom_float64`), which makes the bottom end ``"verified"``.

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
    cond = bound = None
    status, notes = "not_measured", []
    if bottom is not None and bottom.k >= 1:
        lmin, rmin, cmin = float(bottom.eigenvalues[0]), float(bottom.residuals[0]), bool(bottom.converged[0])
        if verified_lambda_min is not None:
            lmin, rmin, cmin, status = float(verified_lambda_min), 0.0, True, "verified"
            notes.append("lambda_min verified by a float64 dense eigensolve")
        elif cmin and lmin - rmin > 0:
            status = "resolved"
            notes.append(f"an eigenvalue lies within {rmin:.3g} of theta_min = {lmin:.6g}; the Krylov space may miss "
                         "smaller ones, so lambda_min <= theta_min and kappa >= theta_max / theta_min")
        else:
            status = "unresolved"
            why = "not certified" if not cmin else f"its certificate interval [{lmin - rmin:.3g}, {lmin + rmin:.3g}] reaches 0"
            notes.append(f"lambda_min is unresolved ({why}): {bottom.info.dtype or 'the'} products cannot separate it "
                         "from 0; only the bound holds; resolve it with resolve_bottom_float64 or analyze a float64 model")
        if lmax > 0 and lmin > 0:
            bound = lmax / lmin
        elif lmax > 0 and psd and rmin > 0:
            bound = lmax / rmin  # l_min <= theta_min <= 0 < r for a PSD matrix
        if status in ("verified", "resolved") and cmax and lmax > 0 and lmin > 0:
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
    run_status = "computed from certified extremes" if ok else (
        "an extreme eigenvalue is not certified: increase the eigensolver's max_matvecs")
    info = RunInfo(seed=top.info.seed, matvecs=0, wall_time=time.perf_counter() - t0, converged=ok, status=run_status,
                   dtype=top.info.dtype, device=top.info.device)
    return ConditioningResult(
        lambda_max=lmax, lambda_max_residual=rmax, lambda_max_certified=cmax,
        lambda_min=lmin, lambda_min_residual=rmin, lambda_min_certified=cmin, condition_number=cond,
        effective_names=tuple(names), effective_values=tuple(float(v) for v in values),
        effective_condition_number=None if headline is None else float(headline), info=info,
        lambda_min_status=status, lambda_min_upper_bound=None if bottom is None or bottom.k < 1 else
        float(bottom.eigenvalues[0]), condition_number_lower_bound=bound, notes=tuple(notes),
    )


def resolve_bottom_float64(op, *, max_dim: int = 4000) -> float | None:
    """The smallest eigenvalue from a dense float64 eigensolve, where that is affordable.

    A float32 operator's products carry rounding of about ``eps * ||A||`` (``eps = 1.2e-7``),
    which hides eigenvalues of that size: an ill-conditioned problem's bottom end cannot be
    resolved in float32 by any iterative solver. Here the operator is rebuilt in float64 (a
    :class:`~curvlens.operators.DenseOperator`'s matrix, or a model operator on a float64 copy of
    the model and data) and its dense matrix, ``D`` products, is diagonalised.

    Args:
        op: a DenseOperator or a model operator (Hessian, GGN, empirical Fisher) built from
            ``(model, loss_fn, data)``.
        max_dim: largest ``D`` for the dense route.

    Returns:
        The smallest eigenvalue, or None when ``D > max_dim`` or the operator cannot be rebuilt
        in float64 (then say so, and rely on the bounds).

    Example:
        >>> import torch
        >>> from curvlens.operators import DenseOperator
        >>> A = torch.diag(torch.tensor([1e-7, 1.0, 2.0]))
        >>> f"{resolve_bottom_float64(DenseOperator(A)):.3g}"
        '1e-07'
    """
    import copy

    from curvlens.operators import DenseOperator

    if int(op.dim) > max_dim:
        return None
    if isinstance(op, DenseOperator):
        dense = op.to_dense().to(torch.float64)
    else:
        problem = getattr(op, "problem", None)
        if problem is None or type(op).__name__ not in ("HessianOperator", "GGNOperator", "EmpiricalFisherOperator"):
            return None
        model64 = copy.deepcopy(problem.model).to(torch.float64)
        batches = [_to64(b) for b in problem.batches]
        op64 = type(op)(model64, problem.loss_fn, batches[0] if len(batches) == 1 else batches,
                        params=list(problem.param_names))
        dense = op64.to_dense().to(torch.float64)
    dense = 0.5 * (dense + dense.T)
    return float(torch.linalg.eigvalsh(dense)[0])


def _to64(x):
    if isinstance(x, torch.Tensor):
        return x.to(torch.float64) if x.is_floating_point() else x
    if isinstance(x, (tuple, list)):
        return type(x)(_to64(v) for v in x)
    if isinstance(x, dict):
        return {k: _to64(v) for k, v in x.items()}
    return x
