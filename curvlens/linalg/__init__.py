"""Operator-agnostic linear algebra: Lanczos, certified restarted eigensolvers, power iteration,
and the linear solvers CG (positive definite) and MINRES (symmetric indefinite).

Every eigensolver returns pairs certified by true residuals ``||A v - l v||`` (see
:class:`EigenResult`); non-convergence is reported per pair, never raised.
"""

from curvlens.linalg._certify import ConvergenceWarning, EigenResult
from curvlens.linalg.cg import CGResult, cg
from curvlens.linalg.eigen import bottom_eigenpairs, top_eigenpairs
from curvlens.linalg.extreme import ExtremeEigenvalues, extreme_eigenvalues
from curvlens.linalg.lanczos import LanczosResult, lanczos
from curvlens.linalg.minres import MinresResult, minres
from curvlens.linalg.power import power_iteration

__all__ = [
    "CGResult",
    "ConvergenceWarning",
    "EigenResult",
    "ExtremeEigenvalues",
    "LanczosResult",
    "MinresResult",
    "bottom_eigenpairs",
    "cg",
    "extreme_eigenvalues",
    "lanczos",
    "minres",
    "power_iteration",
    "top_eigenpairs",
]
