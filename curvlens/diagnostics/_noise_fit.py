"""The minibatch variance law ``var(B) = a + b / B``, its critical batch and their confidence intervals.

A minibatch of ``B`` of ``N`` samples drawn without replacement has no error at ``B = N``, so a
fitted law must satisfy ``a + b / N >= 0`` (no negative variance at any batch ``B <= N``); for a
mean over samples the law ``a = -b / N`` is exact up to ``N / (N - 1)``. The fit
(:func:`fit_noise_law`) is least squares on ``B var = b + a B`` and ends in one status:

* ``"ok"``: the two-parameter fit is admissible;
* ``"finite_population"``: the free intercept would give a negative variance below ``N``
  (``a < -b / N``); refitted with ``a = -b / N`` (the law of a sample mean);
* ``"single_rung"``: one batch size; the finite-population law is fitted;
* ``"no_decrease"``: the fitted slope ``b <= 0`` (the spread does not fall with ``B``); refitted
  as a constant ``a`` = mean variance, ``b = 0``;
* ``"constant"``: no spread at all (the quantity does not depend on the data): critical batch 1;
* ``"floor_above_target"``: the fitted floor ``a`` is at or above the target variance: no
  batch size reaches the target by the law, critical batch ``inf`` (the only way to get ``inf``);
* ``"not_measured"``: no finite variance: NaN.

Confidence intervals assume normal draws: a sample variance of ``n`` draws is
``var chi2(n-1) / (n-1)`` (chi-square interval per rung), and the critical batch interval is a
parametric bootstrap: every rung's variance is redrawn that way, the law refitted and the critical
batch recomputed; the interval is the central ``confidence`` share of the replicates (an upper end
``inf`` says that the data do not exclude a floor above the target).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = ["NoiseLawFit", "FIT_STATUSES", "fit_variance_law", "fit_noise_law", "variance_interval"]

FIT_STATUSES = ("ok", "finite_population", "single_rung", "no_decrease", "constant", "floor_above_target",
                "not_measured")
_OK, _FINITE, _SINGLE, _FLAT = 0, 1, 2, 3


@dataclass(frozen=True)
class NoiseLawFit:
    """A fitted variance law for one quantity.

    Attributes:
        a, b: ``var(B) ~ a + b / B``.
        status: one of :data:`FIT_STATUSES`.
        reason: one sentence explaining the status.
        critical: smallest ``B`` with ``a + b / B <= (target |full|)^2`` (inf only with status
            ``"floor_above_target"``, NaN only with ``"not_measured"``).
        critical_low, critical_high: its ``confidence`` interval (parametric bootstrap).
    """

    a: float
    b: float
    status: str
    reason: str
    critical: float
    critical_low: float
    critical_high: float


def fit_variance_law(batch_sizes, variances) -> tuple[float, float]:
    """Least-squares fit of ``var(B) = a + b / B`` as ``B var = b + a B``; returns ``(a, b)``.

    Unconstrained; rungs with a non-finite variance are ignored; one rung gives ``a = 0``;
    none gives NaNs. :func:`fit_noise_law` is the constrained fit used by the noise study.

    Example:
        >>> a, b = fit_variance_law([2, 4, 8], [1.0 + 4 / 2, 1.0 + 4 / 4, 1.0 + 4 / 8])
        >>> round(a, 9), round(b, 9)
        (1.0, 4.0)
    """
    B = np.asarray(batch_sizes, dtype=np.float64)
    v = np.asarray(variances, dtype=np.float64)
    ok = np.isfinite(v)
    B, v = B[ok], v[ok]
    if B.size == 0:
        return math.nan, math.nan
    if B.size == 1 or np.all(B == B[0]):
        return 0.0, float(np.mean(B * v))
    M = np.stack([np.ones_like(B), B], axis=1)
    (b, a), *_ = np.linalg.lstsq(M, B * v, rcond=None)
    return float(a), float(b)


def variance_interval(variance, num_draws: int, confidence: float = 0.95):
    """Chi-square ``confidence`` interval ``(low, high)`` of a variance estimated from ``num_draws``
    normal draws (``ddof=1``); NaNs for fewer than 2 draws.

    Example:
        >>> lo, hi = variance_interval(1.0, 11)
        >>> round(float(lo), 3), round(float(hi), 3)
        (0.488, 3.08)
    """
    v = np.asarray(variance, dtype=np.float64)
    if num_draws < 2:
        return np.full_like(v, np.nan), np.full_like(v, np.nan)
    dof, tail = num_draws - 1, (1 - confidence) / 2
    return v * dof / stats.chi2.ppf(1 - tail, dof), v * dof / stats.chi2.ppf(tail, dof)


def _fit_rows(B: np.ndarray, V: np.ndarray, N: int):
    """Constrained fits of every row of ``V`` (shape ``(R, nb)``, finite) at batch sizes ``B``:
    returns ``(a, b, code)`` arrays with ``code`` in ``_OK, _FINITE, _SINGLE, _FLAT``."""
    Y = B * V
    x = 1.0 - B / N  # B var = b (1 - B / N) under a = -b / N
    sxx = float(np.sum(x * x))
    b_fp = (Y @ x) / sxx if sxx > 0 else np.mean(Y, axis=1)
    if B.size == 1:
        a, b, code = -b_fp / N, b_fp, np.full(V.shape[0], _SINGLE)
    else:
        n, sx, sbb = B.size, B.sum(), float(np.sum(B * B))
        sy, sxy = Y.sum(axis=1), Y @ B
        a = (n * sxy - sx * sy) / (n * sbb - sx * sx)
        b = (sy - a * sx) / n
        code = np.full(V.shape[0], _OK)
        neg = a < -b / N
        a, b, code = np.where(neg, -b_fp / N, a), np.where(neg, b_fp, b), np.where(neg, _FINITE, code)
    flat = b <= 0
    return np.where(flat, V.mean(axis=1), a), np.where(flat, 0.0, b), np.where(flat, _FLAT, code)


def _critical_rows(a, b, room_at_zero: float):
    room = room_at_zero - a
    with np.errstate(divide="ignore", invalid="ignore"):
        crit = np.maximum(1.0, np.ceil(b / room - 1e-9))
    crit = np.where(b <= 0, 1.0, crit)
    return np.where(room < 0, math.inf, np.where((room == 0) & (b > 0), math.inf, crit))


def fit_noise_law(batch_sizes, variances, *, num_samples: int, num_draws: int, full_value: float,
                  target: float, confidence: float = 0.95, replicates: int = 2000, seed: int = 0) -> NoiseLawFit:
    """Constrained fit of ``var(B) = a + b / B`` with its critical batch and a bootstrap interval.

    Args:
        batch_sizes, variances: the measured rungs (non-finite variances are ignored).
        num_samples: ``N``; the law keeps ``a + b / N >= 0``.
        num_draws: minibatches per rung (sets the chi-square spread of the bootstrap).
        full_value: the full-data value; the target variance is ``(target |full_value|)^2``.
        target: target relative standard error.
        confidence: coverage of the interval.
        replicates: bootstrap replicates.
        seed: seed of the bootstrap (a private numpy generator).

    Example:
        >>> B = [4, 8, 16, 32]
        >>> f = fit_noise_law(B, [2.0 * (1 / b - 1 / 64) for b in B], num_samples=64, num_draws=50,
        ...                   full_value=1.0, target=0.25)
        >>> f.status, round(f.b, 6), f.critical, f.critical_low <= f.critical <= f.critical_high
        ('ok', 2.0, 22.0, True)
    """
    B = np.asarray(batch_sizes, dtype=np.float64)
    v = np.asarray(variances, dtype=np.float64)
    ok = np.isfinite(v)
    B, v = B[ok], v[ok]
    full = float(full_value)
    if B.size == 0 or not math.isfinite(full) or full == 0:
        why = "no batch size has a finite spread" if B.size == 0 else "the full-data value is zero or not finite"
        return NoiseLawFit(math.nan, math.nan, "not_measured", why, math.nan, math.nan, math.nan)
    goal = (target * abs(full)) ** 2
    if np.all(np.abs(v) <= 1e-24 * max(full * full, 1e-300)):
        return NoiseLawFit(0.0, 0.0, "constant", "the quantity does not vary across minibatches (the curvature does not "
                           "depend on the data): any batch size gives the full-data value", 1.0, 1.0, 1.0)
    v = np.maximum(v, 0.0)
    N = int(num_samples)
    a, b, code = (float(x[0]) for x in _fit_rows(B, v[None, :], N))
    crit = float(_critical_rows(np.array([a]), np.array([b]), goal)[0])
    lo = hi = crit
    if num_draws >= 2 and replicates > 0:
        rng = np.random.default_rng(seed)
        dof = num_draws - 1
        Vs = v[None, :] * rng.chisquare(dof, size=(int(replicates), B.size)) / dof
        ra, rb, _ = _fit_rows(B, Vs, N)
        boot = _critical_rows(ra, rb, goal)
        tail = (1 - confidence) / 2
        lo = float(np.quantile(boot, tail, method="lower"))
        hi = float(np.quantile(boot, 1 - tail, method="higher"))
        lo, hi = min(lo, crit), max(hi, crit)
    if math.isinf(crit):
        status, reason = "floor_above_target", (
            f"the fitted variance floor a={a:.3g} is at or above the target variance {goal:.3g}: no batch size "
            "reaches the target by the law (only the full data, B=N, has no minibatch error)")
    elif code == _FLAT:
        status, reason = "no_decrease", (f"the spread does not fall with the batch size (fitted b <= 0): fitted "
                                         f"as a constant variance {a:.3g}")
    elif code == _FINITE:
        status, reason = "finite_population", (
            "the free intercept would give a negative variance below the full data; refitted with a = -b/N "
            "(the law of a sample mean drawn without replacement)")
    elif code == _SINGLE:
        status, reason = "single_rung", "one batch size: the finite-population law a = -b/N was fitted"
    else:
        status, reason = "ok", "two-parameter fit with a + b/N >= 0"
    return NoiseLawFit(a, b, status, reason, crit, lo, hi)
