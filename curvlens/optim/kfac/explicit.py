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

With ``triangular=True`` (``inverse="triangular"``) the factors of at least
:data:`TRIANGULAR_MIN_DIM` rows keep only their Cholesky factor ``L`` and every step solves with
it (``L L^T X = B``, two triangular solves): the inversion costs the factorization alone
(``d^3 / 3`` instead of ``d^3``), each step the same ``2 d^2 k`` flops at a lower rate than a
matrix product. Smaller factors are inverted explicitly (cheap to invert, and one product per
step costs less than two solves).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch

from curvlens.optim.kfac.inverse import EIGH_FLOAT64_MAX_DIM, eigh_factor

__all__ = ["DampedInverse", "damped_inverse", "factor_pi", "kron_inverses", "inverse_solve", "TRIANGULAR_MIN_DIM"]

#: With ``triangular=True``, factors with at least this many rows keep their Cholesky factor.
TRIANGULAR_MIN_DIM = 256

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DampedInverse:
    """``(F + shift I)^{-1}`` of one factor ``F``.

    Attributes:
        inv: the inverse ``(d, d)``, or ``(d,)`` for a diagonal factor (elementwise inverse).
        fallback: True when the Cholesky factorization failed and the eigendecomposition
            (or, when that failed as well, the factor's diagonal) was used.
        lower: the lower Cholesky factor of ``F + shift I`` instead of ``inv`` (which is then
            None), for solves.
    """

    inv: torch.Tensor | None
    fallback: bool = False
    lower: torch.Tensor | None = None


def damped_inverse(factor: torch.Tensor, shift: float, triangular: bool = False) -> DampedInverse:
    """``(factor + shift I)^{-1}``: Cholesky in float64 for factors up to
    :data:`~curvlens.optim.kfac.inverse.EIGH_FLOAT64_MAX_DIM`, cast back to the factor's dtype
    (``triangular=True``: the Cholesky factor itself for factors of at least
    :data:`TRIANGULAR_MIN_DIM` rows, see :func:`inverse_solve`).

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
    if int(info) == 0 and triangular and factor.shape[0] >= TRIANGULAR_MIN_DIM:
        if math.isfinite(float(chol.sum())):  # one reduction: non-finite when an entry is
            return DampedInverse(None, False, chol.to(dtype))
    elif int(info) == 0:
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


def kron_inverses(a: torch.Tensor, g: torch.Tensor, damping: float,
                  triangular: bool = False) -> tuple[DampedInverse, DampedInverse]:
    """The damped inverses ``((A + pi sqrt(lambda) I)^{-1}, (G + sqrt(lambda)/pi I)^{-1})``
    (``triangular=True``: their Cholesky factors where the factorization succeeds)."""
    pi, root = factor_pi(a, g), math.sqrt(damping)
    return damped_inverse(a, pi * root, triangular), damped_inverse(g, root / pi, triangular)


def _solve_left(lower: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(L L^T)^{-1} b``: two triangular solves."""
    y = torch.linalg.solve_triangular(lower, b, upper=False)
    return torch.linalg.solve_triangular(lower.mT, y, upper=True)


def inverse_solve(ia: DampedInverse, ig: DampedInverse, v: torch.Tensor) -> torch.Tensor:
    """``G_inv V A_inv`` for ``V`` shaped ``(d_out, d_in)`` (diagonal inverses scale rows/columns,
    Cholesky factors solve)."""
    if ig.lower is not None:
        w = _solve_left(ig.lower, v)
    else:
        w = ig.inv[:, None] * v if ig.inv.dim() == 1 else ig.inv @ v
    if ia.lower is not None:
        return _solve_left(ia.lower, w.T).T
    return w * ia.inv if ia.inv.dim() == 1 else w @ ia.inv
