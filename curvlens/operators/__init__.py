"""Matrix-free curvature operators: Hessian, Gauss-Newton, Fisher, and dense test matrices."""

from curvlens.operators.algebra import DiagonalOperator, IdentityOperator, ScaledOperator, ShiftedOperator, SumOperator
from curvlens.operators.base import Block, BlockView, CurvatureOperator
from curvlens.operators.dense import DenseOperator
from curvlens.operators.fisher import EmpiricalFisherOperator, MCFisherOperator
from curvlens.operators.ggn import GGNOperator
from curvlens.operators.ggn_jacobian import JacobianGGNOperator
from curvlens.operators.hessian import HessianOperator
from curvlens.operators.model import ModelOperator
from curvlens.operators.protocol import LinearOperatorLike

__all__ = [
    "Block", "BlockView", "CurvatureOperator", "DenseOperator", "ModelOperator",
    "HessianOperator", "GGNOperator", "JacobianGGNOperator", "EmpiricalFisherOperator", "MCFisherOperator",
    "IdentityOperator", "DiagonalOperator", "ShiftedOperator", "ScaledOperator", "SumOperator", "LinearOperatorLike",
]
