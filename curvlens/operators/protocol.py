"""What the operator-agnostic algorithms need from an operator: :class:`LinearOperatorLike`.

Lanczos, power iteration, CG, MINRES and the stochastic estimators only call the members
listed here, so any object that has them works, not just a
:class:`~curvlens.operators.CurvatureOperator` (which satisfies the protocol). Algorithms
that need per-layer blocks or the parameter-shaped format take a ``CurvatureOperator``.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class LinearOperatorLike(Protocol):
    """A symmetric ``D x D`` linear operator on flat vectors of length ``D``.

    Attributes:
        dim: ``D``.
        dtype, device: of the vectors the operator accepts and returns.
        num_matvecs: products computed so far (a ``matmat`` of ``k`` columns counts ``k``).
        is_psd: True when the operator is positive semi-definite by construction.

    ``isinstance(obj, LinearOperatorLike)`` checks that the members exist (not their types).

    Example:
        >>> import torch
        >>> from curvlens.operators import DenseOperator
        >>> isinstance(DenseOperator(torch.eye(3, dtype=torch.float64)), LinearOperatorLike)
        True
        >>> isinstance(torch.eye(3), LinearOperatorLike)
        False
    """

    dim: int
    dtype: torch.dtype
    device: torch.device
    is_psd: bool

    @property
    def num_matvecs(self) -> int: ...

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """``A v`` for a flat vector of length ``D``."""
        ...

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        """``A V`` for a ``(D, k)`` block of vectors."""
        ...
