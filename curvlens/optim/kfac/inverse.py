"""Eigendecompositions of Kronecker factors and the damped Kronecker solve.

With ``A = Q_A diag(a) Q_A^T`` and ``G = Q_G diag(g) Q_G^T``, the factored Tikhonov damping of
Martens & Grosse (2015, section 6.3) replaces ``A (x) G + lambda I`` by
``(A + pi sqrt(lambda) I) (x) (G + sqrt(lambda) / pi I)`` with
``pi = sqrt((tr A / dim A) / (tr G / dim G))``, whose inverse applied to a gradient matrix ``V``
(``d_out x d_in``) is ``Q_G [(Q_G^T V Q_A) / ((g + sqrt(lambda)/pi)(a + pi sqrt(lambda))^T)] Q_A^T``.
The eigenvalue-corrected variant (EKFAC, George et al. 2018) keeps the eigenbasis and replaces
the Kronecker product of eigenvalues by measured second moments ``S`` of the gradient in that
basis: ``Q_G [(Q_G^T V Q_A) / (S + lambda)] Q_A^T``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch

__all__ = ["Eigh", "eigh_factor", "pi_correction", "kron_denominator", "kron_solve", "EIGH_FLOAT64_MAX_DIM"]

logger = logging.getLogger(__name__)

#: Factors up to this dimension are decomposed in float64 (cheap, and robust for
#: ill-conditioned factors); larger ones in their own dtype.
EIGH_FLOAT64_MAX_DIM = 2048


@dataclass(frozen=True)
class Eigh:
    """Eigendecomposition of a symmetric PSD factor (eigenvalues clipped at 0).

    Attributes:
        values: eigenvalues, ascending, ``(d,)``; for a diagonal factor the diagonal itself.
        vectors: orthonormal eigenvectors ``(d, d)``, or None for a diagonal factor.
        fallback: True when the decomposition failed and the factor's diagonal was used.
    """

    values: torch.Tensor
    vectors: torch.Tensor | None
    fallback: bool = False


def eigh_factor(factor: torch.Tensor) -> Eigh:
    """Symmetric eigendecomposition of ``factor`` (``(d, d)``, or ``(d,)`` for a diagonal one).

    Small factors are decomposed in float64 and cast back. When ``eigh`` fails (non-finite
    entries, or LAPACK not converging) it is retried with a small diagonal jitter, and then the
    factor's diagonal is used instead (``fallback=True``, logged as a warning).

    Example:
        >>> e = eigh_factor(torch.tensor([[2.0, 0.0], [0.0, 1.0]]))
        >>> e.values.tolist()
        [1.0, 2.0]
    """
    if factor.dim() == 1:
        return Eigh(factor.clamp_min(0), None)
    dtype = factor.dtype
    work = factor.double() if factor.shape[0] <= EIGH_FLOAT64_MAX_DIM else factor
    work = 0.5 * (work + work.T)
    if bool(torch.isfinite(work).all()):
        for jitter in (0.0, 1e-10):
            try:
                m = work
                if jitter:
                    scale = float(work.diagonal().abs().mean()) or 1.0
                    m = work + (jitter * scale) * torch.eye(work.shape[0], dtype=work.dtype, device=work.device)
                vals, vecs = torch.linalg.eigh(m)
                if bool(torch.isfinite(vals).all()):
                    return Eigh(vals.clamp_min(0).to(dtype), vecs.to(dtype))
            except (RuntimeError, torch.linalg.LinAlgError):  # pragma: no cover - LAPACK failure
                pass
    diag = torch.nan_to_num(factor.diagonal(), nan=0.0, posinf=0.0, neginf=0.0).clamp_min(0)
    logger.warning("K-FAC: eigendecomposition of a %d x %d factor failed; using its diagonal",
                   factor.shape[0], factor.shape[0])
    return Eigh(diag, None, fallback=True)


def pi_correction(a: Eigh, g: Eigh) -> float:
    """``pi = sqrt((tr A / dim A) / (tr G / dim G))`` (1 when either trace vanishes)."""
    ta = float(a.values.sum()) / a.values.numel()
    tg = float(g.values.sum()) / g.values.numel()
    if not (ta > 0 and tg > 0) or not math.isfinite(ta / tg):
        return 1.0
    return math.sqrt(ta / tg)


def _to_basis(e: Eigh, m: torch.Tensor, side: str) -> torch.Tensor:
    if e.vectors is None:
        return m
    return e.vectors.T @ m if side == "left" else m @ e.vectors


def _from_basis(e: Eigh, m: torch.Tensor, side: str) -> torch.Tensor:
    if e.vectors is None:
        return m
    return e.vectors @ m if side == "left" else m @ e.vectors.T


def kron_denominator(g: Eigh, a: Eigh, damping: float) -> torch.Tensor:
    """``(g + sqrt(lambda) / pi)(a + pi sqrt(lambda))^T``, the damped Kronecker eigenvalues
    (clamped away from 0), ``(d_out, d_in)``: fixed between two eigendecompositions as long as
    the damping is, so callers may keep it."""
    pi = pi_correction(a, g)
    root = math.sqrt(damping)
    denom = torch.outer(g.values + root / pi, a.values + pi * root)
    return denom.clamp_min(torch.finfo(denom.dtype).tiny)


def kron_solve(g: Eigh, a: Eigh, v: torch.Tensor, damping: float, *,
               scales: torch.Tensor | None = None, denom: torch.Tensor | None = None) -> torch.Tensor:
    """``(A (x) G + damping)^{-1} vec(V)`` as a matrix, for ``V`` shaped ``(d_out, d_in)``.

    Args:
        g, a: eigendecompositions of the output-gradient factor ``G`` and the input factor ``A``.
        v: the gradient matrix.
        damping: Tikhonov damping ``lambda >= 0``, split between the factors by the
            pi-correction; with ``scales`` it is added to them directly.
        scales: EKFAC second moments in the Kronecker eigenbasis, ``(d_out, d_in)``.
        denom: :func:`kron_denominator` of ``(g, a, damping)`` when the caller kept it.
    """
    w = _to_basis(a, _to_basis(g, v, "left"), "right")
    if scales is not None:
        w = w / (scales + damping).clamp_min(torch.finfo(w.dtype).tiny)
    else:
        w = w / (kron_denominator(g, a, damping) if denom is None else denom)
    return _from_basis(g, _from_basis(a, w, "right"), "left")
