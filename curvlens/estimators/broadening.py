"""Gaussian broadening of a discrete spectral measure and probe-averaged estimates.

Helpers of :mod:`curvlens.estimators.density`: a per-probe discrete measure (nodes, weights)
becomes a smooth density ``rho(x) = sum_j w_j N(x; theta_j, sigma^2)`` on a grid, averaged over
probes with its standard error, and scalar integrals of it become :class:`Estimate` values.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["Estimate", "probe_mean", "broaden", "default_sigma", "default_grid", "check_sigma", "check_grid"]


class Estimate(float):
    """A float that also carries its standard error across probes.

    Behaves as the estimate in arithmetic and formatting; ``.stderr`` is the standard error of
    the mean of the per-probe values (NaN with a single probe: not measured), ``.num_probes``
    how many probes were averaged.

    Example:
        >>> e = Estimate(0.25, 0.01, 10)
        >>> float(e) * 2, e.stderr
        (0.5, 0.01)
    """

    __slots__ = ("stderr", "num_probes")

    def __new__(cls, value: float, stderr: float, num_probes: int = 0):
        obj = super().__new__(cls, value)
        obj.stderr = float(stderr)
        obj.num_probes = int(num_probes)
        return obj

    @property
    def value(self) -> float:
        return float(self)

    def __repr__(self) -> str:
        return f"Estimate({float(self)!r}, stderr={self.stderr!r}, num_probes={self.num_probes})"

    def __reduce__(self):
        return (Estimate, (float(self), self.stderr, self.num_probes))


def probe_mean(per_probe) -> Estimate:
    """Mean of per-probe values with its standard error ``std(ddof=1) / sqrt(P)``."""
    v = np.asarray(per_probe, dtype=np.float64).reshape(-1)
    P = v.size
    se = float(np.std(v, ddof=1) / math.sqrt(P)) if P > 1 else math.nan
    return Estimate(float(v.mean()), se, P)


def _support(nodes: np.ndarray, weights: np.ndarray) -> tuple[float, float]:
    live = nodes[weights != 0]
    if live.size == 0:
        live = nodes.reshape(-1)
    return float(live.min()), float(live.max())


def default_sigma(nodes: np.ndarray, weights: np.ndarray) -> float:
    """Default broadening width ``sqrt(1e-5) * span / 2`` (Ghorbani et al. 2019).

    That is ``sigma^2 = 1e-5`` on the spectrum mapped to ``[-1, 1]``; ``span`` is the range of
    the nodes carrying weight, or their magnitude when all coincide (1 for a zero spectrum).
    """
    lo, hi = _support(nodes, weights)
    scale = hi - lo
    if not scale > 0:
        scale = max(abs(lo), abs(hi)) or 1.0
    return math.sqrt(1e-5) * scale / 2.0


def default_grid(nodes: np.ndarray, weights: np.ndarray, sigma: float, num_points: int) -> np.ndarray:
    """``num_points`` points from ``min node - 6 sigma`` to ``max node + 6 sigma``."""
    lo, hi = _support(nodes, weights)
    return np.linspace(lo - 6.0 * sigma, hi + 6.0 * sigma, int(num_points))


def broaden(nodes: np.ndarray, weights: np.ndarray, grid: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Probe-averaged Gaussian-broadened density and its standard error on ``grid``.

    The average is divided by the mean row sum of ``weights`` so that it integrates to 1.

    Args:
        nodes, weights: ``(P, m)`` per-probe measures.
        grid: ``(G,)`` points.
        sigma: Gaussian width.

    Returns:
        ``(density, stderr)``, both ``(G,)`` float64.
    """
    P = nodes.shape[0]
    per_probe = np.empty((P, grid.size))
    norm = 1.0 / (sigma * math.sqrt(2.0 * math.pi))
    if P > 1 and np.array_equal(nodes, np.broadcast_to(nodes[0], nodes.shape)):
        z = (grid[:, None] - nodes[0][None, :]) / sigma  # shared nodes (KPM): one kernel
        per_probe[:] = (norm * np.exp(-0.5 * z * z) @ weights.T).T
    else:
        for p in range(P):  # (m, G) at a time keeps memory at O(m G)
            z = (grid[None, :] - nodes[p][:, None]) / sigma
            per_probe[p] = norm * (weights[p][:, None] * np.exp(-0.5 * z * z)).sum(axis=0)
    # rows of a deflated SLQ run sum to 1 only in expectation: normalize the average
    total = float(weights.sum(axis=1).mean())
    total = total if total > 0 else 1.0
    dens = per_probe.mean(axis=0) / total
    se = per_probe.std(axis=0, ddof=1) / math.sqrt(P) / total if P > 1 else np.full(grid.size, np.nan)
    return dens, se


def check_sigma(sigma) -> float:
    """Validate a broadening width: finite and > 0."""
    try:
        s = float(sigma)
    except (TypeError, ValueError):
        s = math.nan
    if not (math.isfinite(s) and s > 0):
        raise ValueError(
            f"sigma: expected a finite width > 0 (in eigenvalue units), got {sigma!r}; "
            "leave sigma=None for the default (0.00158 x spectral span)"
        )
    return s


def check_grid(grid, nodes, weights, sigma) -> np.ndarray:
    """A grid from None (2048 points), an int number of points or increasing points."""
    if grid is None or (isinstance(grid, (int, np.integer)) and not isinstance(grid, bool)):
        n = 2048 if grid is None else int(grid)
        if n < 2:
            raise ValueError(f"grid: expected at least 2 points, got {grid!r}; use grid=2048")
        return default_grid(nodes, weights, sigma, n)
    if isinstance(grid, torch.Tensor):
        grid = grid.detach().cpu().double().numpy()
    g = np.asarray(grid, dtype=np.float64).reshape(-1)
    if g.size < 2 or not np.all(np.isfinite(g)) or np.any(np.diff(g) <= 0):
        raise ValueError(
            "grid: expected an int number of points or >= 2 finite, strictly increasing points, "
            f"got {g.size} points; pass e.g. grid=torch.linspace(lmin, lmax, 512)"
        )
    return g
