"""True-residual certificates and the :class:`EigenResult` type shared by every eigensolver."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from curvlens.errors import ConvergenceWarning
from curvlens.linalg._accurate import rayleigh, unit_columns
from curvlens.results import RunInfo, register_result


@register_result("eigen")
@dataclass(frozen=True)
class EigenResult:
    """Eigenpairs with per-pair true-residual certificates.

    Attributes:
        eigenvalues: ``(k,)`` float64. ``top_eigenpairs``: descending; ``bottom_eigenpairs``:
            ascending (most negative first); ``power_iteration``: by decreasing magnitude.
            Each value is the normalized Rayleigh quotient ``v^T A v / v^T v`` of its
            returned vector, accumulated in float64.
        eigenvectors: ``(D, k)`` unit vectors in the operator's dtype and device.
        residuals: ``(k,)`` float64 true residuals ``||A v - l v|| / ||v||`` (recomputed with one
            ``op.matmat`` of the returned vectors, not the Lanczos estimate). Some eigenvalue
            of ``A`` lies within ``residuals[i]`` of ``eigenvalues[i]``.
        tolerances: ``(k,)`` float64, ``max(rtol * |l|, atol)``, the bound each residual was
            held to.
        converged: ``(k,)`` bool, ``residuals <= tolerances`` (the pair is certified).
        which: ``"largest"``, ``"smallest"`` or ``"magnitude"``.
        method: algorithm used (e.g. ``"block_thick_restart_lanczos"``).
        rtol, atol: the tolerances used.
        info: run metadata; ``info.converged`` is ``converged.all()``.
    """

    eigenvalues: torch.Tensor
    eigenvectors: torch.Tensor
    residuals: torch.Tensor
    tolerances: torch.Tensor
    converged: torch.Tensor
    which: str
    method: str
    rtol: float
    atol: float
    info: RunInfo

    @property
    def k(self) -> int:
        return int(self.eigenvalues.numel())

    @property
    def num_converged(self) -> int:
        return int(self.converged.sum())

    @property
    def all_converged(self) -> bool:
        return bool(self.converged.all())


def default_atol(dtype: torch.dtype, dim: int, norm_estimate: float) -> float:
    """Absolute residual floor ``10 * eps(dtype) * sqrt(D) * ||A||``: below it rounding dominates.

    Needed for eigenvalues at or near zero (rank-deficient curvature), where ``rtol * |l|``
    cannot be met in floating point.
    """
    eps = float(torch.finfo(dtype).eps)
    return 10.0 * eps * math.sqrt(max(dim, 1)) * max(float(norm_estimate), 1e-300)


def true_residuals(op, Y: torch.Tensor, AY: torch.Tensor | None = None) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
    """Normalized Rayleigh quotients and true residuals of the columns of ``Y`` (one ``op.matmat``).

    The columns are scaled to unit length with float64 norms, multiplied by ``A``, and the
    quotient ``y^T A y / y^T y`` and the residual ``||A y - l y|| / ||y||`` of each column
    actually multiplied are accumulated in float64 (see :mod:`curvlens.linalg._accurate`):
    the eigenvalue is that of a unit vector even where float32 rounding left the stored
    vector's norm a little off one.

    ``AY``: the products ``A Y`` when they are known (e.g. combined from stored products of a
    Krylov basis, ``A (V S) = (A V) S``); then no product is taken and the quotients and
    residuals are those of ``Y`` as given (:func:`~curvlens.linalg._accurate.rayleigh`
    normalizes).

    Returns:
        ``(theta, residuals, Y_unit)``: float64 numpy arrays and the normalized vectors.
    """
    if Y.shape[1] == 0:
        return np.zeros(0), np.zeros(0), Y
    if AY is not None:
        theta, res = rayleigh(Y, AY)
        return theta, res, unit_columns(Y).contiguous()
    Y = unit_columns(Y).contiguous()
    AY = op.matmat(Y)
    theta, res = rayleigh(Y, AY)
    return theta, res, Y


def build_result(
    *, theta, res, Y, rtol, atol, which, method, timer, name, budget_hint, extra_status=""
) -> EigenResult:
    """Assemble an :class:`EigenResult`, set status and warn on non-convergence."""
    tol = np.maximum(rtol * np.abs(theta), atol)
    conv = res <= tol
    k = len(theta)
    if conv.all():
        status = (
            f"certified: all {k} pair(s) have true residual ||Av - lv|| <= max(rtol*|l|, atol) "
            f"(rtol={rtol:g}, atol={atol:.2g})"
        )
    else:
        status = (
            f"not converged: {int(conv.sum())} of {k} pair(s) certified (worst residual/tolerance "
            f"{float(np.max(res / tol)):.3g}); increase max_matvecs (now {budget_hint}) or loosen rtol "
            f"(now {rtol:g})"
        )
    if extra_status:
        status = f"{status}; {extra_status}"
    info = timer.info(bool(conv.all()), status)
    if not conv.all():
        warnings.warn(f"{name}: {status}", ConvergenceWarning, stacklevel=3)
    return EigenResult(
        eigenvalues=torch.as_tensor(np.asarray(theta, dtype=np.float64)),
        eigenvectors=Y,
        residuals=torch.as_tensor(np.asarray(res, dtype=np.float64)),
        tolerances=torch.as_tensor(np.asarray(tol, dtype=np.float64)),
        converged=torch.as_tensor(conv, dtype=torch.bool),
        which=which,
        method=method,
        rtol=float(rtol),
        atol=float(atol),
        info=info,
    )
