"""Kernel polynomial method (KPM): Chebyshev moments of the spectral measure, Jackson damped.

References:
    A. Weisse, G. Wellein, A. Alvermann, H. Fehske, "The kernel polynomial method",
    Rev. Mod. Phys. 78, 275 (2006).
    L. Lin, Y. Saad, C. Yang, "Approximating spectral densities of large matrices",
    SIAM Review 58(1), 34-65 (2016).

With the spectrum mapped into ``[-1, 1]`` by ``B = (A - c I) / h``, the Chebyshev moments of the
probe-``v`` spectral measure are ``mu_k = v^T T_k(B) v / v^T v``. Each product with ``B`` gives
two moments (``mu_{2k} = 2 t_k^T t_k - mu_0``, ``mu_{2k+1} = 2 t_{k+1}^T t_k - mu_1`` with
``t_k = T_k(B) v``), so ``n`` products give ``2n + 1`` moments. The truncated expansion is
damped with the Jackson kernel, which keeps the approximation of a non-negative measure
non-negative and removes Gibbs oscillations at a resolution of about ``pi h / M``.

The damped density is returned as a discrete measure: its values at ``N`` Chebyshev-Gauss
nodes ``x_j = cos(pi (j + 1/2) / N)`` times ``1/N`` are the weights of a quadrature that
integrates the density exactly against polynomials of degree ``<= 2N - M``.

This module is a helper of :func:`curvlens.estimators.density.spectral_density`; it only
calls ``op.matmat`` and the Lanczos kernel (for spectral bounds).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch

from curvlens.linalg.lanczos import lanczos

if TYPE_CHECKING:
    from curvlens.operators.protocol import LinearOperatorLike


def check_bounds(bounds) -> tuple[float, float]:
    """Validate ``bounds=(lmin, lmax)``: two finite numbers with ``lmin < lmax``."""
    try:
        lo, hi = (float(b) for b in bounds)
    except (TypeError, ValueError):
        raise ValueError(
            f"bounds: expected two finite numbers (lmin, lmax) with lmin < lmax, got {bounds!r}; "
            "pass bounds from extreme_eigenvalues(...) or leave bounds=None to estimate them"
        ) from None
    if not (math.isfinite(lo) and math.isfinite(hi)) or not lo < hi:
        raise ValueError(
            f"bounds: expected two finite numbers (lmin, lmax) with lmin < lmax, got {bounds!r}; "
            "pass bounds from extreme_eigenvalues(...) or leave bounds=None to estimate them"
        )
    return lo, hi


def estimate_bounds(op, num_steps: int, *, generator: torch.Generator, pad: float = 0.01) -> tuple[float, float]:
    """Spectral bounds from a short Lanczos run, padded outwards.

    The extreme Ritz values lie inside the spectrum; each has an eigenvalue within its
    residual ``beta_m |s_m|``. The bounds are moved out by that residual plus ``pad`` times
    the Ritz span, so that a spectrum slightly wider than the Ritz values still fits
    (:func:`chebyshev_moments` detects and reports a spectrum that does not).
    """
    res = lanczos(op, num_steps, generator=generator, store_basis=False)
    theta, S = res.ritz()
    r = res.residual_norm * np.abs(S[-1, :])
    span = float(theta[-1] - theta[0])
    scale = span if span > 0 else (float(np.abs(theta).max()) or 1.0)
    return float(theta[0] - r[0] - pad * scale), float(theta[-1] + r[-1] + pad * scale)


def jackson_coefficients(num_moments: int) -> np.ndarray:
    """Jackson damping factors ``g_k``, ``k = 0..M-1`` (Weisse et al. 2006, Eq. 71)."""
    M = int(num_moments)
    k = np.arange(M, dtype=np.float64)
    a = math.pi / (M + 1)
    return ((M - k + 1) * np.cos(a * k) + np.sin(a * k) / math.tan(a)) / (M + 1)


def chebyshev_moments(
    op: LinearOperatorLike,
    V: torch.Tensor,
    bounds: tuple[float, float],
    num_steps: int,
    *,
    callback: Callable[[int, int], None] | None = None,
    done: int = 0,
    total: int = 0,
) -> tuple[np.ndarray, bool]:
    """Chebyshev moments ``mu_k = v^T T_k(B) v / v^T v`` of each probe column of ``V``.

    Args:
        op: the operator (``matmat`` is called ``num_steps`` times on ``(D, P)`` blocks).
        V: probes, shape ``(D, P)``.
        bounds: ``(lmin, lmax)`` enclosing the spectrum.
        num_steps: products per probe; gives ``M = 2 num_steps + 1`` moments.
        callback: progress ``callback(done + step * P, total)``.

    Returns:
        ``(mu, outside)``: moments ``(P, M)`` float64 and whether the recursion grew beyond
        what a spectrum inside ``bounds`` allows (``||T_k(B) v|| > ||v||``), i.e. the bounds
        are too narrow.
    """
    lo, hi = bounds
    c, h = (hi + lo) / 2.0, (hi - lo) / 2.0
    P = V.shape[1]

    def B(X):
        return (op.matmat(X) - c * X) / h

    norm0 = torch.linalg.vector_norm(V, dim=0)
    vv = norm0**2
    M = 2 * num_steps + 1
    mu = torch.zeros(P, M, dtype=torch.float64)
    mu[:, 0] = 1.0
    t_prev, t = V, B(V)
    mu[:, 1] = ((V * t).sum(0) / vv).double().cpu()
    grow = float((torch.linalg.vector_norm(t, dim=0) / norm0).max())
    if callback is not None:
        callback(done + P, total)
    for k in range(1, num_steps + 1):
        # t = t_k, t_prev = t_{k-1}: mu_{2k} = 2 <t_k, t_k> - mu_0, mu_{2k-1} = 2 <t_k, t_{k-1}> - mu_1
        mu[:, 2 * k] = (2.0 * (t * t).sum(0) / vv).double().cpu() - mu[:, 0]
        if k >= 2:
            mu[:, 2 * k - 1] = (2.0 * (t * t_prev).sum(0) / vv).double().cpu() - mu[:, 1]
        if k == num_steps:
            break
        t_prev, t = t, 2.0 * B(t) - t_prev
        grow = max(grow, float((torch.linalg.vector_norm(t, dim=0) / norm0).max()))
        if callback is not None:
            callback(done + (k + 1) * P, total)
    tol = 1e-6 if op.dtype == torch.float64 else 1e-3
    outside = (not math.isfinite(grow)) or grow > 1.0 + tol or bool(mu.abs().max() > 1.0 + tol)
    return mu.numpy(), outside


def kpm_measure(mu: np.ndarray, bounds: tuple[float, float], num_nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Jackson-damped KPM density of each probe as weights at Chebyshev-Gauss nodes.

    Args:
        mu: Chebyshev moments ``(P, M)``.
        bounds: ``(lmin, lmax)`` used for the moments.
        num_nodes: ``N`` quadrature nodes (``N >= M`` recommended).

    Returns:
        ``(nodes, weights)``, both ``(P, N)`` float64; each row of weights sums to ``mu_0 = 1``.
    """
    P, M = mu.shape
    lo, hi = bounds
    c, h = (hi + lo) / 2.0, (hi - lo) / 2.0
    N = int(num_nodes)
    angles = np.pi * (np.arange(N) + 0.5) / N
    T = np.cos(np.outer(np.arange(M), angles))  # (M, N): T_k(x_j)
    coef = mu * jackson_coefficients(M)[None, :]
    coef[:, 1:] *= 2.0
    weights = (coef @ T) / N
    x = np.cos(angles)[::-1].copy()  # ascending nodes
    nodes = np.broadcast_to(c + h * x, (P, N)).copy()
    return nodes, weights[:, ::-1].copy()


def power_moments_from_chebyshev(mu: np.ndarray, bounds: tuple[float, float], k: int) -> np.ndarray:
    """Per-probe ``v^T A^k v / v^T v`` from undamped Chebyshev moments (needs ``k < M``)."""
    from numpy.polynomial import chebyshev as C
    from numpy.polynomial import polynomial as Pn

    lo, hi = bounds
    c, h = (hi + lo) / 2.0, (hi - lo) / 2.0
    coeffs = C.poly2cheb(Pn.polypow([c, h], k))  # (c + h x)^k in the Chebyshev basis
    return mu[:, : len(coeffs)] @ coeffs
