"""The :class:`CurvatureOperator` contract: a symmetric linear operator on flat vectors.

Every algorithm in curvlens talks to curvature only through this class, so the same Lanczos,
trace or density code runs on a Hessian of a network, a Gauss-Newton matrix, a Fisher or a
dense test matrix.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Sequence

import numpy as np
import torch

from curvlens.problem.params import Block, flatten_like, unflatten_like

__all__ = ["Block", "BlockView", "CurvatureOperator"]


class CurvatureOperator(ABC):
    """Symmetric ``D x D`` linear operator on flat vectors of length ``D``.

    Subclasses implement :meth:`_matmat` on a ``(D, k)`` tensor. The public methods validate
    their input, count products in :attr:`num_matvecs` and convert formats.

    Attributes:
        is_psd: True when the operator is positive semi-definite by construction
            (Gauss-Newton, Fisher); False for a Hessian.
        dim: ``D``, the number of (selected) parameters.
        dtype, device: of the vectors the operator accepts and returns.
        blocks: per-layer :class:`Block` slices of the flat vector.
        param_shapes: shapes of the parameters, for the parameter-shaped (list) format.
    """

    is_psd: bool = False

    def __init__(
        self,
        dim: int,
        dtype: torch.dtype,
        device: torch.device | str,
        *,
        param_shapes: Sequence[torch.Size] | None = None,
        blocks: Sequence[Block] | None = None,
    ):
        self.dim = int(dim)
        self.dtype = dtype
        self.device = torch.device(device)
        self.param_shapes = tuple(torch.Size(s) for s in (param_shapes or [(self.dim,)]))
        if sum(int(np.prod(s)) for s in self.param_shapes) != self.dim:
            raise ValueError("param_shapes: sizes must add up to dim")
        self.blocks = tuple(blocks or [Block("all", 0, self.dim)])
        self._num_matvecs = 0

    # ------------------------------------------------------------------ basic properties
    @property
    def shape(self) -> tuple[int, int]:
        return (self.dim, self.dim)

    @property
    def num_matvecs(self) -> int:
        """Number of operator-vector products computed so far (a matmat of k counts k)."""
        return self._num_matvecs

    def reset_counter(self) -> None:
        self._num_matvecs = 0

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dim={self.dim}, dtype={self.dtype}, device={self.device}, is_psd={self.is_psd})"

    # ------------------------------------------------------------------ products
    @abstractmethod
    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        """Return ``A @ V`` for a validated ``(D, k)`` tensor in the operator's dtype/device."""

    def _check(self, V: torch.Tensor, name: str, ndim: int) -> None:
        if not isinstance(V, torch.Tensor):
            raise TypeError(
                f"{name}: expected a torch.Tensor of shape {(self.dim,) if ndim == 1 else (self.dim, 'k')}, "
                f"got {type(V).__name__}; convert with torch.as_tensor(..., dtype={self.dtype})"
            )
        if V.ndim != ndim or V.shape[0] != self.dim:
            want = f"({self.dim},)" if ndim == 1 else f"({self.dim}, k)"
            raise ValueError(
                f"{name}: expected shape {want} (D={self.dim} parameters), got {tuple(V.shape)}; "
                "pass a flat vector of length D or use `op @ [tensors shaped like the parameters]`"
            )
        if V.dtype != self.dtype:
            raise ValueError(
                f"{name}: expected dtype {self.dtype} (the operator's dtype), got {V.dtype}; "
                f"convert with v.to({self.dtype})"
            )
        if V.device != self.device:
            raise ValueError(
                f"{name}: expected device {self.device}, got {V.device}; move it with v.to('{self.device}')"
            )

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """Return ``A v`` for a flat vector ``v`` of length ``D``."""
        self._check(v, "v", 1)
        out = self._matmat(v.reshape(self.dim, 1))
        self._num_matvecs += 1
        return out.reshape(self.dim)

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        """Return ``A V`` for a ``(D, k)`` block of vectors (one pass where that is faster)."""
        self._check(V, "V", 2)
        if V.shape[1] == 0:
            return V.clone()
        out = self._matmat(V)
        self._num_matvecs += int(V.shape[1])
        return out

    def __matmul__(self, x):
        if isinstance(x, torch.Tensor):
            if x.ndim == 1:
                return self.matvec(x)
            if x.ndim == 2:
                return self.matmat(x)
            raise ValueError(f"op @ x: expected a 1-D or 2-D tensor, got shape {tuple(x.shape)}")
        if isinstance(x, (list, tuple)):
            return self.unflatten(self.matvec(self.flatten(x)))
        raise TypeError(
            f"op @ x: expected a flat tensor, a (D, k) tensor or a list of parameter-shaped tensors, "
            f"got {type(x).__name__}"
        )

    # ------------------------------------------------------------------ algebra (curvlens.operators.algebra)
    __array_ufunc__ = None  # numpy scalars defer to the methods below: np.float64(2) * op is 2 * op

    def shifted(self, c: float) -> "CurvatureOperator":
        """``A + c I`` as an operator (PSD when ``A`` is and ``c >= 0``); the same as ``op + c``."""
        from curvlens.operators.algebra import ShiftedOperator

        return ShiftedOperator(self, c)

    def __add__(self, other) -> "CurvatureOperator":
        """``op + c`` is ``A + c I``; ``op1 + op2`` is the sum (see :mod:`curvlens.operators.algebra`)."""
        from curvlens.operators.algebra import add

        return add(self, other)

    __radd__ = __add__

    def __sub__(self, other) -> "CurvatureOperator":
        from curvlens.operators.algebra import add

        return add(self, other, sign=-1)

    def __rsub__(self, other) -> "CurvatureOperator":
        from curvlens.operators.algebra import add

        return add(-self, other)

    def __mul__(self, alpha) -> "CurvatureOperator":
        from curvlens.operators.algebra import scale

        return scale(self, alpha)

    __rmul__ = __mul__

    def __truediv__(self, alpha) -> "CurvatureOperator":
        from curvlens.operators.algebra import scale

        return scale(self, alpha, divide=True)

    def __neg__(self) -> "CurvatureOperator":
        from curvlens.operators.algebra import ScaledOperator

        return ScaledOperator(self, -1.0)

    # ------------------------------------------------------------------ formats
    def flatten(self, tensors: Sequence[torch.Tensor]) -> torch.Tensor:
        """Concatenate parameter-shaped tensors into one flat vector (validated)."""
        return flatten_like(tensors, self.param_shapes, "x")

    def unflatten(self, v: torch.Tensor) -> list[torch.Tensor]:
        """Split a flat vector into tensors shaped like the parameters."""
        return unflatten_like(v, self.param_shapes)

    def to_dense(self, *, max_dim: int = 20_000, chunk: int = 64) -> torch.Tensor:
        """Form the dense ``D x D`` matrix by ``D`` products (small models only)."""
        if self.dim > max_dim:
            raise ValueError(
                f"to_dense: D={self.dim} exceeds max_dim={max_dim}; a dense matrix would need "
                f"{self.dim ** 2 * 8 / 2**30:.1f} GiB. Use matrix-free algorithms, or pass max_dim= explicitly"
            )
        eye = torch.eye(self.dim, dtype=self.dtype, device=self.device)
        cols = [self.matmat(eye[:, i : i + chunk]) for i in range(0, self.dim, chunk)]
        return torch.cat(cols, dim=1)

    def to_scipy(self):
        """Return a ``scipy.sparse.linalg.LinearOperator`` view (numpy in, numpy out)."""
        from scipy.sparse.linalg import LinearOperator

        np_dtype = torch.empty((), dtype=self.dtype).numpy().dtype

        def mv(x):
            t = torch.as_tensor(np.asarray(x, dtype=np_dtype).reshape(-1), device=self.device)
            return self.matvec(t).cpu().numpy()

        def mm(X):
            t = torch.as_tensor(np.asarray(X, dtype=np_dtype), device=self.device)
            return self.matmat(t).cpu().numpy()

        return LinearOperator(self.shape, matvec=mv, rmatvec=mv, matmat=mm, dtype=np_dtype)

    # ------------------------------------------------------------------ blocks
    def block_names(self) -> list[str]:
        return [b.name for b in self.blocks]

    def get_block(self, name: str) -> Block:
        for b in self.blocks:
            if b.name == name:
                return b
        raise KeyError(f"block: no block named {name!r}; available: {self.block_names()}")

    def block(self, name: str) -> "CurvatureOperator":
        """The operator restricted to one block: ``A[b, b]`` as an operator on that block."""
        return BlockView(self, self.get_block(name))


class BlockView(CurvatureOperator):
    """Diagonal block ``A[b, b]`` of a parent operator, computed by zero-padded products.

    Model operators override :meth:`CurvatureOperator.block` with a cheaper view that
    differentiates only the block's parameters.
    """

    def __init__(self, parent: CurvatureOperator, block: Block):
        super().__init__(block.size, parent.dtype, parent.device)
        self.parent, self.blk = parent, block
        self.is_psd = parent.is_psd

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        full = torch.zeros(self.parent.dim, V.shape[1], dtype=V.dtype, device=V.device)
        full[self.blk.slice] = V
        return self.parent.matmat(full)[self.blk.slice]
