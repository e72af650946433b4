"""A small subspace of the curvature around the gradient, and the operator projected onto it.

The Krylov space ``span{g, H g, ..., H^{m-1} g}`` is the Lanczos basis started at ``g``
(:func:`curvlens.linalg.lanczos`), whose projected matrix ``Q^T H Q`` is the Lanczos
tridiagonal at no extra cost. Extra directions (e.g. the optimizer's previous steps) are
orthogonalized against it and projected with one product each, so the projected matrix of the
whole basis ``V = [Q, U]`` is

    B = [[T, Q^T H U], [U^T H Q, U^T H U]]

with ``len(Q) + len(U)`` products in all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from curvlens.linalg.lanczos import lanczos, random_unit_vector

__all__ = ["Subspace", "krylov_subspace"]

#: an extra direction is dropped when orthogonalization leaves less than this share of its norm
_DEPENDENT = 1e-6


@dataclass(frozen=True)
class Subspace:
    """An orthonormal basis and the operator projected onto it.

    Attributes:
        basis: ``(D, k)`` orthonormal columns in the operator's dtype.
        projected: ``(k, k)`` float64 symmetric ``basis^T H basis``.
        num_krylov: how many leading columns are Lanczos vectors (the rest are extra directions).
        matvecs: products used.
        breakdown: True when the Krylov space is invariant (then it holds the gradient exactly).
    """

    basis: torch.Tensor
    projected: torch.Tensor
    num_krylov: int
    matvecs: int
    breakdown: bool

    @property
    def dim(self) -> int:
        return int(self.basis.shape[1])


def _orthogonalize(vectors: Sequence[torch.Tensor], Q: torch.Tensor) -> list[torch.Tensor]:
    """Gram-Schmidt (twice) of ``vectors`` against the columns of ``Q`` and each other."""
    kept: list[torch.Tensor] = []
    for v in vectors:
        n0 = float(torch.linalg.vector_norm(v))
        if not n0 > 0 or n0 != n0 or n0 == float("inf"):
            continue
        w = v / n0
        for _ in range(2):
            w = w - Q @ (Q.T @ w)
            for u in kept:
                w = w - torch.dot(u, w) * u
        n = float(torch.linalg.vector_norm(w))
        if n > _DEPENDENT:
            kept.append(w / n)
    return kept


def krylov_subspace(op, g: torch.Tensor, size: int, *, extra: Sequence[torch.Tensor] = (),
                    generator: torch.Generator | None = None) -> Subspace:
    """The Krylov basis of ``op`` around ``g``, enriched with ``extra`` directions.

    Args:
        op: a symmetric operator (``dim``, ``dtype``, ``device``, ``matvec``, ``matmat``).
        g: the flat vector the Krylov space is built around (a random start from
            ``generator`` when it is zero).
        size: the total number of directions (capped at ``op.dim``); ``len(extra)`` of them
            are reserved for the extra directions, at least one for the Krylov space.
        extra: further directions; orthogonalized against each other (dependent ones dropped,
            the rest reserve their places) and then against the Krylov basis (dependent ones
            dropped: the subspace is smaller then).
        generator: draws the random start when ``g`` is zero.

    Returns:
        :class:`Subspace`.

    Example:
        >>> import torch
        >>> from curvlens.operators import DenseOperator
        >>> op = DenseOperator(torch.diag(torch.tensor([3.0, -1.0, 2.0], dtype=torch.float64)))
        >>> s = krylov_subspace(op, torch.ones(3, dtype=torch.float64), 3)
        >>> sorted(round(float(x), 8) for x in torch.linalg.eigvalsh(s.projected))
        [-1.0, 2.0, 3.0]
    """
    size = int(min(size, op.dim))
    extra = _orthogonalize([e.to(dtype=op.dtype, device=op.device) for e in extra],
                           torch.zeros(op.dim, 0, dtype=op.dtype, device=op.device))[: max(0, size - 1)]
    num_krylov = max(1, size - len(extra))
    gnorm = float(torch.linalg.vector_norm(g))
    v0 = g if (gnorm > 0 and gnorm == gnorm and gnorm != float("inf")) else None
    if v0 is None:
        v0 = random_unit_vector(op.dim, op.dtype, op.device, generator)
    res = lanczos(op, num_krylov, v0=v0)
    Q = res.basis
    T = torch.as_tensor(res.tridiagonal(), dtype=torch.float64)
    matvecs = res.num_steps
    U = _orthogonalize(extra, Q) if extra and not res.breakdown else []
    U = U[: max(0, size - Q.shape[1])]
    if not U:
        return Subspace(Q, T, Q.shape[1], matvecs, res.breakdown)
    U = torch.stack(U, dim=1)
    HU = op.matmat(U)
    matvecs += U.shape[1]
    C = (Q.T @ HU).double()
    W = (U.T @ HU).double()
    W = 0.5 * (W + W.T)
    B = torch.cat([torch.cat([T, C], dim=1), torch.cat([C.T, W], dim=1)], dim=0)
    return Subspace(torch.cat([Q, U], dim=1), B, Q.shape[1], matvecs, False)
