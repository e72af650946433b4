"""Per-row samples of deflated (Hutch++ / XTrace style) estimators.

Given an orthonormal basis ``Q`` (D, r) with ``Z = A Q`` and a projector ``P = Q Pi Q^T``
(``Pi = I`` for Hutch++, ``Pi_i = I - s_i s_i^T`` for XTrace's leave-one-out bases), the
diagonal of ``A`` splits exactly as

    diag(A) = diag(2 P A - P A P) + diag((I - P) A (I - P)),

because ``diag(P A (I-P)) = diag((I-P) A P)`` for symmetric ``A``. The first term is known
from ``Q`` and ``Z``; the second is estimated without bias by ``w * ((I-P) A (I-P) w)`` for a
probe ``w`` independent of ``P`` with ``E[w w^T] = I``. Summing rows gives traces, summing the
rows of a block gives the block's trace, keeping rows gives a diagonal estimate: one set of
products serves all three.
"""

from __future__ import annotations

import torch


def deflated_row_samples(
    Q: torch.Tensor,
    Z: torch.Tensor,
    Omega: torch.Tensor,
    U: torch.Tensor,
    AU: torch.Tensor,
    S: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-row, per-probe unbiased samples of ``diag(A)``.

    Args:
        Q: (D, r) orthonormal basis; Z: (D, r) = ``A Q``.
        Omega: (D, k) probes; U: (D, k) = ``(I - P_i) Omega_i``; AU: (D, k) = ``A U``.
        S: (r, k) unit (or zero) columns ``s_i`` defining ``P_i = Q (I - s_i s_i^T) Q^T``;
            None for a single projector ``P = Q Q^T``.

    Returns:
        (D, k) float64 tensor whose column ``i`` has expectation ``diag(A)`` (row sums:
        trace samples).
    """
    H = Q.T @ Z
    H = (H + H.T) / 2
    qz = (Q * Z).sum(1, keepdim=True)
    qhq = ((Q @ H) * Q).sum(1, keepdim=True)
    X = Q.T @ AU
    if S is None:
        det = 2 * qz - qhq
        resid = AU - Q @ X
    else:
        Qs, Zs, QHs = Q @ S, Z @ S, Q @ (H @ S)
        d = (S * (H @ S)).sum(0, keepdim=True)
        det = 2 * (qz - Qs * Zs) - (qhq - 2 * Qs * QHs + Qs * Qs * d)
        resid = AU - Q @ (X - S * (S * X).sum(0, keepdim=True))
    return (det + Omega * resid).double()


def deflated_diagonal(Q: torch.Tensor, Z: torch.Tensor) -> torch.Tensor:
    """(D, 1) known part ``diag(2 P A - P A P)`` of the split for ``P = Q Q^T`` (``Z = A Q``)."""
    H = Q.T @ Z
    H = (H + H.T) / 2
    return 2 * (Q * Z).sum(1, keepdim=True) - ((Q @ H) * Q).sum(1, keepdim=True)


def deflated_slice_sums(
    det: torch.Tensor,
    Omega: torch.Tensor,
    resid: torch.Tensor,
    slices: list[slice],
) -> torch.Tensor:
    """Row sums of the samples of :func:`deflated_row_samples` (``S=None``) over each row slice.

    The same numbers as summing the rows of ``deflated_row_samples(Q, Z, Omega, U, AU)`` within
    each slice, without forming its (D, k) float64 array: one slice at a time is widened.
    ``det`` is :func:`deflated_diagonal` of ``(Q, Z)``; ``resid = AU - Q (Q^T AU)``.

    Returns:
        (len(slices), k) float64 tensor.
    """
    if not slices:
        return torch.zeros(0, Omega.shape[1], dtype=torch.float64, device=resid.device)
    return torch.stack([(det[s] + Omega[s] * resid[s]).double().sum(0) for s in slices])


def plain_slice_sums(Omega: torch.Tensor, AOmega: torch.Tensor, slices: list[slice]) -> torch.Tensor:
    """Row sums of Hutchinson's per-row samples ``Omega * (A Omega)`` over each row slice:
    (len(slices), k) float64 (one slice at a time is widened)."""
    if not slices:
        return torch.zeros(0, Omega.shape[1], dtype=torch.float64, device=AOmega.device)
    return torch.stack([(Omega[s] * AOmega[s]).double().sum(0) for s in slices])


def leave_one_out_mix(y: torch.Tensor, x: torch.Tensor, min_samples: int = 3) -> torch.Tensor:
    """Per-sample weights ``c_i`` in [0, 1] of the mix ``(1 - c_i) y_i + c_i x_i`` of paired samples.

    ``y_i`` (Hutchinson's ``w_i^T A w_i``) and ``x_i`` (the deflated sample of the same probe) are
    both unbiased for ``tr(A)``; ``y - x = w^T D w - tr(D)`` (``D = A - (I-P) A (I-P)``) is a
    control variate with known mean 0. The variance of the mix is smallest at
    ``c = Cov(y, y - x) / Var(y - x)`` (1 for Gaussian probes in exact arithmetic; below 1 when
    Rademacher probes already cancel much of the diagonal, as for near-identity matrices).
    ``c_i`` is that ratio estimated *without* sample ``i`` and clipped to [0, 1], so it is
    independent of ``(y_i, x_i)`` and every mixed sample stays unbiased. Fewer than
    ``min_samples`` samples: ``c_i = 1`` (the deflated samples; an estimated weight then costs
    more variance than it saves).

    Args:
        y, x: float64 tensors (n,).
        min_samples: smallest ``n`` (at least 3) for which the weight is estimated.

    Returns:
        float64 tensor (n,) of the weights.
    """
    n = y.numel()
    if n < max(3, min_samples):
        return torch.ones_like(y)
    d = y - x
    yc, dc = y - y.mean(), d - d.mean()
    m = n - 1
    # leave-one-out centred sums: sum_j (a_j - abar_-i)(b_j - bbar_-i) over j != i
    cov = (yc * dc).sum() - yc * dc - (yc * dc) / m
    var = (dc * dc).sum() - dc * dc - (dc * dc) / m
    tiny = torch.finfo(torch.float64).tiny
    c = torch.where(var > 1e-13 * (dc * dc).sum() + tiny, cov / var.clamp_min(tiny), torch.ones_like(y))
    return c.clamp(0.0, 1.0)
