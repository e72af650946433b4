"""Spectral density of a curvature operator: stochastic Lanczos quadrature (SLQ) and KPM.

The spectral density of a symmetric ``D x D`` matrix ``A`` is the measure
``phi(t) = (1/D) sum_i delta(t - lambda_i)``. For a random unit vector ``q`` with
``E[q q^T] = I / D`` (a normalized Rademacher or Gaussian probe), ``q^T f(A) q`` is an unbiased
estimate of ``(1/D) tr f(A) = integral f dphi``. SLQ evaluates ``q^T f(A) q`` by the Gauss
quadrature that ``m`` Lanczos steps started at ``q`` provide: nodes are the Ritz values
``theta_j`` and weights the squared first components ``tau_j^2`` of the eigenvectors of the
tridiagonal ``T_m``; the rule is exact for polynomials of degree ``< 2m``.

References:
    S. Ubaru, J. Chen, Y. Saad, "Fast estimation of tr(f(A)) via stochastic Lanczos
    quadrature", SIAM J. Matrix Anal. Appl. 38(4), 2017.
    B. Ghorbani, S. Krishnan, Y. Xiao, "An investigation into neural net optimization via
    Hessian eigenvalue density", ICML 2019.
    L. Lin, Y. Saad, C. Yang, "Approximating spectral densities of large matrices", SIAM
    Review 58(1), 2016 (KPM, see :mod:`curvlens.estimators.kpm`).

Unlike plain three-term Lanczos, every run here fully re-orthogonalizes (no ghost copies of
converged eigenvalues), probes come from an explicit generator, and every integral of the
estimated measure comes with the standard error of its per-probe values.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch

from curvlens._rng import resolve_generator
from curvlens.errors import ConvergenceWarning
from curvlens.estimators import _quadrature_bounds as _qb
from curvlens.estimators import kpm as _kpm
from curvlens.estimators._probes import check_probe_kind, probe_vectors
from curvlens.estimators._density_budget import split_budget
from curvlens.estimators.broadening import Estimate, broaden, check_grid, check_sigma, default_sigma, probe_mean
from curvlens.estimators.slq import run_slq
from curvlens.estimators.wasserstein import wasserstein_1
from curvlens.results import RunInfo, RunTimer, register_result

if TYPE_CHECKING:
    from curvlens.operators.protocol import LinearOperatorLike

__all__ = ["DensityResult", "Estimate", "spectral_density"]

logger = logging.getLogger(__name__)


@register_result("spectral_density", schema=2)
@dataclass(frozen=True)
class DensityResult:
    """An estimated spectral measure, per probe, plus a smoothed density on a grid.

    Attributes:
        nodes: ``(P, m)`` float64 quadrature nodes per probe (Ritz values for SLQ,
            Chebyshev-Gauss points for KPM), ascending along each row.
        weights: ``(P, m)`` float64 weights. Rows of plain SLQ and KPM sum to 1; rows of
            deflated SLQ probes sum to 1 in expectation (the deflated eigenvalues carry
            ``1/D`` each, the rest ``||P q||^2``), which keeps every integral unbiased. Probes
            whose Lanczos run stopped early (invariant subspace) are padded with zero
            weights.
        grid: ``(G,)`` float64 points where the smoothed density is given.
        density: ``(G,)`` float64 smoothed density (integrates to about 1 over the grid).
        density_stderr: ``(G,)`` float64 standard error of the density across probes.
        sigma: width of the Gaussian broadening used for ``density``.
        method: ``"slq"`` or ``"kpm"``.
        dim: ``D``, the operator dimension.
        num_steps: products per probe requested.
        probe: probe distribution (``"rademacher"`` or ``"gaussian"``).
        bounds: ``(lmin, lmax)`` used by KPM, None for SLQ.
        chebyshev_moments: ``(P, M)`` undamped Chebyshev moments (KPM), None for SLQ.
        info: run metadata (seed, matvecs, time, status).
        node_kind: ``(P, m)`` int8, SLQ only (None for KPM): 0 a Gauss node, 1 a node of exact
            mass (deflated, or its probe found an invariant subspace), -1 an unrecognized row.
    """

    nodes: torch.Tensor
    weights: torch.Tensor
    grid: torch.Tensor
    density: torch.Tensor
    density_stderr: torch.Tensor
    sigma: float
    method: str
    dim: int
    num_steps: int
    probe: str
    bounds: tuple | None
    chebyshev_moments: torch.Tensor | None
    info: RunInfo
    node_kind: torch.Tensor | None = None

    @classmethod
    def __curvlens_upgrade__(cls, schema: int, values: dict) -> dict:
        """Schema 1 had no ``node_kind``: recovered from the SLQ rows and their status."""
        return _qb.upgrade_schema_1(values) if schema < 2 else values

    @property
    def num_probes(self) -> int:
        return int(self.nodes.shape[0])

    def expectation(self, f: Callable[[np.ndarray], np.ndarray]) -> Estimate:
        """Estimate ``(1/D) tr f(A)`` as ``integral f dphi``, with the across-probe stderr.

        ``f`` is applied element-wise to a float64 numpy array of nodes.
        """
        x = self.nodes.numpy()
        per_probe = (self.weights.numpy() * np.asarray(f(x), dtype=np.float64)).sum(axis=1)
        return probe_mean(per_probe)

    def fraction_below(self, t: float, *, tol: float | None = None) -> Estimate:
        """Fraction of eigenvalues below ``t`` (nodes ``< t - tol`` count).

        Args:
            t: threshold (e.g. 0.0 for the fraction of negative eigenvalues).
            tol: nodes within ``tol`` below ``t`` are not counted, so that exact zero
                eigenvalues rounded to ``-1e-16`` are not called negative. Default
                ``1000 * eps(dtype) * max|node|``.
        """
        t = float(t)
        tol = self._tol() if tol is None else float(tol)
        return self.expectation(lambda x: (x < t - tol).astype(np.float64))

    def fraction_below_bounds(self, t: float, *, tol: float | None = None) -> tuple[Estimate, Estimate]:
        """``(lower, upper)`` bracketing the fraction of eigenvalues below ``t - tol`` (SLQ only).

        Where a bulk sits near ``t``, :meth:`fraction_below` is biased (a few nodes cannot say on
        which side of ``t`` their mass lies) and its stderr does not show it. Per probe, the
        Chebyshev-Markov-Stieltjes inequalities of Gauss quadrature bracket the exact
        ``q^T 1[A < t - tol] q`` (see :mod:`curvlens.estimators._quadrature_bounds`; width 0 once
        ``num_steps >= D``, but for budget-filling probes); the probe means bracket the mean of
        those, whose expectation is the true fraction. Probe noise comes on top (stderr of each).

        Args:
            t: threshold (0.0 for the saddle index).
            tol: as in :meth:`fraction_below` (same default: the same quantity is bracketed).

        Raises:
            ValueError: for KPM results (their nodes are no Gauss rule of each probe's measure).

        Example:
            >>> import torch
            >>> from curvlens.operators import DenseOperator
            >>> op = DenseOperator(torch.diag(torch.linspace(-1.0, 3.0, 40, dtype=torch.float64)))
            >>> res = spectral_density(op, num_probes=4, num_steps=3, deflate=False, generator=0)
            >>> lo, hi = res.fraction_below_bounds(0.0)  # 10 of 40 below 0; 3 nodes say little
            >>> bool(lo <= 0.25 <= hi), round(float(hi - lo), 2)
            (True, 0.72)
        """
        if self.method != "slq" or self.node_kind is None:
            raise ValueError(
                f"fraction_below_bounds: expected an SLQ result (Gauss quadrature per probe), got method="
                f"{self.method!r}{'' if self.method != 'slq' else ' without node_kind'}; rerun spectral_density(op, "
                "method='slq') to bound the distribution function, or use fraction_below() for a point estimate"
            )
        tol = self._tol() if tol is None else float(tol)
        lo, hi = _qb.per_probe_bounds(self.nodes.numpy(), self.weights.numpy(), self.node_kind.numpy(),
                                      float(t) - tol)
        return probe_mean(lo), probe_mean(hi)

    def _tol(self) -> float:
        eps = float(torch.finfo(_dtype_of(self.info)).eps)
        return 1e3 * eps * float(self.nodes.abs().max())

    def negative_mass(self, *, tol: float | None = None) -> Estimate:
        """``sum_i |lambda_i| [lambda_i < 0] / sum_i |lambda_i|`` (a ratio of two SLQ estimates).

        Nodes in ``[-tol, 0)`` count as zero (default tol as in :meth:`fraction_below`).
        The standard error is the delta-method error of the ratio of probe means.
        Returns NaN for the zero operator.
        """
        tol = self._tol() if tol is None else float(tol)
        x, w = self.nodes.numpy(), self.weights.numpy()
        num = (w * np.where(x < -tol, -x, 0.0)).sum(axis=1)
        den = (w * np.abs(x)).sum(axis=1)
        dbar = float(den.mean())
        if not dbar > 0:
            return Estimate(math.nan, math.nan, len(num))
        r = float(num.mean()) / dbar
        P = len(num)
        se = float(np.std(num - r * den, ddof=1) / math.sqrt(P) / dbar) if P > 1 else math.nan
        return Estimate(r, se, P)

    def moment(self, k: int) -> Estimate:
        """Estimate of ``tr(A^k) / D`` (unbiased for SLQ when ``k < 2 * steps``).

        For KPM the undamped Chebyshev moments give it exactly per probe when ``k < M``.
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
            raise ValueError(f"k: expected a non-negative int, got {k!r}")
        mu = self.chebyshev_moments
        if mu is not None and k < mu.shape[1]:
            return probe_mean(_kpm.power_moments_from_chebyshev(mu.numpy(), self.bounds, int(k)))
        return self.expectation(lambda x: x ** int(k))

    def smoothed(self, grid=None, sigma: float | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Re-broaden the measure: ``(grid, density, density_stderr)`` for another grid/width."""
        sigma = self.sigma if sigma is None else check_sigma(sigma)
        g = check_grid(grid, self.nodes.numpy(), self.weights.numpy(), sigma)
        d, se = broaden(self.nodes.numpy(), self.weights.numpy(), g, sigma)
        return torch.from_numpy(g), torch.from_numpy(d), torch.from_numpy(se)

    def wasserstein_1(self, eigenvalues) -> float:
        """1-Wasserstein distance of the probe-averaged measure to exact ``eigenvalues``."""
        return wasserstein_1(self.nodes, self.weights, eigenvalues)


def _dtype_of(info: RunInfo) -> torch.dtype:
    name = info.dtype.replace("torch.", "")
    dt = getattr(torch, name, None)
    return dt if isinstance(dt, torch.dtype) and dt.is_floating_point else torch.float64


def _check_count(value, name: str, fix: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name}: expected a positive int, got {value!r}; {fix}")
    return int(value)


def spectral_density(
    op: LinearOperatorLike,
    *,
    num_probes: int | None = None,
    num_steps: int | None = None,
    num_matvecs: int | None = None,
    method: str = "slq",
    probe: str = "rademacher",
    sigma: float | None = None,
    grid=None,
    bounds: tuple[float, float] | None = None,
    deflate: bool = True,
    fill_budget: bool = True,
    generator: torch.Generator | int | None = None,
    callback: Callable[[int, int], None] | None = None,
) -> DensityResult:
    """Estimate the spectral density of a symmetric operator.

    ``method="slq"`` runs ``num_steps`` steps of fully re-orthogonalized Lanczos from each of
    ``num_probes`` normalized random probes (Ubaru, Chen & Saad 2017; Ghorbani et al. 2019);
    ``method="kpm"`` computes ``2 num_steps + 1`` Chebyshev moments per probe and damps them
    with the Jackson kernel (Weisse et al. 2006; Lin, Saad & Yang 2016). Both cost
    ``num_probes * num_steps`` products (KPM plus a short Lanczos run for the bounds when
    ``bounds`` is not given) and return the same :class:`DensityResult`.

    The smoothed ``density`` convolves the probe-averaged measure with a Gaussian of width
    ``sigma`` on ``grid``. Default ``sigma``: ``sqrt(1e-5)`` on the spectrum mapped to
    ``[-1, 1]`` (Ghorbani et al. 2019), i.e. ``0.00158 * (max node - min node)``; default grid:
    2048 points from ``min node - 6 sigma`` to ``max node + 6 sigma`` (integrates to 1). The
    helpers (:meth:`DensityResult.fraction_below`, ``negative_mass``, ``moment``) integrate
    the unsmoothed nodes and weights.

    Args:
        op: a :class:`~curvlens.operators.CurvatureOperator`.
        num_probes: number of random probes ``P`` (>= 2 for standard errors); default 10.
        num_steps: Lanczos steps (SLQ, capped at ``D``) or Chebyshev products (KPM) per probe;
            default 80.
        num_matvecs: a total product budget instead of ``num_probes`` and ``num_steps``: split
            into few long runs (resolution dominates the error at a fixed budget; see
            :mod:`curvlens.estimators._density_budget`): one probe up to ``5 sqrt(D)``
            products (no standard error then), else 3 to 10 probes, e.g. 800 products on
            ``D = 2714`` -> 6 probes x 133 steps, on ``D = 10^6`` -> 1 probe x 800 steps.
        method: ``"slq"`` (default; sharper, exact for polynomials of degree < 2 num_steps)
            or ``"kpm"``.
        probe: ``"rademacher"`` (default) or ``"gaussian"``.
        sigma: Gaussian broadening width in eigenvalue units (None: default above).
        grid: number of grid points or an increasing 1-D array of points.
        bounds: ``(lmin, lmax)`` enclosing the spectrum, for KPM only (e.g. from
            ``extreme_eigenvalues``); default: a short Lanczos run, padded.
        deflate: SLQ only. Use the first probe as a pilot: deflate the eigenpairs its run
            converged (outliers, typically; at most ``2 num_steps``) from the later probes,
            which then carry their exact mass ``1/D`` each: same cost, unbiased, much less
            probe noise on spectra with outliers (see :mod:`curvlens.estimators.slq`). When
            the pilot converged eigenpairs, its own quadrature is not averaged
            (``num_probes - 1`` rows). With one probe, its converged nodes whose weight is
            that of a simple eigenvalue get their exact mass ``1/D`` in its own row (a control
            variate; a repeated eigenvalue of multiplicity below about 8 may then be counted
            once, see :mod:`curvlens.estimators.slq`). ``False`` gives plain SLQ.
        fill_budget: SLQ only. When probes find an invariant subspace in fewer than
            ``num_steps`` steps (few distinct eigenvalues, tiny operators), spend the unused
            products of the ``num_probes * num_steps`` budget on extra probes, so the result
            may hold more than ``num_probes`` rows. ``False``: exactly ``num_probes`` rows.
        generator: ``torch.Generator``, int seed or None (fresh seed, recorded in ``info``).
        callback: ``callback(done, total)`` in units of products.

    Returns:
        :class:`DensityResult`.

    Example:
        >>> import torch
        >>> from curvlens.operators import DenseOperator
        >>> A = torch.diag(torch.tensor([-1.0, 0.0, 0.0, 2.0], dtype=torch.float64))
        >>> res = spectral_density(DenseOperator(A), num_probes=4, num_steps=4, generator=0)
        >>> round(float(res.moment(1)), 6), round(float(res.fraction_below(0.0)), 6)
        (0.25, 0.25)
    """
    if not all(hasattr(op, a) for a in ("dim", "dtype", "device", "matvec", "matmat")):
        raise TypeError(
            f"op: expected a CurvatureOperator (dim, dtype, device, matvec, matmat), got {type(op).__name__}; "
            "wrap a dense matrix with curvlens.operators.DenseOperator"
        )
    if num_matvecs is not None:
        if num_probes is not None or num_steps is not None:
            raise ValueError(
                f"num_matvecs: expected either num_matvecs or num_probes/num_steps, got num_matvecs={num_matvecs!r} "
                f"with num_probes={num_probes!r}, num_steps={num_steps!r}; pass only one of the two forms"
            )
        num_matvecs = _check_count(num_matvecs, "num_matvecs", "use e.g. num_matvecs=800")
        if num_matvecs < 2:
            raise ValueError(f"num_matvecs: expected at least 2 products (a 2-node quadrature), got {num_matvecs}")
        num_probes, num_steps = split_budget(num_matvecs, op.dim)
    num_probes = 10 if num_probes is None else num_probes
    num_steps = 80 if num_steps is None else num_steps
    num_probes = _check_count(num_probes, "num_probes", "use num_probes=10 (more probes, smaller stderr)")
    num_steps = _check_count(num_steps, "num_steps", "use num_steps=80 (more steps, finer resolution)")
    if method not in ("slq", "kpm"):
        raise ValueError(f"method: expected 'slq' or 'kpm', got {method!r}; use method='slq'")
    probe = check_probe_kind(probe, "probe")
    if sigma is not None:
        sigma = check_sigma(sigma)
    if method == "slq" and bounds is not None:
        raise ValueError("bounds: only used by method='kpm', got bounds with method='slq'; drop bounds=")
    if method == "kpm" and bounds is not None:
        bounds = _kpm.check_bounds(bounds)
    if callback is not None and not callable(callback):
        raise TypeError(f"callback: expected a callable(done, total) or None, got {type(callback).__name__}")
    gen = resolve_generator(generator)
    timer = RunTimer(op, gen)
    V = probe_vectors(op.dim, num_probes, kind=probe, dtype=op.dtype, device=op.device, generator=gen)
    converged, cheb, status_extra, kinds = True, None, "", None
    if method == "slq":
        total = num_probes * min(num_steps, op.dim)
        def draw(k):
            return probe_vectors(op.dim, k, kind=probe, dtype=op.dtype, device=op.device, generator=gen)

        nodes, weights, extra = run_slq(
            op, V, num_steps, deflate=deflate, fill_budget=fill_budget, draw=draw, callback=callback, total=total
        )
        kinds = torch.from_numpy(_qb.slq_node_kinds(
            nodes, weights, dim=op.dim, steps=num_steps, deflated=extra["deflated"] or extra["self_deflated"],
            extra_probes=extra["extra_probes"], in_row=bool(extra["self_deflated"])))
        if extra["extra_probes"]:
            status_extra += f"; {extra['extra_probes']} extra probe(s) from products left by early stops"
        if extra["deflated"]:
            status_extra += f"; {extra['deflated']} converged eigenpair(s) deflated from later probes"
        if extra["self_deflated"]:
            status_extra += (f"; {extra['self_deflated']} converged eigenpair(s) of the single probe given "
                             "their exact mass 1/D")
        if extra["pilot"]:
            status_extra += "; probe 1 served as the deflation pilot (not averaged)"
        if extra["breakdowns"]:
            status_extra += f"; {extra['breakdowns']} probe(s) found an invariant subspace early (exact)"
    else:
        bound_steps = min(op.dim, 30)
        if bounds is None:
            bounds = _kpm.estimate_bounds(op, bound_steps, generator=gen)
        total = num_probes * num_steps
        mu, outside = _kpm.chebyshev_moments(op, V, bounds, num_steps, callback=callback, total=total)
        if outside:
            converged = False
            status_extra = (
                f"; the spectrum extends beyond bounds={bounds}: pass wider bounds=(lmin, lmax), "
                "e.g. from extreme_eigenvalues(...) padded by a few percent"
            )
            warnings.warn("spectral_density: " + status_extra[2:], ConvergenceWarning, stacklevel=2)
        nodes, weights = _kpm.kpm_measure(mu, bounds, max(4 * mu.shape[1], 64))
        cheb = torch.from_numpy(mu)
    if callback is not None:
        callback(total, total)
    sigma = default_sigma(nodes, weights) if sigma is None else sigma
    g = check_grid(grid, nodes, weights, sigma)
    dens, dens_se = broaden(nodes, weights, g, sigma)
    status = f"{method.upper()} with {num_probes} probe(s) x {num_steps} step(s){status_extra}"
    logger.debug("spectral_density: %s", status)
    return DensityResult(
        nodes=torch.from_numpy(nodes),
        weights=torch.from_numpy(weights),
        grid=torch.from_numpy(g),
        density=torch.from_numpy(dens),
        density_stderr=torch.from_numpy(dens_se),
        sigma=float(sigma),
        method=method,
        dim=int(op.dim),
        num_steps=num_steps,
        probe=probe,
        bounds=None if bounds is None else (float(bounds[0]), float(bounds[1])),
        chebyshev_moments=cheb,
        info=timer.info(converged, status),
        node_kind=kinds,
    )
