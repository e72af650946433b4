"""Explicit inverses of the damped Kronecker factors (the ``inverse="cholesky"`` path).

With the factored Tikhonov damping of Martens & Grosse (2015, section 6.3),
``(A + pi sqrt(lambda) I)^{-1} (x) (G + sqrt(lambda) / pi I)^{-1}`` applied to a gradient matrix
``V`` (``d_out x d_in``) is ``G_inv V A_inv``: two matrix products per layer instead of the four
with eigenvectors of :func:`~curvlens.optim.kfac.inverse.kron_solve`, and a Cholesky
factorization and inversion (about ``d^3`` flops) instead of a symmetric eigendecomposition
(about ``9 d^3``). The result is the same linear map as the eigendecomposition path (the
eigenvalues there are clipped at 0, which only matters for factors with negative rounding
eigenvalues below the damping). The inverses depend on the damping, so they are recomputed
whenever it changes. When the Cholesky factorization fails (a singular factor at zero damping,
non-finite entries) the eigendecomposition path gives the inverse instead.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch

from curvlens.optim.kfac.inverse import EIGH_FLOAT64_MAX_DIM, eigh_factor

__all__ = ["DampedInverse", "damped_inverse", "factor_pi", "kron_inverses", "inverse_solve"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DampedInverse:
    """``(F + shift I)^{-1}`` of one factor ``F``.

    Attributes:
        inv: the inverse ``(d, d)``, or ``(d,)`` for a diagonal factor (elementwise inverse).
        fallback: True when the Cholesky factorization failed and the eigendecomposition
            (or, when that failed as well, the factor's diagonal) was used.
    """

    inv: torch.Tensor
    fallback: bool = False


def damped_inverse(factor: torch.Tensor, shift: float) -> DampedInverse:
    """``(factor + shift I)^{-1}``: Cholesky in float64 for factors up to
    :data:`~curvlens.optim.kfac.inverse.EIGH_FLOAT64_MAX_DIM`, cast back to the factor's dtype.

    Example:
        >>> damped_inverse(torch.tensor([[3.0, 0.0], [0.0, 1.0]]), 1.0).inv.diagonal().tolist()
        [0.25, 0.5]
    """
    tiny = torch.finfo(factor.dtype).tiny
    if factor.dim() == 1:
        return DampedInverse(1.0 / (factor.clamp_min(0) + shift).clamp_min(tiny))
    dtype = factor.dtype
    # Cholesky reads the lower triangle only (the factors are symmetric by construction); a
    # non-finite factor gives a non-finite inverse or a failed factorization
    work = factor.to(torch.float64 if factor.shape[0] <= EIGH_FLOAT64_MAX_DIM else dtype, copy=True)
    work.diagonal().add_(shift)
    chol, info = torch.linalg.cholesky_ex(work)
    if int(info) == 0:
        inv = torch.cholesky_inverse(chol)
        if bool(torch.isfinite(inv).all()):
            return DampedInverse(inv.to(dtype))
    e = eigh_factor(factor)  # logs when it falls back to the diagonal
    denom = (e.values + shift).clamp_min(tiny)
    if e.vectors is None:
        return DampedInverse(torch.diag_embed(1.0 / denom) if factor.dim() == 2 else 1.0 / denom, True)
    logger.info("K-FAC: Cholesky of a %d x %d damped factor failed; inverted by eigendecomposition",
                factor.shape[0], factor.shape[0])
    return DampedInverse((e.vectors / denom) @ e.vectors.T, True)


def factor_pi(a: torch.Tensor, g: torch.Tensor) -> float:
    """The pi-correction ``sqrt((tr A / dim A) / (tr G / dim G))`` from the factors themselves
    (diagonal factors given as vectors); 1 when either trace is not positive."""
    ta = float(a.sum() if a.dim() == 1 else a.diagonal().sum()) / a.shape[0]
    tg = float(g.sum() if g.dim() == 1 else g.diagonal().sum()) / g.shape[0]
    if not (ta > 0 and tg > 0) or not math.isfinite(ta / tg):
        return 1.0
    return math.sqrt(ta / tg)


def kron_inverses(a: torch.Tensor, g: torch.Tensor, damping: float) -> tuple[DampedInverse, DampedInverse]:
    """The damped inverses ``((A + pi sqrt(lambda) I)^{-1}, (G + sqrt(lambda)/pi I)^{-1})``."""
    pi, root = factor_pi(a, g), math.sqrt(damping)
    return damped_inverse(a, pi * root), damped_inverse(g, root / pi)


def inverse_solve(ia: DampedInverse, ig: DampedInverse, v: torch.Tensor) -> torch.Tensor:
    """``G_inv V A_inv`` for ``V`` shaped ``(d_out, d_in)`` (diagonal inverses scale rows/columns)."""
    w = ig.inv[:, None] * v if ig.inv.dim() == 1 else ig.inv @ v
    return w * ia.inv if ia.inv.dim() == 1 else w @ ia.inv
