"""Alerts raised from a curvature time series: edge of stability, growing negative curvature,
non-finite curvature.

* ``edge_of_stability``: ``eos_ratio = lambda_max / threshold`` (``lr * lambda_max / 2`` for
  gradient descent; the preconditioned sharpness over ``(2 + 2 b1) / ((1 - b1) lr)`` for
  Adam-like optimizers, Cohen et al. 2022) reaches 1 from below (or at the first record).
  Re-armed once the ratio falls below ``rearm``.
* ``negative_curvature``: the negative mass (share of ``sum |lambda|`` on negative eigenvalues)
  rose at each of the last ``window - 1`` records, in total by more than ``z`` (default 3)
  standard errors of that difference, to at least ``min_negative_mass``. The difference's
  error is ``sqrt(2)`` times the root mean square of the standard errors of the window's
  records: a standard error from few probes (the separate estimator's 3) is itself noisy,
  and one that came out small by chance at the first or last record would let noise alert;
  averaging the window's squared errors gives it more degrees of freedom.
  Re-armed after a decrease. A window holding a record without a finite standard error
  cannot tell growth from estimator noise, so it never alerts (an unknown error is not taken
  as zero). With the monitor's shared estimator the values are means over ``pool`` records (default 4, see
  :mod:`curvlens.hooks.pooling`) and the monitor uses ``window = pool + 1``, so that the
  first and last values compared come from disjoint records: a two-sample test of the rise.
  Under pure noise a 3-sigma rise that is also monotone has probability below 0.1% a record.
* ``nonfinite``: a measured curvature quantity is NaN or infinite (the loss or the products
  overflowed on the monitoring data).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Alert", "AlertTracker", "CURVATURE_COLUMNS"]

#: columns checked by the ``nonfinite`` alert when they were measured
CURVATURE_COLUMNS = ("lambda_max", "trace", "negative_mass", "preconditioned_sharpness")


@dataclass(frozen=True)
class Alert:
    """One alert: ``kind`` (``edge_of_stability``, ``negative_curvature``, ``nonfinite``), the
    training ``step``, a one-line ``message`` and the ``value`` that triggered it."""

    step: int
    kind: str
    message: str
    value: float


class AlertTracker:
    """Stateful alert rules, fed one record at a time.

    Args:
        rearm: the edge-of-stability alert fires again only after the ratio fell below this.
        window: records of consecutive growth for the negative-curvature alert (>= 2).
        min_negative_mass: the negative mass must reach this to alert.
        z: the rise must exceed ``z * hypot(stderr_first, stderr_last)``.

    Example:
        >>> t = AlertTracker()
        >>> [a.kind for a in t.update(10, {"eos_ratio": 0.8, "lambda_max": 16.0, "threshold": 20.0})]
        []
        >>> [a.kind for a in t.update(20, {"eos_ratio": 1.02, "lambda_max": 20.4, "threshold": 20.0})]
        ['edge_of_stability']
        >>> [a.kind for a in t.update(30, {"eos_ratio": 1.01, "lambda_max": 20.2, "threshold": 20.0})]
        []
    """

    def __init__(self, *, rearm: float = 0.9, window: int = 3, min_negative_mass: float = 0.01, z: float = 3.0):
        if isinstance(window, bool) or not isinstance(window, int) or window < 2:
            raise ValueError(f"window: expected an int >= 2, got {window!r}; pass e.g. window=3")
        if isinstance(z, bool) or not isinstance(z, (int, float)) or not z > 0:
            raise ValueError(f"z: expected a positive number of standard errors, got {z!r}; pass e.g. z=3.0")
        self.rearm, self.window, self.min_negative_mass = float(rearm), window, float(min_negative_mass)
        self.z = float(z)
        self._eos_armed = True
        self._neg: list[tuple[float, float]] = []
        self._neg_armed = True

    def update(self, step: int, values: dict[str, float], *, measured: tuple[str, ...] = ()) -> list[Alert]:
        """Alerts for the record ``values`` at ``step``; ``measured`` names the columns that
        were requested (a NaN there is a failure, not a quantity left out)."""
        out: list[Alert] = []
        bad = [k for k in measured if k in values and not math.isfinite(values[k])]
        if bad:
            out.append(Alert(step, "nonfinite", f"step {step}: non-finite curvature ({', '.join(bad)}); the loss "
                             "or its curvature overflowed on the monitoring data: lower the learning rate, "
                             "check the data, or monitor in float64", math.nan))
        out.extend(self._eos(step, values))
        out.extend(self._negative(step, values))
        return out

    def _eos(self, step: int, values: dict) -> list[Alert]:
        r = values.get("eos_ratio", math.nan)
        if not math.isfinite(r):
            return []
        if r < self.rearm:
            self._eos_armed = True
        if r < 1.0 or not self._eos_armed:
            return []
        self._eos_armed = False
        if math.isfinite(values.get("preconditioned_sharpness", math.nan)):
            what = (f"preconditioned sharpness {values['preconditioned_sharpness']:.4g} >= "
                    f"(2+2*beta1)/((1-beta1)*lr) = {values.get('preconditioned_threshold', math.nan):.4g}")
        else:
            what = (f"lambda_max {values.get('lambda_max', math.nan):.4g} >= stability threshold "
                    f"{values.get('threshold', math.nan):.4g} (2/lr for gradient descent)")
        return [Alert(step, "edge_of_stability", f"step {step}: edge of stability, ratio {r:.3f}: {what}; the loss "
                      "may oscillate or spike: expected for large learning rates, lower lr if training diverges", r)]

    def _negative(self, step: int, values: dict) -> list[Alert]:
        m = values.get("negative_mass", math.nan)
        if not math.isfinite(m):
            return []
        se = values.get("negative_mass_stderr", math.nan)
        self._neg.append((m, se if math.isfinite(se) else math.nan))
        self._neg = self._neg[-self.window:]
        if len(self._neg) >= 2 and self._neg[-1][0] <= self._neg[-2][0]:
            self._neg_armed = True
        if len(self._neg) < self.window or not self._neg_armed:
            return []
        vals = [v for v, _ in self._neg]
        rising = all(b > a for a, b in zip(vals, vals[1:]))
        noise = self.z * math.sqrt(2.0 * sum(e * e for _, e in self._neg) / len(self._neg))
        if not (rising and math.isfinite(noise) and vals[-1] - vals[0] > noise and vals[-1] >= self.min_negative_mass):
            return []
        self._neg_armed = False
        return [Alert(step, "negative_curvature", f"step {step}: negative curvature growing, negative mass "
                      f"{vals[0]:.3g} -> {vals[-1]:.3g} over {self.window} records (> {self.z:g} standard errors); training may be leaving a "
                      "minimum (saddle, instability): check the loss and the learning rate", m)]
