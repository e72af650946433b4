"""Second-order optimizers that act on the measured curvature.

All are ``torch.optim.Optimizer`` subclasses sharing one contract, ``loss = opt.step(batch)``
with a frozen ``opt.last_step`` record, and are built by name (``build_optimizer``) for the
recommender:

- :class:`NewtonCG` (``"newton_cg"``): Hessian-free, preconditioned CG on the damped GGN,
  Hessian or Fisher (Martens 2010).
- :class:`KFAC` (``"kfac"``) and :class:`KFACPreconditioner` for any optimizer (Martens &
  Grosse 2015; EKFAC with ``ekfac=True``).
- :class:`SaddleFreeNewton` (``"saddle_free_newton"``): ``(|Λ| + damping)^-1`` along positive
  curvature and trust-region escape steps along negative curvature in a few Krylov directions
  of the Hessian (Dauphin et al. 2014).
"""

from curvlens.optim._base import OPTIMIZERS, CurvatureOptimizer, StepRecord, build_optimizer, register_optimizer
from curvlens.optim.kfac import KFAC, KFACPreconditioner, KFACStep, PreconditionInfo
from curvlens.optim.newton_cg import NewtonCG, NewtonCGStep
from curvlens.optim.saddle_free import SaddleFreeNewton, SaddleFreeStep

__all__ = [
    "CurvatureOptimizer", "StepRecord", "OPTIMIZERS", "build_optimizer", "register_optimizer",
    "NewtonCG", "NewtonCGStep",
    "KFAC", "KFACPreconditioner", "KFACStep", "PreconditionInfo",
    "SaddleFreeNewton", "SaddleFreeStep",
]
