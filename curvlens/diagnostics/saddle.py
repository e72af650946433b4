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

Verdict thresholds (on ``negative_mass`` ``m`` and a resolved ``fraction_negative`` ``f``):

* ``"near_minimum"``: ``m <= 0.05`` (at most 5% of the spectral mass is negative).
* ``"strongly_indefinite"``: ``m >= 0.25`` or ``f >= 0.25``.
* ``"saddle_region"``: otherwise.

Without a density, the verdict uses ``r = max(0, -l_min) / |l_max|`` with the same thresholds
(``r <= 0.05``, ``r >= 0.25``), and the fractions are None. References: Dauphin et al.,
"Identifying and attacking the saddle point problem", NeurIPS 2014; Ghorbani et al. 2019.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from curvlens.estimators.density import DensityResult
from curvlens.linalg import EigenResult
from curvlens.results import RunInfo, register_result

__all__ = ["SaddleResult", "saddle_from", "saddle_verdict", "NEAR_MINIMUM_MASS", "STRONGLY_INDEFINITE",
           "RESOLVED_WIDTH"]

#: ``negative_mass`` at or below which the point is called ``"near_minimum"``.
NEAR_MINIMUM_MASS = 0.05
#: ``negative_mass`` or ``fraction_negative`` at or above which it is ``"strongly_indefinite"``.
STRONGLY_INDEFINITE = 0.25
#: width of the quadrature bounds up to which the saddle index counts as resolved (or 3 stderr).
RESOLVED_WIDTH = 0.05


@register_result("saddle", schema=2)
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
            the saddle index (module doc); None without bounds.
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

    @classmethod
    def __curvlens_upgrade__(cls, schema: int, values: dict) -> dict:
        """Schema 1 had no quadrature bounds: they read as None (not measured)."""
        return {**values, "fraction_negative_bounds": None, "fraction_negative_resolved": None}


def saddle_verdict(negative_mass: float | None, fraction_negative: float | None = None, *,
                   lambda_min: float | None = None, lambda_max: float | None = None) -> str:
    """The verdict for the given measurements (thresholds in the module docstring).

    Example:
        >>> saddle_verdict(0.01, 0.02), saddle_verdict(0.1, 0.1), saddle_verdict(0.1, 0.4)
        ('near_minimum', 'saddle_region', 'strongly_indefinite')
    """
    m, f = negative_mass, fraction_negative
    if m is None or not math.isfinite(m):
        if lambda_min is None or lambda_max is None or lambda_max == 0:
            return "saddle_region" if (lambda_min is not None and lambda_min < 0) else "near_minimum"
        m, f = max(0.0, -lambda_min) / abs(lambda_max), None
    if m >= STRONGLY_INDEFINITE or (f is not None and math.isfinite(f) and f >= STRONGLY_INDEFINITE):
        return "strongly_indefinite"
    return "near_minimum" if m <= NEAR_MINIMUM_MASS else "saddle_region"


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
    if density is not None:
        fb, nm = density.fraction_below(0.0), density.negative_mass()
        f, fse, m, mse = float(fb), float(fb.stderr), float(nm), float(nm.stderr)
        if density.method == "slq" and density.node_kind is not None:
            lo, hi = density.fraction_below_bounds(0.0)
            bounds = (float(lo), float(hi))
            resolved = bool(hi - lo <= max(RESOLVED_WIDTH, 3 * fse if math.isfinite(fse) else 0.0))
    if bottom is not None:
        vals, res, conv = bottom.eigenvalues.double(), bottom.residuals.double(), bottom.converged.bool()
    else:
        vals = res = torch.zeros(0, dtype=torch.float64)
        conv = torch.zeros(0, dtype=torch.bool)
    lmin = float(vals[0]) if vals.numel() else None
    verdict = saddle_verdict(m, bounds[0] if resolved is False else f, lambda_min=lmin, lambda_max=lambda_max)
    ok = bool(conv.all()) if conv.numel() else True
    seed = density.info.seed if density is not None else bottom.info.seed
    src = density.info if density is not None else bottom.info
    status = f"verdict {verdict}" + ("" if ok else "; the bottom eigenpairs are not certified: increase max_matvecs")
    if resolved is False:
        status += (f"; saddle index not resolved by this quadrature (bounds [{bounds[0]:.3g}, {bounds[1]:.3g}]): "
                   "the verdict uses negative_mass and the lower bound; more num_steps narrow the bounds")
    info = RunInfo(seed=seed, matvecs=0, wall_time=time.perf_counter() - t0, converged=ok, status=status,
                   dtype=src.dtype, device=src.device)
    return SaddleResult(fraction_negative=f, fraction_negative_stderr=fse, negative_mass=m, negative_mass_stderr=mse,
                        bottom_eigenvalues=vals, bottom_residuals=res, bottom_certified=conv, verdict=verdict, info=info,
                        fraction_negative_bounds=bounds, fraction_negative_resolved=resolved)
