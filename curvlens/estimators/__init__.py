"""Stochastic estimators of traces, diagonals and norms of curvature operators.

Which trace estimator: :func:`krylov_trace` (default recommendation; Krylov deflation, lowest
error per product on Hessian spectra, honest error bars), :func:`xtrace` (sketch-based, two
large batches of products), :func:`hutchpp_trace` (cheaper bookkeeping),
:func:`hutchinson_trace` (near-identity matrices, PyHessian-compatible numbers).
Diagonal: :func:`ggn_diagonal` (exact GGN diagonal of linear-layer networks in about ``C``
gradients), :func:`hessian_diagonal` (exact Hessian diagonal of Sequential Linear + elementwise-activation
networks, no products), :func:`exact_diagonal` for small ``D``, else :func:`xdiag` or
:func:`hutchinson_diagonal`. Norm: :func:`frobenius_norm`.
"""

from curvlens.estimators._probes import probe_vectors
from curvlens.estimators.broadening import Estimate
from curvlens.estimators.density import DensityResult, spectral_density
from curvlens.estimators.diagonal import DiagonalResult, exact_diagonal, hutchinson_diagonal, xdiag
from curvlens.estimators.diagonal_hessian import hessian_diagonal
from curvlens.estimators.ggn_diagonal import ggn_diagonal
from curvlens.estimators.hutchpp import hutchpp_trace
from curvlens.estimators.krylov_trace import krylov_trace
from curvlens.estimators.norms import NormResult, frobenius_norm
from curvlens.estimators.trace import TraceResult, hutchinson_trace
from curvlens.estimators.wasserstein import wasserstein_1, wasserstein_1_grid
from curvlens.estimators.xtrace import xtrace

__all__ = [
    "probe_vectors",
    "TraceResult", "hutchinson_trace", "hutchpp_trace", "krylov_trace", "xtrace",
    "DiagonalResult", "exact_diagonal", "ggn_diagonal", "hessian_diagonal", "hutchinson_diagonal", "xdiag",
    "NormResult", "frobenius_norm",
    "DensityResult", "Estimate", "spectral_density", "wasserstein_1", "wasserstein_1_grid",
]
