"""The :class:`AnalysisResult` returned by :func:`~curvlens.diagnostics.analyze` and its summary."""

from __future__ import annotations

import math
from dataclasses import dataclass

from curvlens.diagnostics.conditioning import ConditioningResult
from curvlens.diagnostics.gradient_noise import GradientNoiseResult
from curvlens.diagnostics.noise import NoiseStudyResult
from curvlens.diagnostics.per_layer import PerLayerResult
from curvlens.diagnostics.saddle import SaddleResult
from curvlens.diagnostics.sharpness import SharpnessResult
from curvlens.estimators import TraceResult
from curvlens.estimators.density import DensityResult
from curvlens.linalg import EigenResult
from curvlens.results import RunInfo, register_result

__all__ = ["AnalysisResult", "SUMMARY_KEYS"]

#: Keys of :meth:`AnalysisResult.summary`, in order, with their meaning. A value is None when
#: the quantity was not measured (stage skipped or out of budget).
SUMMARY_KEYS: dict[str, str] = {
    "num_params": "D, number of parameters the curvature is taken over",
    "num_samples": "N, number of samples of the data",
    "curvature": "'hessian', 'ggn' or 'fisher' (Monte-Carlo Fisher)",
    "lambda_max": "largest eigenvalue",
    "lambda_max_certified": "its true residual met the tolerance",
    "lambda_min": "smallest (most negative) eigenvalue",
    "lambda_min_certified": "its true residual met the tolerance",
    "lambda_min_residual": "true residual of lambda_min",
    "lambda_min_status": "'verified', 'resolved' (an eigenvalue near theta_min), 'unresolved' or 'not_measured'",
    "lambda_min_upper_bound": "theta_min: lambda_min <= theta_min (Ritz values lie inside the spectrum)",
    "condition_number": "lambda_max / lambda_min when certified lambda_min > 0, else None",
    "condition_number_lower_bound": "kappa >= theta_max / theta_min, holds without convergence",
    "effective_condition_number": "lambda_max / (trace / D) (else lambda_max / lambda_k)",
    "trace": "trace estimate",
    "trace_stderr": "its standard error",
    "saddle_index": "fraction of negative eigenvalues (SLQ)",
    "saddle_index_stderr": "its standard error across probes (at least half the bounds' width when unresolved)",
    "saddle_index_bounds": "[lower, upper] Gauss quadrature bounds of the saddle index (SLQ; probe noise on top)",
    "saddle_index_resolved": "bounds narrow enough for the verdict to use the saddle index (else: negative mass)",
    "negative_mass": "sum |l<0| / sum |l| (SLQ)",
    "negative_mass_stderr": "its standard error across probes (the larger of delta-method and per-probe spread)",
    "negative_mass_interval": "[lower, upper] 95% interval of negative_mass (Student t over the probes)",
    "relative_curvature": "max(0, -lambda_min) / lambda_max, what the saddle verdict rests on",
    "saddle_verdict": "'near_minimum', 'saddle_region' or 'strongly_indefinite'",
    "lr": "learning rate given",
    "momentum": "momentum given",
    "stability_threshold": "(2 + 2 momentum) / lr",
    "sharpness_ratio": "lambda_max / stability_threshold (lr lambda_max / 2 without momentum)",
    "critical_batch_lambda_max": "batch size where a minibatch lambda_max has rstderr <= target",
    "critical_batch_trace": "batch size where a minibatch trace has rstderr <= target",
    "noise_batch_sizes": "batch sizes of the noise study (list of int)",
    "noise_rstderr_lambda_max": "relative std error of a minibatch lambda_max per batch size (list)",
    "noise_rstderr_trace": "relative std error of a minibatch trace per batch size (list)",
    "gradient_noise_scale": "B_simple = tr(Sigma) / |G|^2 (McCandlish et al. 2018)",
    "hvp_cost": "seconds of one curvature product / seconds of one gradient",
    "matvecs": "curvature products spent (minibatch products counted as B/N of one)",
    "seconds": "wall time of the analysis",
}


def _f(x) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x


@register_result("analysis")
@dataclass(frozen=True)
class AnalysisResult:
    """Everything :func:`~curvlens.diagnostics.analyze` measured, plus a flat summary.

    Attributes:
        curvature: ``"hessian"``, ``"ggn"`` or ``"fisher"`` (``"operator"`` when analyze was
            given a prebuilt operator).
        num_params, num_samples: ``D`` and ``N`` (``N`` is 0 for a prebuilt operator without it).
        lr, momentum: as given.
        top, bottom, trace, density: the raw estimator results (None when not run).
        conditioning, sharpness, saddle, noise, gradient_noise, per_layer: diagnostic results.
        hvp_cost: seconds of one curvature product over seconds of one gradient.
        notes: skipped stages and budget decisions, one sentence each.
        info: seed, total matvecs, wall time, converged (every run stage converged), status.
    """

    curvature: str
    num_params: int
    num_samples: int
    lr: float | None
    momentum: float | None
    top: EigenResult | None
    bottom: EigenResult | None
    trace: TraceResult | None
    density: DensityResult | None
    conditioning: ConditioningResult | None
    sharpness: SharpnessResult | None
    saddle: SaddleResult | None
    noise: NoiseStudyResult | None
    gradient_noise: GradientNoiseResult | None
    per_layer: PerLayerResult | None
    hvp_cost: float | None
    notes: tuple[str, ...]
    info: RunInfo

    def summary(self) -> dict:
        """Flat dict with the keys of :data:`SUMMARY_KEYS` (missing measurements are None)."""
        s = dict.fromkeys(SUMMARY_KEYS)
        s.update(num_params=int(self.num_params), num_samples=int(self.num_samples), curvature=self.curvature,
                 lr=_f(self.lr), momentum=_f(self.momentum), hvp_cost=_f(self.hvp_cost),
                 matvecs=int(self.info.matvecs), seconds=float(self.info.wall_time))
        c = self.conditioning
        if c is not None:
            s.update(lambda_max=c.lambda_max, lambda_max_certified=c.lambda_max_certified, lambda_min=c.lambda_min,
                     lambda_min_certified=c.lambda_min_certified, condition_number=c.condition_number,
                     effective_condition_number=c.effective_condition_number,
                     lambda_min_residual=c.lambda_min_residual, lambda_min_status=c.lambda_min_status,
                     lambda_min_upper_bound=c.lambda_min_upper_bound,
                     condition_number_lower_bound=c.condition_number_lower_bound)
        else:
            if self.top is not None:
                s.update(lambda_max=float(self.top.eigenvalues[0]), lambda_max_certified=bool(self.top.converged[0]))
            if self.bottom is not None:
                s.update(lambda_min=float(self.bottom.eigenvalues[0]),
                         lambda_min_certified=bool(self.bottom.converged[0]))
        if self.trace is not None:
            s.update(trace=float(self.trace.estimate), trace_stderr=float(self.trace.stderr))
        d = self.saddle
        if d is not None:
            b = d.fraction_negative_bounds
            s.update(saddle_index=d.fraction_negative, saddle_index_stderr=d.fraction_negative_stderr,
                     saddle_index_bounds=None if b is None else [float(b[0]), float(b[1])],
                     saddle_index_resolved=d.fraction_negative_resolved,
                     negative_mass=d.negative_mass, negative_mass_stderr=d.negative_mass_stderr,
                     negative_mass_interval=None if d.negative_mass_interval is None
                     else [float(x) for x in d.negative_mass_interval],
                     relative_curvature=d.relative_curvature, saddle_verdict=d.verdict)
        if self.sharpness is not None:
            s.update(stability_threshold=self.sharpness.threshold, sharpness_ratio=self.sharpness.ratio)
        n = self.noise
        if n is not None:
            s["noise_batch_sizes"] = [int(b) for b in n.batch_sizes]
            for q, key, ckey in (("lambda_max", "noise_rstderr_lambda_max", "critical_batch_lambda_max"),
                                 ("trace", "noise_rstderr_trace", "critical_batch_trace")):
                if q in n.quantities:
                    i = n.quantities.index(q)
                    s[key] = [float(x) for x in n.rstderr[i]]
                    crit = float(n.critical_batch[i])
                    s[ckey] = None if math.isnan(crit) else crit
        if self.gradient_noise is not None:
            b = self.gradient_noise.b_simple
            s["gradient_noise_scale"] = None if math.isnan(b) else float(b)
        return s
