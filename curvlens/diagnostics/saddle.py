"""Saddle index: how much of the curvature spectrum is negative, and a verdict.

Measured quantities (each with the standard error of its per-probe values):

* ``fraction_negative`` (the *saddle index*): fraction of eigenvalues below zero,
  ``#{i : l_i < 0} / D``, from the SLQ measure (:meth:`DensityResult.fraction_below`).
  Its stderr is probe noise only; ``fraction_negative_bounds`` are the quadrature's rigorous
  bounds (:meth:`DensityResult.fraction_below_bounds`): a few Gauss nodes cannot place the mass
  of a bulk that straddles zero, and then the bounds are wide.
* ``negative_mass``: ``sum_i |l_i| [l_i < 0] / sum_i |l_i|``, the share of the spectrum's
  absolute mass that is negative (:meth:`DensityResult.negative_mass`). Robust to the many
  tiny eigenvalues of either sign that rounding or a flat bulk produce.
* the most negative eigenpairs from :func:`~curvlens.linalg.bottom_eigenpairs`, with residuals.

The saddle index is *resolved* when ``upper - lower <= max(RESOLVED_WIDTH, 3 stderr)`` (0.05:
the quadrature bias is below the verdict's resolution, or below the probe noise already
reported). When it is not, the verdict uses the lower bound in its place: only a fraction the
quadrature certifies counts, so on a bulk straddling zero (lower bound near 0) the verdict rests
on ``negative_mass``, which the quadrature resolves (it weighs each eigenvalue by ``|l|``, so
the mass near zero hardly counts). KPM densities have no such bounds: their saddle index is
used as is.

Verdict (:func:`saddle_verdict`). Curvature of either sign near zero is what a converged
network's Hessian is made of: its bulk of tiny eigenvalues is nearly symmetric, so at D ~ 10^5
to 10^6 ``negative_mass`` is 0.2-0.4 at 99% accuracy while ``lambda_min`` is about 1% of
``lambda_max``. The verdict therefore rests first on the *relative curvature*
``r = max(0, -lambda_min) / lambda_max`` (how strong the best descent direction is next to the
stiffest direction, the scale a step size sees), and uses ``negative_mass`` (its lower
confidence limit ``m_lo``) only to tell a saddle with a few negative directions from a region
where the negative side is as heavy as the positive one:

=================== ================================================== ======================
verdict             rule (with ``lambda_min`` and ``lambda_max > 0``)  typical case
=================== ================================================== ======================
near_minimum        ``r <= 0.05``                                      converged network
saddle_region       ``0.05 < r``, not strongly indefinite              true saddle (a few
                                                                       strong negative
                                                                       directions)
strongly_indefinite ``r >= 0.25`` and ``m_lo >= 0.25`` (or no density)  plateau / symmetric
                                                                       region
=================== ================================================== ======================

``m_lo = m - t * stderr`` with Student's ``t`` (95%, ``P - 1`` degrees of freedom for ``P``
probes). An uncertified ``lambda_min`` is still an upper bound (a Rayleigh quotient), so ``r``
is then a lower bound; the status says so.

Without ``lambda_min`` (no bottom stage), the verdict uses the spectral masses alone:
``"near_minimum"`` for ``m <= 0.05``, ``"strongly_indefinite"`` for ``m >= 0.25`` or a
resolved ``f >= 0.25``, else ``"saddle_region"``. Without a density, ``r`` alone with the
thresholds 0.05 and 0.25. References: Dauphin et al., "Identifying and attacking the saddle
point problem", NeurIPS 2014; Ghorbani et al., "An investigation into neural net
optimization via Hessian eigenvalue density", ICML 2019 (the symmetric bulk).

Standard errors are honest about few probes: ``negative_mass_stderr`` is the larger of the
delta-method error of the ratio of probe means and the spread of the per-probe ratios; an
unresolved saddle index has a stderr of at least half its quadrature interval.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from curvlens.estimators.density import DensityResult
from curvlens.linalg import EigenResult
from curvlens.results import RunInfo, register_result

__all__ = ["SaddleResult", "saddle_from", "saddle_verdict", "relative_curvature", "NEAR_MINIMUM_MASS",
           "STRONGLY_INDEFINITE", "RESOLVED_WIDTH", "NEAR_MINIMUM_RATIO", "STRONG_RATIO"]

#: ``negative_mass`` at or below which the point is called ``"near_minimum"`` (no lambda_min).
NEAR_MINIMUM_MASS = 0.05
#: ``negative_mass`` or ``fraction_negative`` at or above which it is ``"strongly_indefinite"``.
STRONGLY_INDEFINITE = 0.25
#: width of the quadrature bounds up to which the saddle index counts as resolved (or 3 stderr).
RESOLVED_WIDTH = 0.05
#: relative curvature ``|lambda_min| / lambda_max`` at or below which the point is near a minimum.
NEAR_MINIMUM_RATIO = 0.05
#: relative curvature at or above which (with heavy negative mass) the point is strongly indefinite.
STRONG_RATIO = 0.25


def _t95(dof: int) -> float:
    """Two-sided 95% Student t quantile (normal for large or unknown dof)."""
    if dof is None or dof <= 0:
        return float("inf")
    from scipy.stats import t as student_t

    return float(student_t.ppf(0.975, dof))


def relative_curvature(lambda_min: float | None, lambda_max: float | None) -> float | None:
    """``max(0, -lambda_min) / lambda_max`` (None without both or for ``lambda_max <= 0``).

    Example:
        >>> relative_curvature(-0.02, 2.0)
        0.01
    """
    if lambda_min is None or lambda_max is None or not lambda_max > 0:
        return None
    return max(0.0, -float(lambda_min)) / float(lambda_max)


@register_result("saddle", schema=3)
@dataclass(frozen=True)
class SaddleResult:
    """Fraction and mass of negative curvature, most negative eigenpairs, and a verdict.

    Attributes:
        fraction_negative, fraction_negative_stderr: saddle index and its standard error
            (None without a density).
        negative_mass, negative_mass_stderr: negative spectral mass and its standard error.
        bottom_eigenvalues: float64 ``(k,)`` ascending (most negative first); empty if not measured.
        bottom_residuals: float64 ``(k,)`` true residuals.
        bottom_certified: bool ``(k,)``.
        verdict: ``"near_minimum"``, ``"saddle_region"`` or ``"strongly_indefinite"`` (see module doc).
        info: run metadata (no products of its own).
        fraction_negative_bounds: ``(lower, upper)`` Gauss quadrature bounds of the saddle index
            (probe means; None without an SLQ density).
        fraction_negative_resolved: whether those bounds are narrow enough for the verdict to use
            the saddle index (module doc); None without bounds. When False, the stderr is at least
            half the bounds' width.
        relative_curvature: ``max(0, -lambda_min) / lambda_max`` (None without both).
        negative_mass_interval: 95% interval of ``negative_mass`` (Student t over the probes).
    """

    fraction_negative: float | None
    fraction_negative_stderr: float | None
    negative_mass: float | None
    negative_mass_stderr: float | None
    bottom_eigenvalues: torch.Tensor
    bottom_residuals: torch.Tensor
    bottom_certified: torch.Tensor
    verdict: str
    info: RunInfo
    fraction_negative_bounds: tuple[float, float] | None = None
    fraction_negative_resolved: bool | None = None
    relative_curvature: float | None = None
    negative_mass_interval: tuple[float, float] | None = None

    @classmethod
    def __curvlens_upgrade__(cls, schema: int, values: dict) -> dict:
        """Schema 1 had no quadrature bounds, schema 2 no relative curvature: they read as None."""
        out = {**values, "relative_curvature": None, "negative_mass_interval": None}
        if schema < 2:
            out.update(fraction_negative_bounds=None, fraction_negative_resolved=None)
        return out


def saddle_verdict(negative_mass: float | None, fraction_negative: float | None = None, *,
                   lambda_min: float | None = None, lambda_max: float | None = None,
                   negative_mass_low: float | None = None) -> str:
    """The verdict for the given measurements (the table in the module docstring).

    Args:
        negative_mass, fraction_negative: spectral masses (None when not measured).
        lambda_min, lambda_max: extreme eigenvalues; with both (``lambda_max > 0``) the verdict
            rests on the relative curvature.
        negative_mass_low: lower confidence limit of ``negative_mass`` (default: the value).

    Example:
        >>> saddle_verdict(0.01, 0.02), saddle_verdict(0.1, 0.1), saddle_verdict(0.1, 0.4)
        ('near_minimum', 'saddle_region', 'strongly_indefinite')
        >>> saddle_verdict(0.41, lambda_min=-0.01, lambda_max=1.0)  # converged network
        'near_minimum'
        >>> saddle_verdict(0.1, lambda_min=-3.0, lambda_max=5.0), saddle_verdict(0.45, lambda_min=-1.0, lambda_max=1.0)
        ('saddle_region', 'strongly_indefinite')
    """
    m, f = negative_mass, fraction_negative
    have_m = m is not None and math.isfinite(m)
    r = relative_curvature(lambda_min, lambda_max)
    if r is not None:
        if r <= NEAR_MINIMUM_RATIO:
            return "near_minimum"
        m_lo = (negative_mass_low if negative_mass_low is not None else m) if have_m else None
        if r >= STRONG_RATIO and (m_lo is None or m_lo >= STRONGLY_INDEFINITE):
            return "strongly_indefinite"
        return "saddle_region"
    if not have_m:
        return "saddle_region" if (lambda_min is not None and lambda_min < 0) else "near_minimum"
    if m >= STRONGLY_INDEFINITE or (f is not None and math.isfinite(f) and f >= STRONGLY_INDEFINITE):
        return "strongly_indefinite"
    return "near_minimum" if m <= NEAR_MINIMUM_MASS else "saddle_region"


def _negative_mass(density: DensityResult):
    """``(m, stderr, P)``: stderr the larger of the delta-method error and the per-probe spread."""
    nm = density.negative_mass()
    m, se, P = float(nm), float(nm.stderr), int(density.num_probes)
    x, w = density.nodes.numpy(), density.weights.numpy()
    tol = density._tol()
    num = (w * np.where(x < -tol, -x, 0.0)).sum(axis=1)
    den = (w * np.abs(x)).sum(axis=1)
    ok = den > 0
    if P > 1 and ok.sum() > 1:
        spread = float(np.std(num[ok] / den[ok], ddof=1) / math.sqrt(ok.sum()))
        se = max(se, spread) if math.isfinite(se) else spread
    return m, se, P


def saddle_from(density: DensityResult | None, bottom: EigenResult | None = None, *,
                lambda_max: float | None = None) -> SaddleResult:
    """Build a :class:`SaddleResult` from a spectral density and/or the bottom eigenpairs.

    Args:
        density: result of :func:`~curvlens.estimators.density.spectral_density`, or None.
        bottom: result of :func:`~curvlens.linalg.bottom_eigenpairs`, or None.
        lambda_max: the top eigenvalue, used for the verdict when ``density`` is None.

    Example:
        >>> import torch
        >>> from curvlens.operators import DenseOperator
        >>> from curvlens.estimators.density import spectral_density
        >>> op = DenseOperator(torch.diag(torch.tensor([-1.0, 1.0, 2.0, 4.0], dtype=torch.float64)))
        >>> s = saddle_from(spectral_density(op, num_probes=8, num_steps=4, generator=0))
        >>> round(s.negative_mass, 6), round(s.fraction_negative, 6), s.verdict
        (0.125, 0.25, 'strongly_indefinite')
    """
    if density is not None and not isinstance(density, DensityResult):
        raise TypeError(f"density: expected a DensityResult from spectral_density or None, got {type(density).__name__}")
    if bottom is not None and not isinstance(bottom, EigenResult):
        raise TypeError(f"bottom: expected an EigenResult from bottom_eigenpairs or None, got {type(bottom).__name__}")
    if density is None and bottom is None:
        raise ValueError("density, bottom: expected at least one of them, got neither; run spectral_density(op) "
                         "or bottom_eigenpairs(op)")
    t0 = time.perf_counter()
    f = fse = m = mse = bounds = resolved = None
    m_lo = m_int = None
    if density is not None:
        fb = density.fraction_below(0.0)
        f, fse = float(fb), float(fb.stderr)
        m, mse, P = _negative_mass(density)
        if math.isfinite(m):
            half = _t95(P - 1) * mse if math.isfinite(mse) else float("inf")
            m_int = (max(0.0, m - half), min(1.0, m + half))
            m_lo = m_int[0]
        if density.method == "slq" and density.node_kind is not None:
            lo, hi = density.fraction_below_bounds(0.0)
            bounds = (float(lo), float(hi))
            resolved = bool(hi - lo <= max(RESOLVED_WIDTH, 3 * fse if math.isfinite(fse) else 0.0))
            if not resolved:  # the point value is only known to lie in the bounds
                fse = max(fse, 0.5 * (bounds[1] - bounds[0])) if math.isfinite(fse) else 0.5 * (bounds[1] - bounds[0])
    if bottom is not None:
        vals, res, conv = bottom.eigenvalues.double(), bottom.residuals.double(), bottom.converged.bool()
    else:
        vals = res = torch.zeros(0, dtype=torch.float64)
        conv = torch.zeros(0, dtype=torch.bool)
    lmin = float(vals[0]) if vals.numel() else None
    verdict = saddle_verdict(m, bounds[0] if resolved is False else f, lambda_min=lmin, lambda_max=lambda_max,
                             negative_mass_low=m_lo)
    r = relative_curvature(lmin, lambda_max)
    ok = bool(conv.all()) if conv.numel() else True
    seed = density.info.seed if density is not None else bottom.info.seed
    src = density.info if density is not None else bottom.info
    status = f"verdict {verdict}"
    if r is not None:
        status += f" (relative curvature |lambda_min|/lambda_max = {r:.3g})"
    if not ok:
        status += ("; the bottom eigenpairs are not certified (lambda_min <= the reported Rayleigh quotient, so the "
                   "relative curvature is a lower bound): increase max_matvecs")
    if resolved is False:
        status += (f"; saddle index not resolved by this quadrature (bounds [{bounds[0]:.3g}, {bounds[1]:.3g}]): "
                   "the verdict uses negative_mass and the lower bound; more num_steps narrow the bounds")
    info = RunInfo(seed=seed, matvecs=0, wall_time=time.perf_counter() - t0, converged=ok, status=status,
                   dtype=src.dtype, device=src.device)
    return SaddleResult(fraction_negative=f, fraction_negative_stderr=fse, negative_mass=m, negative_mass_stderr=mse,
                        bottom_eigenvalues=vals, bottom_residuals=res, bottom_certified=conv, verdict=verdict, info=info,
                        fraction_negative_bounds=bounds, fraction_negative_resolved=resolved,
                        relative_curvature=r, negative_mass_interval=m_int)
