"""Operator algebra: ``A + c I``, ``alpha A``, ``A + B``, the identity and diagonal matrices.

The results are small operators that forward products to their parents' ``matmat`` (so an
operator that is rebuilt when the weights change stays live inside a sum), count products in
their own ``num_matvecs``, keep their parent's dimension, dtype, device, parameter shapes and
blocks, and carry the structure flag: ``A + c I`` is PSD when ``A`` is and ``c >= 0``,
``alpha A`` when ``A`` is and ``alpha >= 0``, ``A + B`` when both are; ``A - B`` is not
declared PSD. Every result is symmetric. ``(A + c I).block(b)`` is ``A.block(b) + c I``.

Scalars are Python / numpy real numbers or one-element tensors (converted to a float; no
gradient flows through them). ``bool`` is refused, because ``op + True`` is almost surely a
mistake, and so are non-finite values.

Example:
    >>> import torch
    >>> from curvlens.operators import DenseOperator
    >>> A = DenseOperator(torch.diag(torch.tensor([1.0, -2.0], dtype=torch.float64)))
    >>> (2 * A + 1).to_dense()
    tensor([[ 3.,  0.],
            [ 0., -3.]], dtype=torch.float64)
    >>> (A + 3).block("all").to_dense().diagonal().tolist()
    [4.0, 1.0]
    >>> P = DenseOperator(torch.eye(2, dtype=torch.float64))  # declared PSD
    >>> (P + 0.1).is_psd, (P - 0.1).is_psd, (A + 3).is_psd  # structural flags, not eigenvalue checks
    (True, False, False)
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch

from curvlens.operators.base import Block, BlockView, CurvatureOperator

__all__ = ["DiagonalOperator", "IdentityOperator", "ScaledOperator", "ShiftedOperator", "SumOperator"]


def as_scalar(c, name: str) -> float:
    """``c`` as a finite Python float, or a one-line TypeError / ValueError."""
    if isinstance(c, torch.Tensor):
        if c.numel() != 1 or c.is_complex():
            raise TypeError(
                f"{name}: expected a real scalar, got a tensor of shape {tuple(c.shape)} and dtype {c.dtype}; "
                "for a diagonal matrix use op + DiagonalOperator(d)"
            )
        c = c.detach().reshape(()).item()
    if isinstance(c, (bool, np.bool_)) or not isinstance(c, numbers.Real):
        raise TypeError(
            f"{name}: expected a real scalar (int, float or one-element tensor), got {type(c).__name__} ({c!r}); "
            "pass a number such as 0.1"
        )
    c = float(c)
    if not math.isfinite(c):
        raise ValueError(f"{name}: expected a finite scalar, got {c!r}; pass a finite number such as 0.1")
    return c


def _trivial(blocks: tuple[Block, ...], dim: int) -> bool:
    return len(blocks) == 1 and blocks[0].start == 0 and blocks[0].stop == dim


def _restrict(op: CurvatureOperator, blk: Block) -> CurvatureOperator:
    """``op[b, b]`` for a block of the composite: the operator's own block view when it has the same
    slice, a sliced identity / diagonal, or a zero-padded :class:`BlockView`."""
    if isinstance(op, IdentityOperator):
        return IdentityOperator(blk.size, dtype=op.dtype, device=op.device)
    if isinstance(op, DiagonalOperator):
        return DiagonalOperator(op.diag[blk.slice])
    for own in op.blocks:
        if (own.name, own.start, own.stop) == (blk.name, blk.start, blk.stop):
            return op.block(blk.name)
    return BlockView(op, blk)


class _Composite(CurvatureOperator):
    """An operator built from other operators; takes the layout of ``layout``."""

    def __init__(self, layout: CurvatureOperator):
        super().__init__(layout.dim, layout.dtype, layout.device, param_shapes=layout.param_shapes,
                         blocks=layout.blocks)


class IdentityOperator(CurvatureOperator):
    """The ``D x D`` identity.

    Args:
        dim: ``D``.
        dtype, device: of the vectors it accepts (keyword-only; default float64 on the CPU).

    Example:
        >>> I = IdentityOperator(3, dtype=torch.float64)
        >>> (I * 2).matvec(torch.ones(3, dtype=torch.float64)).tolist()
        [2.0, 2.0, 2.0]
    """

    is_psd = True

    def __init__(self, dim: int, *, dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu"):
        if isinstance(dim, bool) or not isinstance(dim, numbers.Integral) or dim < 1:
            raise ValueError(f"dim: expected a positive integer, got {dim!r}; pass the operator dimension D")
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise TypeError(f"dtype: expected a floating torch.dtype, got {dtype!r}; pass dtype=torch.float64")
        super().__init__(int(dim), dtype, device)

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        return V.clone()

    def to_dense(self, **_: object) -> torch.Tensor:
        return torch.eye(self.dim, dtype=self.dtype, device=self.device)


class DiagonalOperator(CurvatureOperator):
    """``diag(d)`` for a flat floating tensor ``d`` (its dtype and device are the operator's).

    Args:
        diag: the diagonal, a finite 1-D floating tensor of length ``D``.

    Example:
        >>> Dg = DiagonalOperator(torch.tensor([1.0, 2.0], dtype=torch.float64))
        >>> (Dg + 1).matvec(torch.ones(2, dtype=torch.float64)).tolist()
        [2.0, 3.0]
    """

    def __init__(self, diag: torch.Tensor):
        if not isinstance(diag, torch.Tensor) or diag.ndim != 1 or diag.numel() == 0:
            got = f"shape {tuple(diag.shape)}" if isinstance(diag, torch.Tensor) else type(diag).__name__
            raise ValueError(f"diag: expected a non-empty flat (D,) tensor, got {got}; flatten it with d.reshape(-1)")
        if not diag.is_floating_point():
            raise ValueError(f"diag: expected a floating dtype, got {diag.dtype}; convert with d.double()")
        if not bool(torch.isfinite(diag).all()):
            raise ValueError("diag: expected finite entries, got NaN or inf; check how the diagonal was computed")
        super().__init__(diag.numel(), diag.dtype, diag.device)
        self.diag = diag.detach()
        self.is_psd = bool((self.diag >= 0).all())

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        return self.diag[:, None] * V

    def to_dense(self, **_: object) -> torch.Tensor:
        return torch.diag(self.diag)


class ShiftedOperator(_Composite):
    """``A + c I`` (damping, Tikhonov regularization, a spectral shift)."""

    def __init__(self, parent: CurvatureOperator, c):
        super().__init__(parent)
        self.parent, self.c = parent, as_scalar(c, "c")
        self.is_psd = bool(parent.is_psd and self.c >= 0)

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        return self.parent.matmat(V) + self.c * V

    def block(self, name: str) -> CurvatureOperator:
        return ShiftedOperator(_restrict(self.parent, self.get_block(name)), self.c)

    def __repr__(self) -> str:
        return f"({self.parent!r} + {self.c!r} I)"


class ScaledOperator(_Composite):
    """``alpha A``."""

    def __init__(self, parent: CurvatureOperator, alpha):
        super().__init__(parent)
        self.parent, self.alpha = parent, as_scalar(alpha, "alpha")
        self.is_psd = bool(parent.is_psd and self.alpha >= 0)

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        return self.alpha * self.parent.matmat(V)

    def block(self, name: str) -> CurvatureOperator:
        return ScaledOperator(_restrict(self.parent, self.get_block(name)), self.alpha)

    def __repr__(self) -> str:
        return f"({self.alpha!r} * {self.parent!r})"


class SumOperator(_Composite):
    """``A + B`` (``sign=1``) or ``A - B`` (``sign=-1``) of two operators of the same dim, dtype and device.

    The result takes the blocks and parameter shapes of whichever operand has a layout (a
    model operator rather than an identity, diagonal or dense matrix); operands whose block
    layouts differ are refused.
    """

    def __init__(self, left: CurvatureOperator, right: CurvatureOperator, *, sign: int = 1):
        what = "op1 + op2" if sign > 0 else "op1 - op2"
        for attr in ("dim", "dtype", "device"):
            a, b = getattr(left, attr), getattr(right, attr)
            if a != b:
                raise ValueError(f"{what}: the operators' {attr}s differ ({a} vs {b}); "
                                 + ("both must act on the same parameters" if attr == "dim"
                                    else f"convert one of them so both have the same {attr}"))
        l_triv, r_triv = _trivial(left.blocks, left.dim), _trivial(right.blocks, right.dim)
        if not (l_triv or r_triv) and left.blocks != right.blocks:
            raise ValueError(f"{what}: the operators' block layouts differ ({left.block_names()} vs "
                             f"{right.block_names()}); build both from the same model and parameters")
        flat = (torch.Size([left.dim]),)
        if flat not in (left.param_shapes, right.param_shapes) and left.param_shapes != right.param_shapes:
            raise ValueError(f"{what}: the operators' parameter shapes differ; build both from the same model "
                             "and parameters")
        blocks = right.blocks if l_triv else left.blocks
        shapes = right.param_shapes if left.param_shapes == flat else left.param_shapes
        CurvatureOperator.__init__(self, left.dim, left.dtype, left.device, param_shapes=shapes, blocks=blocks)
        self.left, self.right, self.sign = left, right, 1 if sign > 0 else -1
        self.is_psd = bool(left.is_psd and right.is_psd and self.sign > 0)

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        out = self.left.matmat(V)
        return out + self.right.matmat(V) if self.sign > 0 else out - self.right.matmat(V)

    def block(self, name: str) -> CurvatureOperator:
        blk = self.get_block(name)
        return SumOperator(_restrict(self.left, blk), _restrict(self.right, blk), sign=self.sign)

    def __repr__(self) -> str:
        return f"({self.left!r} {'+' if self.sign > 0 else '-'} {self.right!r})"


# ---------------------------------------------------------------- the dunder methods of CurvatureOperator
def add(op: CurvatureOperator, other, *, sign: int = 1) -> CurvatureOperator:
    """``op + other`` (``sign=1``) or ``op - other`` (``sign=-1``) for a scalar or an operator."""
    if isinstance(other, CurvatureOperator):
        return SumOperator(op, other, sign=sign)
    if isinstance(other, torch.Tensor) and other.numel() != 1:
        raise TypeError(f"op {'+' if sign > 0 else '-'} x: expected a real scalar or a CurvatureOperator, got a "
                        f"tensor of shape {tuple(other.shape)}; for a diagonal matrix use op + DiagonalOperator(d)")
    if not isinstance(other, (numbers.Real, torch.Tensor)) or isinstance(other, (bool, np.bool_)):
        raise TypeError(f"op {'+' if sign > 0 else '-'} x: expected a real scalar or a CurvatureOperator, got "
                        f"{type(other).__name__}; pass a number (op + 0.1 is op + 0.1 I) or an operator")
    return ShiftedOperator(op, sign * as_scalar(other, "c"))


def scale(op: CurvatureOperator, alpha, *, divide: bool = False) -> CurvatureOperator:
    """``alpha * op``, or ``op / alpha`` with ``divide=True``."""
    if isinstance(alpha, CurvatureOperator):
        raise TypeError("op1 * op2: products of two operators are not supported (they are not symmetric in "
                        "general); apply them one after the other, op1 @ (op2 @ v)")
    a = as_scalar(alpha, "alpha")
    if divide:
        if a == 0.0:
            raise ValueError("alpha: cannot divide an operator by 0; pass a non-zero scalar")
        a = 1.0 / a
    return ScaledOperator(op, a)
