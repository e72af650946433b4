"""Pooling one-probe estimates over the last records, with a standard error across probes.

Each record contributes one probe's estimate ``x_r`` (of the trace, or of the negative mass)
at its own weights. The reported value is the mean of the last ``k`` records ``r-k+1..r``
(``pooled_records``, from step ``pooled_from_step``): it mixes curvature at weights that moved
between those records, so it lags a changing quantity by about ``(k - 1) / 2`` records.

The one-probe noise ``sigma`` is estimated from successive differences over the last
``noise_window`` records, ``sigma^2 = sum (x_i - x_{i-1})^2 / (2 (n - 1))`` (von Neumann 1941):
unlike the plain sample variance it is not inflated by a slow trend of the curvature itself,
and it uses far more records than the pool, so its own error is small. A real change between
consecutive records still adds to it, which makes the standard error conservative. The
standard error of the pooled mean is ``sigma / sqrt(k)``; it is NaN until ``min_records``
records exist (a noise estimate from fewer is too unreliable to test against).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["ProbePool"]


class ProbePool:
    """Running pool of one-probe estimates (see the module docstring).

    Args:
        size: records pooled into the reported value (``k``).
        noise_window: records used for the one-probe noise estimate.
        min_records: records needed before a standard error is reported.

    Example:
        >>> p = ProbePool(size=2, noise_window=10, min_records=3)
        >>> [p.add(s, x)[0] for s, x in ((1, 1.0), (2, 3.0), (3, 2.0))]
        [1.0, 2.0, 2.5]
        >>> round(p.add(4, 4.0)[1], 6)  # sigma^2 = (4 + 1 + 4) / 6
        0.866025
    """

    def __init__(self, size: int = 4, *, noise_window: int = 20, min_records: int = 5):
        self.size, self.noise_window, self.min_records = int(size), int(noise_window), int(min_records)
        self._steps: list[int] = []
        self._values: list[float] = []

    def add(self, step: int, value: float) -> tuple[float, float, int, int]:
        """Add record ``step``'s estimate; return ``(pooled, stderr, records pooled, first step)``.

        A non-finite value is not pooled (and returned as NaN).
        """
        if not math.isfinite(value):
            return math.nan, math.nan, 0, int(step)
        self._steps.append(int(step))
        self._values.append(float(value))
        keep = max(self.noise_window, self.size)
        self._steps, self._values = self._steps[-keep:], self._values[-keep:]
        k = min(self.size, len(self._values))
        pooled = float(np.mean(self._values[-k:]))
        return pooled, self.sigma / math.sqrt(k), k, self._steps[-k]

    @property
    def sigma(self) -> float:
        """Estimated standard deviation of one probe's estimate (NaN before ``min_records``)."""
        x = np.asarray(self._values[-self.noise_window:], dtype=np.float64)
        if x.size < max(self.min_records, 2):
            return math.nan
        return float(math.sqrt(np.sum(np.diff(x) ** 2) / (2.0 * (x.size - 1))))
