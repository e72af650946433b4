"""Synthetic but realistic analyses for the report tests.

The spectral parts are computed by the real algorithms on a small dense matrix with a known,
indefinite spectrum (bulk around 0 with negative eigenvalues, two outliers), like the Hessian
of a trained network. The diagnostics parts use engineer G's classes when they exist, and
test-local frozen dataclasses with the same field names otherwise.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from curvlens.diagnostics.conditioning import conditioning_from
from curvlens.diagnostics.gradient_noise import GradientNoiseResult
from curvlens.diagnostics.noise import NoiseStudyResult
from curvlens.diagnostics.saddle import saddle_from
from curvlens.diagnostics.sharpness import sharpness
from curvlens.estimators import hutchinson_trace
from curvlens.estimators.density import spectral_density
from curvlens.linalg import bottom_eigenpairs, top_eigenpairs
from curvlens.operators import DenseOperator
from curvlens.results import RunInfo

D = 40
OUTLIERS = (50.0, 30.0)


def spectrum() -> np.ndarray:
    """Known indefinite spectrum: 38 bulk eigenvalues in [-0.6, 2.0] plus outliers 30 and 50."""
    bulk = np.linspace(-0.6, 2.0, D - len(OUTLIERS))
    return np.sort(np.concatenate([bulk, OUTLIERS]))


def operator() -> DenseOperator:
    g = torch.Generator().manual_seed(123)
    q, _ = torch.linalg.qr(torch.randn(D, D, dtype=torch.float64, generator=g))
    A = q @ torch.diag(torch.from_numpy(spectrum())) @ q.T
    return DenseOperator((A + A.T) / 2)


def info(status: str = "ok", converged: bool = True, matvecs: int = 0) -> RunInfo:
    return RunInfo(seed=0, matvecs=matvecs, wall_time=0.01, converged=converged, status=status,
                   dtype="torch.float64", device="cpu")


from curvlens.diagnostics.analysis import AnalysisResult  # noqa: E402  (after the stand-in classes above)
from curvlens.diagnostics.per_layer import PerLayerResult  # noqa: E402


def noise_study(full=(50.0, 82.0), a=(0.5, 1.0), b=(2000.0, 9000.0), target=0.1) -> NoiseStudyResult:
    """A batch-size study whose points follow var = a + b/B exactly (with a little scatter)."""
    batch = np.array([8, 16, 32, 64, 128])
    names = ("lambda_max", "trace")
    var = np.array([[a[i] + b[i] / B for B in batch] for i in range(2)]) * np.array([[1.05, 0.97, 1.02, 0.99, 1.01]])
    stds = np.sqrt(var)
    full_t = torch.tensor(full, dtype=torch.float64)
    crit = []
    for i in range(2):
        need = (target * full[i]) ** 2 - a[i]
        crit.append(b[i] / need if need > 0 else math.inf)
    return NoiseStudyResult(
        batch_sizes=torch.tensor(batch, dtype=torch.int64), quantities=names,
        means=full_t[:, None].repeat(1, batch.size), stds=torch.from_numpy(stds),
        rstderr=torch.from_numpy(stds / np.abs(np.array(full))[:, None]), full_values=full_t,
        fit_a=torch.tensor(a, dtype=torch.float64), fit_b=torch.tensor(b, dtype=torch.float64),
        critical_batch=torch.tensor(crit, dtype=torch.float64), target_rstderr=target, num_draws=8,
        notes=("trace: Hutchinson variance subtracted",), info=info(matvecs=400))


def per_layer() -> PerLayerResult:
    names = ("conv1.weight", "conv1.bias", "fc<script>.weight", "fc.bias")
    sizes = torch.tensor([20, 4, 12, 4])
    traces = torch.tensor([40.0, 3.0, 36.0, 2.0], dtype=torch.float64)
    lmax = torch.tensor([30.0, 2.0, 25.0, 1.5], dtype=torch.float64)
    return PerLayerResult(block_names=names, sizes=sizes, traces=traces,
                          trace_stderr=torch.tensor([2.0, 0.4, 3.0, 0.2], dtype=torch.float64),
                          lambda_max=lmax, lambda_max_residual=torch.tensor([1e-3, 1e-4, 2e-3, 1e-4],
                                                                            dtype=torch.float64),
                          trace_share=traces / traces.sum(), lambda_max_share=torch.tensor([0.7, 0.01, 0.28, 0.01], dtype=torch.float64),
                          info=info(matvecs=80))


@functools.lru_cache(maxsize=None)  # results are frozen: share them between tests
def full_analysis(lr: float = 0.05, momentum: float = 0.0) -> AnalysisResult:
    """Every part measured."""
    op = operator()
    top = top_eigenpairs(op, 3, generator=0)
    bottom = bottom_eigenpairs(op, 2, generator=0)
    trace = hutchinson_trace(op, 30, generator=0)
    dens = spectral_density(op, num_probes=4, num_steps=16, generator=0)
    cond = conditioning_from(top, bottom, trace=trace.estimate, dim=D)
    sh = sharpness(float(top.eigenvalues[0]), lr=lr, momentum=momentum)
    sad = saddle_from(dens, bottom, lambda_max=float(top.eigenvalues[0]))
    gn = GradientNoiseResult(b_simple=96.0, trace_sigma=48.0, grad_norm_sq=0.5, method="per_sample",
                             num_samples=256, info=info())
    kw = dict(curvature="hessian", num_params=D, num_samples=256, lr=lr, momentum=momentum, top=top,
              bottom=bottom, trace=trace, density=dens, conditioning=cond, sharpness=sh, saddle=sad,
              noise=noise_study(), gradient_noise=gn, per_layer=per_layer(), hvp_cost=1.7,
              notes=("note with <b>html</b> & ampersand",), info=info(matvecs=op.num_matvecs))
    return AnalysisResult(**kw)


@functools.lru_cache(maxsize=None)
def empty_analysis() -> AnalysisResult:
    """Nothing measured but the sizes."""
    return AnalysisResult(curvature="hessian", num_params=D, num_samples=256, lr=None, momentum=None, top=None,
                          bottom=None, trace=None, density=None, conditioning=None, sharpness=None, saddle=None,
                          noise=None, gradient_noise=None, per_layer=None, hvp_cost=None, notes=(),
                          info=info(matvecs=0))
