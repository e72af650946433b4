"""curvlens: see the curvature of a neural network's loss, matrix-free.

The public API, grouped by layer (see the README for a tour). Heavier pieces (HDF5 I/O,
reports) live in their subpackages: ``curvlens.io``, ``curvlens.report``; loading from files is
``curvlens.load_problem``.
"""

from curvlens._version import __version__
from curvlens.errors import (
    CheckpointError, ConvergenceWarning, CurvlensError, NonFiniteLossError, SchemaError,
)
from curvlens.results import RunInfo

# the problem: model + loss + data + parameters
from curvlens.problem import Problem, load_problem

# operators: matrix-free curvature products
from curvlens.operators import (
    Block, CurvatureOperator, DenseOperator, DiagonalOperator, EmpiricalFisherOperator, GGNOperator,
    HessianOperator, IdentityOperator, MCFisherOperator,
)

# linear algebra: certified eigenvalues
from curvlens.linalg import (
    CGResult, EigenResult, ExtremeEigenvalues, LanczosResult, MinresResult, bottom_eigenpairs, cg,
    extreme_eigenvalues, lanczos, minres, power_iteration, top_eigenpairs,
)

# stochastic estimators: trace, diagonal, norms, spectral density
from curvlens.estimators import (
    DensityResult, DiagonalResult, Estimate, NormResult, TraceResult, exact_diagonal, frobenius_norm,
    ggn_diagonal, hessian_diagonal, hutchinson_diagonal, hutchinson_trace, hutchpp_trace, krylov_trace, probe_vectors, spectral_density, wasserstein_1,
    xdiag, xtrace,
)

# several processes
from curvlens import distributed  # noqa: F401  (curvlens.distributed.ProcessGroupError, shard, ...)

# diagnostics
from curvlens.diagnostics import AnalysisResult, BudgetSplitter, analyze

# optimizers that act on curvature (they register by name for the recommender)
from curvlens.optim import KFAC, KFACPreconditioner, NewtonCG, SaddleFreeNewton

# recommendations
from curvlens.recommend import Recommendation, RecommendationContext, recommend

# reports (matplotlib is imported only when a figure is drawn)
from curvlens.report import summary_table, write_comparison, write_report

__all__ = [
    "__version__",
    # errors and run metadata
    "CurvlensError", "NonFiniteLossError", "CheckpointError", "SchemaError", "ConvergenceWarning", "RunInfo",
    # the problem
    "Problem", "load_problem",
    # operators
    "CurvatureOperator", "Block", "DenseOperator", "HessianOperator", "GGNOperator",
    "EmpiricalFisherOperator", "MCFisherOperator", "IdentityOperator", "DiagonalOperator",
    # linear algebra
    "lanczos", "LanczosResult", "top_eigenpairs", "bottom_eigenpairs", "extreme_eigenvalues",
    "power_iteration", "EigenResult", "ExtremeEigenvalues", "cg", "CGResult", "minres", "MinresResult",
    # estimators
    "probe_vectors", "hutchinson_trace", "hutchpp_trace", "krylov_trace", "xtrace", "TraceResult",
    "hutchinson_diagonal", "xdiag", "exact_diagonal", "ggn_diagonal", "hessian_diagonal", "DiagonalResult", "frobenius_norm", "NormResult",
    "spectral_density", "DensityResult", "Estimate", "wasserstein_1",
    # diagnostics
    "analyze", "AnalysisResult", "BudgetSplitter",
    # training: the monitor and its time series (imported on first use)
    "CurvatureMonitor", "CurvatureSeries", "load_series",
    # optimizers
    "NewtonCG", "KFAC", "KFACPreconditioner", "SaddleFreeNewton",
    # recommendations
    "recommend", "Recommendation", "RecommendationContext",
    # reports
    "write_report", "summary_table", "write_comparison",
]

# imported on first attribute access, so that ``import curvlens`` does not import h5py
_LAZY = {
    "CurvatureMonitor": "curvlens.hooks.monitor",
    "CurvatureSeries": "curvlens.io.series",
    "load_series": "curvlens.io.series",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'curvlens' has no attribute {name!r}")
