"""curvlens: see the curvature of a neural network's loss, matrix-free.

The public API, grouped by layer (see the README for a tour). Heavier pieces (HDF5 I/O,
checkpoint loading, reports) live in their subpackages: ``curvlens.io``, ``curvlens.report``.
"""

from curvlens._version import __version__
from curvlens.errors import (
    CheckpointError, ConvergenceWarning, CurvlensError, NonFiniteLossError, SchemaError,
)
from curvlens.results import RunInfo

# operators: matrix-free curvature products
from curvlens.operators import (
    Block, CurvatureOperator, DenseOperator, EmpiricalFisherOperator, GGNOperator, HessianOperator,
    MCFisherOperator,
)

# linear algebra: certified eigenvalues
from curvlens.linalg import (
    EigenResult, ExtremeEigenvalues, LanczosResult, bottom_eigenpairs, extreme_eigenvalues, lanczos,
    power_iteration, top_eigenpairs,
)

# stochastic estimators: trace, diagonal, norms, spectral density
from curvlens.estimators import (
    DensityResult, DiagonalResult, Estimate, NormResult, TraceResult, exact_diagonal, frobenius_norm,
    hutchinson_diagonal, hutchinson_trace, hutchpp_trace, krylov_trace, probe_vectors, spectral_density, wasserstein_1,
    xdiag, xtrace,
)

# diagnostics
from curvlens.diagnostics import AnalysisResult, analyze

# recommendations
from curvlens.recommend import Recommendation, RecommendationContext, recommend

# reports (matplotlib is imported only when a figure is drawn)
from curvlens.report import summary_table, write_comparison, write_report

__all__ = [
    "__version__",
    # errors and run metadata
    "CurvlensError", "NonFiniteLossError", "CheckpointError", "SchemaError", "ConvergenceWarning", "RunInfo",
    # operators
    "CurvatureOperator", "Block", "DenseOperator", "HessianOperator", "GGNOperator",
    "EmpiricalFisherOperator", "MCFisherOperator",
    # linear algebra
    "lanczos", "LanczosResult", "top_eigenpairs", "bottom_eigenpairs", "extreme_eigenvalues",
    "power_iteration", "EigenResult", "ExtremeEigenvalues",
    # estimators
    "probe_vectors", "hutchinson_trace", "hutchpp_trace", "krylov_trace", "xtrace", "TraceResult",
    "hutchinson_diagonal", "xdiag", "exact_diagonal", "DiagonalResult", "frobenius_norm", "NormResult",
    "spectral_density", "DensityResult", "Estimate", "wasserstein_1",
    # diagnostics
    "analyze", "AnalysisResult",
    # recommendations
    "recommend", "Recommendation", "RecommendationContext",
    # reports
    "write_report", "summary_table", "write_comparison",
]
