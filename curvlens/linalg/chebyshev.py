"""Chebyshev polynomial filters: polynomial acceleration for the small, clustered end of a spectrum.

The negative end of a trained network's Hessian is tiny and clustered next to a large top
(e.g. five values in ``[-0.042, -0.036]`` against ``lambda_max = 0.76``). A Krylov method
restarted with a small basis converges there slowly, and every basis vector costs a full
reorthogonalization. A polynomial filter ``p`` that is small on ``[a, b]`` (everything but the
wanted end) and grows fast below ``a`` turns the wanted eigenvalues of ``A`` into the dominant
and well separated eigenvalues of ``p(A)``; eigenvectors are shared, so Lanczos on ``p(A)``
finds them with a small basis and the answer is certified with true residuals of ``A``.

The filter is the Chebyshev polynomial of degree ``m`` on ``[a, b]``, scaled to be 1 at a
point ``s < a`` (near the current estimate of ``lambda_min``)::

    p(l) = T_m(x(l)) / T_m(x(s)),   x(l) = (2 l - a - b) / (b - a)

so ``|p| <= 1 / T_m(|x(s)|)`` on ``[a, b]`` and ``p`` is positive and increasing as ``l``
decreases below ``a``. It is applied with the three-term recurrence, with the scaling folded
into the coefficients (the ratios ``T_i(x_s) / T_{i+1}(x_s)``) so no intermediate value
overflows. ``b`` must bound the spectrum from above: an eigenvalue above ``b`` would be
amplified too; the driver (:mod:`curvlens.linalg._filtered`) detects that case from Rayleigh quotients
and retries with a larger ``b``.

References:
    Y. Zhou and Y. Saad, "A Chebyshev-Davidson algorithm for large symmetric eigenproblems",
    SIAM J. Matrix Anal. Appl. 29(3), 2007 (scaled Chebyshev filters).
    R. Li, Y. Xi, E. Vecharynski, C. Yang and Y. Saad, "A thick-restart Lanczos algorithm with
    polynomial filtering for Hermitian eigenvalue problems", SIAM J. Sci. Comput. 38(4), 2016.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch


@dataclass(frozen=True)
class ChebyshevFilter:
    """``p(l) = T_m(x(l)) / T_m(x(s))`` on the damped interval ``[lower, upper]``, scaled at ``scale_point``.

    Attributes:
        lower, upper: the interval ``[a, b]`` where ``|p| <= damping``.
        degree: polynomial degree ``m`` (products of the operator per filtered vector).
        scale_point: ``s < a`` where ``p(s) = 1``.

    Example:
        >>> f = ChebyshevFilter(lower=0.0, upper=1.0, degree=8, scale_point=-0.05)
        >>> round(f.value(-0.05), 12), f.value(0.5) < f.damping + 1e-15, f.value(-0.1) > 1
        (1.0, True, True)
        >>> round(f.inverse(f.value(-0.03)), 10)
        -0.03
    """

    lower: float
    upper: float
    degree: int
    scale_point: float

    def __post_init__(self):
        if not (self.scale_point < self.lower < self.upper):
            raise ValueError(
                f"ChebyshevFilter: expected scale_point < lower < upper, got {self.scale_point!r}, "
                f"{self.lower!r}, {self.upper!r}"
            )
        if int(self.degree) < 1:
            raise ValueError(f"ChebyshevFilter: degree expected an int >= 1, got {self.degree!r}")

    # -------------------------------------------------------------- scalar helpers (float64)
    @property
    def _center(self) -> float:
        return 0.5 * (self.upper + self.lower)

    @property
    def _half_width(self) -> float:
        return 0.5 * (self.upper - self.lower)

    def _t(self, lam):
        """``arccosh(-x(l))`` for ``l < a`` (0 at ``a``)."""
        x = (np.asarray(lam, dtype=np.float64) - self._center) / self._half_width
        return np.arccosh(np.maximum(-x, 1.0))

    @property
    def _t0(self) -> float:
        return float(self._t(self.scale_point))

    @property
    def damping(self) -> float:
        """``max |p|`` on ``[a, b]``: ``1 / T_m(|x(s)|)``."""
        return float(1.0 / math.cosh(self.degree * self._t0))

    def value(self, lam):
        """``p(l)`` for ``l <= a`` (in ``[a, b]`` this returns the bound ``damping``)."""
        t = self._t(lam)
        m, t0 = self.degree, self._t0
        out = np.exp(m * (t - t0)) * (1 + np.exp(-2 * m * t)) / (1 + np.exp(-2 * m * t0))
        return float(out) if np.ndim(out) == 0 else out

    def derivative(self, lam):
        """``|p'(l)|`` for ``l < a``."""
        t = np.maximum(self._t(lam), 1e-300)
        m, t0 = self.degree, self._t0
        # m sinh(m t) / (sinh(t) cosh(m t0) e), in exponential form to avoid overflow
        ratio = np.exp(m * (t - t0)) * (1 - np.exp(-2 * m * t)) / (1 + np.exp(-2 * m * t0))
        out = m * ratio / (np.sinh(t) * self._half_width)
        return float(out) if np.ndim(out) == 0 else out

    def inverse(self, value):
        """The ``l < a`` with ``p(l) = value`` (``a`` for values at or below ``damping``)."""
        v = np.maximum(np.asarray(value, dtype=np.float64), self.damping)
        m, t0 = self.degree, self._t0
        # arccosh(v cosh(m t0)) computed as log(y + sqrt(y^2 - 1)) with y possibly huge
        log_y = np.log(v) + m * t0 + np.log1p(np.exp(-2 * m * t0)) - math.log(2.0)
        y = np.exp(np.minimum(log_y, 700.0))
        t = np.where(log_y > 30, log_y + math.log(2.0), np.arccosh(np.maximum(y, 1.0))) / m
        out = self._center - self._half_width * np.cosh(t)
        return float(out) if np.ndim(out) == 0 else out

    # -------------------------------------------------------------- the filter itself
    def apply(self, matmat: Callable[[torch.Tensor], torch.Tensor], X: torch.Tensor) -> torch.Tensor:
        """``p(A) X`` with ``degree`` calls of ``matmat`` (scaled three-term recurrence)."""
        c, e = self._center, self._half_width
        x0 = -math.cosh(self._t0)  # x(s) < -1
        r_prev = 1.0 / x0  # T_0(x0) / T_1(x0)
        Y_prev, Y = X, (matmat(X) - c * X) * (r_prev / e)
        for _ in range(1, self.degree):
            r = 1.0 / (2.0 * x0 - r_prev)  # T_i(x0) / T_{i+1}(x0)
            Y_next = (matmat(Y) - c * Y) * (2.0 * r / e) - (r_prev * r) * Y_prev
            Y_prev, Y, r_prev = Y, Y_next, r
        return Y


def choose_filter(
    ritz_values: np.ndarray,
    k: int,
    upper: float,
    *,
    amplification: float = 3.0,
    max_degree: int = 200,
) -> ChebyshevFilter | None:
    """A filter for the ``k`` smallest eigenvalues from the Ritz values of a short Lanczos run.

    ``lower`` is the ``(k+1)``-th smallest Ritz value: by Cauchy interlacing it is at least the
    ``(k+1)``-th eigenvalue, so the ``k`` wanted eigenvalues lie below it. ``scale_point`` is
    the smallest Ritz value; the degree is the smallest that amplifies it ``amplification``
    times over the damped interval (capped at ``max_degree``). Returns None when the Ritz
    values leave no room below ``lower`` (the filter would not separate anything).
    """
    th = np.sort(np.asarray(ritz_values, dtype=np.float64))
    if len(th) <= k or not np.isfinite(upper):
        return None
    spread = max(upper - th[0], 1e-300)
    lower, s = float(th[k]), float(th[0])
    if lower - s <= 1e-8 * spread or lower >= upper:
        return None
    x0 = (2 * s - lower - upper) / (upper - lower)
    t0 = math.acosh(-x0)
    degree = int(min(max_degree, max(2, math.ceil(math.acosh(amplification) / t0))))
    return ChebyshevFilter(lower=lower, upper=float(upper), degree=degree, scale_point=s)
