"""One monitor measurement: the curvature quantities of a live operator, warm-started.

Two estimators (``estimator=``):

``"shared"`` (default): ONE Lanczos run of ``lanczos_steps`` steps from a fresh Rademacher
probe serves all three metrics (:mod:`curvlens.hooks.probe_lanczos`), for
``lanczos_steps`` products per record (the certificate reuses the run's stored products):

* ``lambda_max`` is the top Ritz value, certified by its true residual
  (``lambda_max_residual``; ``lambda_max_converged`` when it is at most ``rtol * lambda_max``).
  When it is not certified, :func:`~curvlens.linalg.top_eigenpairs` is run, warm-started from
  the Ritz vector, until it is (its products are counted in ``matvecs``). With only
  ``metrics=("lambda_max",)`` no probe is drawn: warm-started ``top_eigenpairs`` alone.
* ``trace_probe`` / ``negative_mass_probe``: this record's one-probe estimates at its weights.
* ``trace`` / ``negative_mass``: the mean of those over the records ``pooled_from_step`` ..
  this step (``pooled_records`` of them, see :mod:`curvlens.hooks.pooling`): pooled while the
  weights moved. ``trace_stderr`` / ``negative_mass_stderr`` are the across-probe standard
  errors of the pooled means (NaN for the first few records).
* per layer: block traces are this probe's (unpooled) block sums of ``z * Hz``.

``"separate"``: independent estimates per record, each with its own within-record standard
error, at ``trace_matvecs + density_matvecs`` + (warm) eigen products:

* ``lambda_max`` by :func:`~curvlens.linalg.top_eigenpairs`, started from the previous
  measurement's eigenvector (``v0``) when the installed curvlens supports it, and certified by
  its true residual (``lambda_max_residual``, ``lambda_max_converged``);
* ``trace`` with its standard error by :func:`~curvlens.estimators.krylov_trace`;
* ``negative_mass`` with its standard error by :func:`~curvlens.estimators.spectral_density`
  from at least :data:`DENSITY_PROBES` (3) probes sharing the ``density_matvecs`` budget
  (``density_matvecs // 3`` Lanczos steps each, capped at ``D``; more probes when ``D`` is
  smaller). ``negative_mass_stderr`` is the delta-method standard error of the ratio across
  the probes' quadratures: with deflation the pilot probe's own row is dropped when it
  converged eigenpairs, so at least two rows are averaged and the error is finite for every
  ``D`` (the density's own budget rule gives one probe, hence no error, from ``D = 144`` on
  at 60 products). It is probe noise only: the quadrature bias of ``density_matvecs // 3``
  nodes is not in it (see :mod:`curvlens.hooks.probe_lanczos` for its size at 20 nodes);
* the preconditioned sharpness ``lambda_max(P^-1 H)`` for Adam-like optimizers;
* per layer: the top eigenvalue of each diagonal block and the block traces.

A product that overflows (``NonFiniteLossError``) makes its quantity NaN instead of raising,
so that a diverging run is recorded and alerted on rather than stopped by the monitor.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import torch

from curvlens.errors import NonFiniteLossError
from curvlens.estimators import krylov_trace, spectral_density
from curvlens.hooks.optimizer_view import OptimizerView, PreconditionedOperator
from curvlens.hooks.pooling import ProbePool
from curvlens.hooks.probe_lanczos import probe_lanczos
from curvlens.linalg import top_eigenpairs

__all__ = ["Measurer", "METRICS", "ESTIMATORS", "DENSITY_PROBES", "density_split"]

METRICS = ("lambda_max", "trace", "negative_mass")
ESTIMATORS = ("shared", "separate")
DENSITY_PROBES = 3  # the pilot's row may be dropped by deflation: >= 2 rows remain for a standard error


def density_split(num_matvecs: int, dim: int) -> tuple[int, int]:
    """``(num_probes, num_steps)`` of the separate negative-mass estimate: at least
    :data:`DENSITY_PROBES` probes of ``num_matvecs // DENSITY_PROBES`` steps, steps capped at
    ``dim`` (the rest of the budget then buys more probes).

    Example:
        >>> density_split(60, 8970), density_split(300, 13), density_split(6, 100)
        ((3, 20), (23, 13), (3, 2))
    """
    steps = min(max(1, int(num_matvecs) // DENSITY_PROBES), max(int(dim), 1))
    return max(DENSITY_PROBES, int(num_matvecs) // steps), steps


def _supports_v0() -> bool:
    try:
        return "v0" in inspect.signature(top_eigenpairs).parameters
    except (TypeError, ValueError):  # pragma: no cover
        return False


class Measurer:
    """Measures the quantities of one live operator, keeping warm starts between calls.

    Args:
        op: a live model operator (rebuilt automatically after weight updates).
        metrics: subset of :data:`METRICS`.
        per_layer: also measure each block (``op.blocks``).
        rtol: certificate tolerance of the top eigenvalues.
        trace_matvecs: product budget of the trace estimate.
        density_matvecs: product budget of the spectral density (negative mass).
        generator: a ``torch.Generator`` (advanced by each measurement).
        estimator: ``"shared"`` or ``"separate"`` (see the module docstring).
        lanczos_steps: Lanczos steps of the shared probe run.
        pool: records pooled by the shared estimator.
    """

    def __init__(self, op, *, metrics: tuple[str, ...], per_layer: bool, rtol: float, trace_matvecs: int,
                 density_matvecs: int, generator: torch.Generator, estimator: str = "shared",
                 lanczos_steps: int = 20, pool: int = 4):
        self.op, self.metrics, self.per_layer = op, metrics, per_layer
        self.estimator, self.lanczos_steps = estimator, lanczos_steps
        self.pools = {"trace": ProbePool(pool), "negative_mass": ProbePool(pool)}
        self.rtol, self.trace_matvecs, self.density_matvecs = rtol, trace_matvecs, density_matvecs
        self.gen = generator
        self.warm = _supports_v0()
        self._v0: dict[str, torch.Tensor] = {}
        self.blocks = {b.name: op.block(b.name) for b in op.blocks} if per_layer and len(op.blocks) > 1 else {}

    def _top(self, key: str, op, *, rtol: float, max_matvecs: int | None = None):
        kw: dict[str, Any] = {}
        if self.warm and key in self._v0:
            kw["v0"] = self._v0[key]
        res = top_eigenpairs(op, 1, rtol=rtol, max_matvecs=max_matvecs, generator=self.gen, **kw)
        vec = res.eigenvectors[:, 0]
        if bool(torch.isfinite(vec).all()) and float(vec.norm()) > 0:
            self._v0[key] = vec.detach().clone()
        return res

    @property
    def products_per_record(self) -> int:
        """Products a record is expected to take (for a first cost guess; fallbacks not included)."""
        n = 0
        shared = self.estimator == "shared" and ("trace" in self.metrics or "negative_mass" in self.metrics)
        if shared:
            n += min(self.lanczos_steps, self.op.dim)
        elif "lambda_max" in self.metrics:
            n += 8
        if not shared:
            n += self.trace_matvecs * ("trace" in self.metrics) + self.density_matvecs * ("negative_mass" in self.metrics)
        return n + 10 * len(self.blocks)

    def measure(self, view: OptimizerView | None, step: int = 0) -> dict[str, float]:
        """All quantities at the current weights (NaN for a failed one; see the module docstring)."""
        out: dict[str, float] = {}
        with torch.enable_grad():
            self._safe(out, ("loss",), lambda: (float(self.op.problem.loss()),))
            if self.estimator == "shared" and ("trace" in self.metrics or "negative_mass" in self.metrics):
                self._shared(out, step)
            elif "lambda_max" in self.metrics:
                self._safe(out, ("lambda_max", "lambda_max_residual", "lambda_max_converged"), self._lambda_max)
            if "trace" in self.metrics and self.estimator == "separate":
                self._safe(out, ("trace", "trace_stderr"), self._trace)
            if "negative_mass" in self.metrics and self.estimator == "separate":
                self._safe(out, ("negative_mass", "negative_mass_stderr"), self._negative_mass)
            if view is not None and view.preconditioner is not None:
                self._safe(out, ("preconditioned_sharpness",), lambda: self._preconditioned(view.preconditioner))
            for name, bop in self.blocks.items():
                self._safe(out, (f"layer_lambda_max:{name}",), lambda bop=bop, name=name: (
                    float(self._top(f"block:{name}", bop, rtol=1e-2, max_matvecs=100).eigenvalues[0]),))
            out.update(self.block_traces())
        if view is not None:
            out["lr"], out["threshold"] = view.lr, view.threshold
            lm = out.get("lambda_max", math.nan)
            if view.adaptive:
                out["preconditioned_threshold"] = view.preconditioned_threshold
                out["eos_ratio"] = out.get("preconditioned_sharpness", math.nan) / view.preconditioned_threshold
            else:
                out["eos_ratio"] = lm / view.threshold
        return out

    def _safe(self, out: dict, names: tuple[str, ...], fn) -> None:
        try:
            vals = fn()
        except NonFiniteLossError:
            vals = (math.nan,) * len(names)
        out.update(zip(names, (float(v) for v in vals)))

    def _shared(self, out: dict, step: int) -> None:
        try:
            pr = probe_lanczos(self.op, self.lanczos_steps, generator=self.gen)
        except NonFiniteLossError:
            pr = None
        if "lambda_max" in self.metrics:
            if pr is None:
                out.update(lambda_max=math.nan, lambda_max_residual=math.nan, lambda_max_converged=math.nan)
            elif pr.residual <= self.rtol * abs(pr.lambda_max) and math.isfinite(pr.lambda_max):
                self._v0["full"] = pr.ritz_vector.clone()
                out.update(lambda_max=pr.lambda_max, lambda_max_residual=pr.residual, lambda_max_converged=1.0)
            else:  # not certified by the probe's run: finish from its Ritz vector
                if bool(torch.isfinite(pr.ritz_vector).all()):
                    self._v0["full"] = pr.ritz_vector.clone()
                self._safe(out, ("lambda_max", "lambda_max_residual", "lambda_max_converged"), self._lambda_max)
        pooled_n, pooled_from = 0, step
        for name, value in (("trace", math.nan if pr is None else pr.trace),
                            ("negative_mass", math.nan if pr is None else pr.negative_mass)):
            if name not in self.metrics:
                continue
            mean, se, pooled_n, pooled_from = self.pools[name].add(step, value)
            out.update({name: mean, f"{name}_stderr": se, f"{name}_probe": value})
        out.update(pooled_records=float(pooled_n), pooled_from_step=float(pooled_from))
        self._block_traces = {}
        if self.blocks and pr is not None:
            terms = pr.diag_terms.double()
            self._block_traces = {b.name: float(terms[b.slice].sum()) for b in self.op.blocks}

    def _lambda_max(self):
        res = self._top("full", self.op, rtol=self.rtol)
        return float(res.eigenvalues[0]), float(res.residuals[0]), float(bool(res.converged[0]))

    def _trace(self):
        res = krylov_trace(self.op, self.trace_matvecs, per_block=bool(self.blocks), generator=self.gen)
        self._block_traces = dict(zip(res.block_names, res.block_estimates.tolist())) if self.blocks else {}
        return res.estimate, res.stderr

    def _negative_mass(self):
        probes, steps = density_split(self.density_matvecs, self.op.dim)
        res = spectral_density(self.op, num_probes=probes, num_steps=steps, generator=self.gen)
        nm = res.negative_mass()
        return float(nm), nm.stderr

    def _preconditioned(self, diag: torch.Tensor):
        res = self._top("preconditioned", PreconditionedOperator(self.op, diag), rtol=self.rtol)
        return (float(res.eigenvalues[0]),)

    def block_traces(self) -> dict[str, float]:
        """Per-block traces of the last trace estimate (empty unless per-layer)."""
        return {f"layer_trace:{k}": v for k, v in getattr(self, "_block_traces", {}).items()}
