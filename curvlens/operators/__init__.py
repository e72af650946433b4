"""Matrix-free curvature operators: Hessian, Gauss-Newton, Fisher, and dense test matrices."""

from curvlens.operators.base import Block, BlockView, CurvatureOperator
from curvlens.operators.dense import DenseOperator

__all__ = ["Block", "BlockView", "CurvatureOperator", "DenseOperator"]
