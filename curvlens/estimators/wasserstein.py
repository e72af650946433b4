"""1-Wasserstein distance between an estimated spectral measure and an exact spectrum.

For two probability measures on the real line the 1-Wasserstein (earth mover's) distance is
the area between their cumulative distribution functions,
``W1(mu, nu) = integral |F_mu(x) - F_nu(x)| dx`` (Vallender 1974). Both CDFs here are step
functions (or are treated as such), so the integral is an exact finite sum over the merged,
sorted support points. It is the accuracy measure used to compare spectral density estimators
(SLQ, KPM) against the eigenvalues of a dense matrix: it is in the units of the eigenvalues,
needs no histogram bins and no smoothing width.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["wasserstein_1", "wasserstein_1_grid"]


def _as_float_array(x, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().to(torch.float64).numpy()
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(
            f"{name}: expected a tensor or array of real numbers, got {type(x).__name__}; "
            "pass a torch.Tensor or numpy array"
        ) from None
    if arr.size == 0:
        raise ValueError(f"{name}: expected at least one value, got an empty array")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: expected finite values, got NaN or inf; check the input for overflow")
    return arr


def _w1_signed(points: np.ndarray, masses: np.ndarray) -> float:
    """Integral of ``|cumsum(masses)|`` over the sorted points (masses sum to ~0)."""
    order = np.argsort(points, kind="mergesort")
    z = points[order]
    c = np.cumsum(masses[order])
    return float(np.sum(np.abs(c[:-1]) * np.diff(z)))


def wasserstein_1(nodes, weights, eigenvalues) -> float:
    """1-Wasserstein distance between a weighted discrete measure and an exact spectrum.

    The discrete measure puts mass ``weights[p, j]`` at ``nodes[p, j]``; the probes (rows) are
    averaged and the total mass normalized to one. The reference is the empirical eigenvalue
    distribution ``(1/D) sum_i delta(x - eigenvalues[i])``. The distance is computed exactly
    by integrating the absolute difference of the two step CDFs.

    Args:
        nodes: Ritz values / quadrature nodes, shape ``(P, m)`` or ``(m,)``.
        weights: non-negative weights of the same shape (zero weights, e.g. padding, are fine).
        eigenvalues: the exact eigenvalues, shape ``(D,)`` (any order).

    Returns:
        The distance, in the units of the eigenvalues.

    Raises:
        ValueError: on shape mismatch, non-finite values or weights that do not sum to a
            positive number.

    Example:
        >>> wasserstein_1([0.0, 2.0], [0.5, 0.5], [0.0, 1.0])
        0.5
    """
    x = _as_float_array(nodes, "nodes")
    w = _as_float_array(weights, "weights")
    ev = _as_float_array(eigenvalues, "eigenvalues").reshape(-1)
    if x.shape != w.shape:
        raise ValueError(
            f"weights: expected the shape of nodes {x.shape}, got {w.shape}; "
            "pass result.nodes and result.weights together"
        )
    total = float(w.sum())
    if not total > 0:
        raise ValueError(f"weights: expected a positive total mass, got {total!r}")
    points = np.concatenate([x.reshape(-1), ev])
    masses = np.concatenate([w.reshape(-1) / total, np.full(ev.size, -1.0 / ev.size)])
    return _w1_signed(points, masses)


def wasserstein_1_grid(grid, density, eigenvalues) -> float:
    """1-Wasserstein distance between a density sampled on a grid and an exact spectrum.

    The density is turned into a discrete measure with trapezoid-rule weights at the grid
    points and normalized to total mass one, so the result is exact for that discrete measure
    and within about one grid spacing of the distance for the continuous density. This is
    what a density plotted on a grid (PyHessian, curvlinops) can be scored with.

    Args:
        grid: increasing grid points, shape ``(G,)`` with ``G >= 2``.
        density: density values at the grid points, shape ``(G,)``.
        eigenvalues: the exact eigenvalues, shape ``(D,)``.

    Returns:
        The distance, in the units of the eigenvalues.

    Example:
        >>> g = np.linspace(-1.0, 1.0, 2001)
        >>> round(wasserstein_1_grid(g, np.full(2001, 0.5), [0.0]), 3)
        0.5
    """
    g = _as_float_array(grid, "grid").reshape(-1)
    d = _as_float_array(density, "density").reshape(-1)
    if g.size < 2 or g.shape != d.shape:
        raise ValueError(
            f"density: expected the shape of grid (G,) with G >= 2, got grid {g.shape} and density {d.shape}"
        )
    if np.any(np.diff(g) <= 0):
        raise ValueError("grid: expected strictly increasing points, got a non-increasing grid; sort it")
    h = np.diff(g)
    w = np.zeros_like(g)
    w[:-1] += h / 2
    w[1:] += h / 2
    return wasserstein_1(g, d * w, eigenvalues)
