"""Operator-agnostic linear algebra: Lanczos, certified restarted eigensolvers, power iteration.

Every eigensolver returns pairs certified by true residuals ``||A v - l v||`` (see
:class:`EigenResult`); non-convergence is reported per pair, never raised.
"""

from curvlens.linalg._certify import ConvergenceWarning, EigenResult
from curvlens.linalg.eigen import bottom_eigenpairs, top_eigenpairs
from curvlens.linalg.extreme import ExtremeEigenvalues, extreme_eigenvalues
from curvlens.linalg.lanczos import LanczosResult, lanczos
from curvlens.linalg.power import power_iteration

__all__ = [
    "ConvergenceWarning",
    "EigenResult",
    "ExtremeEigenvalues",
    "LanczosResult",
    "bottom_eigenpairs",
    "extreme_eigenvalues",
    "lanczos",
    "power_iteration",
    "top_eigenpairs",
]
