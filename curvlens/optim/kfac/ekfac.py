"""Eigenvalue-corrected K-FAC: second moments of per-sample gradients in the Kronecker eigenbasis.

EKFAC (George et al. 2018, "Fast approximate natural gradient descent in a Kronecker-factored
eigenbasis") keeps K-FAC's eigenbasis ``Q_G (x) Q_A`` and replaces the eigenvalue products
``g_i a_j`` by the second moments of the gradients projected onto that basis,
``S_ij = s * sum_{n, c} ((Q_G^T D_nc Q_A)_ij)^2``, where ``D_nc = sum_t g_nct a_nt^T`` is the
gradient of sample ``n`` (summed over its positions ``t``: spatial positions of a convolution,
sequence elements of a Linear layer) for output-space direction ``c`` and ``s`` the weight of
the Fisher kind (see :mod:`curvlens.optim.kfac.fisher`). ``S`` is exactly the diagonal of the
layer's Fisher (or GGN) block in the Kronecker eigenbasis, so ``Q diag(S) Q^T`` is the best
approximation of that block, in Frobenius norm, among matrices diagonal in that basis.
"""

from __future__ import annotations

import torch

from curvlens.optim.kfac.inverse import Eigh

__all__ = ["projected_second_moments", "ekfac_quad", "CHUNK_ELEMENTS"]

#: Per-sample gradient matrices are formed in chunks of at most this many elements.
CHUNK_ELEMENTS = 1 << 22


def _project(e: Eigh, rows: torch.Tensor) -> torch.Tensor:
    return rows if e.vectors is None else rows @ e.vectors


def projected_second_moments(g: Eigh, a: Eigh, a_rows: torch.Tensor, g_rows: torch.Tensor,
                             samples: int, weight: float) -> torch.Tensor:
    """``weight * sum_n (Q_G^T D_n Q_A)^2`` elementwise, ``(d_out, d_in)``.

    Args:
        g, a: eigendecompositions of the output-gradient and input factors.
        a_rows: input rows ``(samples * positions, d_in)``, sample-major (as
            :func:`~curvlens.optim.kfac.factors.input_rows` returns them).
        g_rows: output-gradient rows ``(samples * positions, d_out)`` in the same order.
        samples: the number of samples the rows belong to.
        weight: the Fisher kind's weight ``s``.

    Example:
        >>> import torch
        >>> from curvlens.optim.kfac.inverse import eigh_factor
        >>> e = eigh_factor(torch.eye(2))
        >>> projected_second_moments(e, e, torch.ones(3, 2), torch.ones(3, 2), 3, 1.0).shape
        torch.Size([2, 2])
    """
    rows, d_in, d_out = a_rows.shape[0], a_rows.shape[1], g_rows.shape[1]
    if samples < 1 or rows % samples:
        raise ValueError(f"samples: expected a divisor of the {rows} rows, got {samples!r}; "
                         "pass the batch size of the forward that produced the rows")
    positions = rows // samples
    if positions == 1:  # D_n = g_n a_n^T is rank one: (Q_G^T g_n)^2 ((Q_A^T a_n)^2)^T
        pg, pa = _project(g, g_rows), _project(a, a_rows)
        return weight * ((pg * pg).T @ (pa * pa))
    ar, gr = a_rows.reshape(samples, positions, d_in), g_rows.reshape(samples, positions, d_out)
    # project the rows first, or form D_n first and project it: whichever needs fewer flops
    rows_first = positions * (d_in + d_out) <= d_in * d_out
    if rows_first:
        ar, gr = _project(a, ar), _project(g, gr)
    out = a_rows.new_zeros(d_out, d_in)
    chunk = max(1, CHUNK_ELEMENTS // (d_in * d_out))
    for lo in range(0, samples, chunk):
        d = torch.einsum("ntg,nta->nga", gr[lo:lo + chunk], ar[lo:lo + chunk])
        if not rows_first:
            if g.vectors is not None:
                d = g.vectors.T @ d
            if a.vectors is not None:
                d = d @ a.vectors
        out += (d * d).sum(0)
    return weight * out


def ekfac_quad(g: Eigh, a: Eigh, scales: torch.Tensor, m: torch.Tensor) -> float:
    """``vec(M)^T (Q diag(S) Q^T) vec(M)`` for ``M`` shaped ``(d_out, d_in)``."""
    w = m if g.vectors is None else g.vectors.T @ m
    w = w if a.vectors is None else w @ a.vectors
    return float((scales * w * w).sum())
