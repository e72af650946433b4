"""A dense symmetric matrix as a :class:`CurvatureOperator` (tests, tiny models, baselines)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from curvlens.operators.base import Block, CurvatureOperator


class DenseOperator(CurvatureOperator):
    """Wrap a dense symmetric matrix.

    Args:
        matrix: a ``(D, D)`` symmetric torch tensor or numpy array.
        is_psd: declare the matrix positive semi-definite. Default: checked from its
            eigenvalues (``min eig >= -1e-12 * max |eig|``).
        blocks: optional per-block slices (for per-layer estimators in tests).
        check_symmetric: raise if ``matrix`` is not symmetric to ``1e-8`` relative.

    Example:
        >>> op = DenseOperator(torch.diag(torch.tensor([3.0, 1.0, -2.0], dtype=torch.float64)))
        >>> op @ torch.ones(3, dtype=torch.float64)
        tensor([ 3.,  1., -2.], dtype=torch.float64)
    """

    def __init__(
        self,
        matrix,
        *,
        is_psd: bool | None = None,
        blocks: Sequence[Block] | None = None,
        check_symmetric: bool = True,
    ):
        if isinstance(matrix, np.ndarray):
            matrix = torch.from_numpy(matrix)
        if not isinstance(matrix, torch.Tensor):
            raise TypeError(f"matrix: expected a torch.Tensor or numpy array, got {type(matrix).__name__}")
        if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
            raise ValueError(f"matrix: expected a square (D, D) matrix, got shape {tuple(matrix.shape)}")
        if not matrix.is_floating_point():
            raise ValueError(f"matrix: expected a floating dtype, got {matrix.dtype}; use matrix.double()")
        if check_symmetric:
            scale = matrix.abs().max().clamp_min(torch.finfo(matrix.dtype).tiny)
            asym = (matrix - matrix.T).abs().max() / scale
            tol = 1e-8 if matrix.dtype == torch.float64 else 1e-5
            if asym > tol:
                raise ValueError(
                    f"matrix: expected a symmetric matrix, got relative asymmetry {float(asym):.2e}; "
                    "symmetrize with (A + A.T) / 2 or pass check_symmetric=False"
                )
        super().__init__(matrix.shape[0], matrix.dtype, matrix.device, blocks=blocks)
        self.matrix = matrix
        if is_psd is None:
            ev = torch.linalg.eigvalsh(matrix.double())
            is_psd = bool(ev.min() >= -1e-12 * ev.abs().max().clamp_min(1e-300))
        self.is_psd = bool(is_psd)

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        return self.matrix @ V

    def to_dense(self, **_: object) -> torch.Tensor:
        return self.matrix.clone()
