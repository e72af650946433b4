"""K-FAC: Kronecker-factored approximate curvature as a preconditioner and as an optimizer."""

from curvlens.optim.kfac.optimizer import KFAC, KFACStep
from curvlens.optim.kfac.preconditioner import KFACPreconditioner, PreconditionInfo

__all__ = ["KFAC", "KFACStep", "KFACPreconditioner", "PreconditionInfo"]
