"""What the Krylov solvers (:func:`~curvlens.linalg.cg`, :func:`~curvlens.linalg.minres`) share:
operator and vector validation, tolerances, float64 dot products and the preconditioner."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable

import torch


Preconditioner = Callable[[torch.Tensor], torch.Tensor]


class _Matrix:
    """A dense symmetric matrix with the operator members the solvers use (and a product counter)."""

    is_psd = False

    def __init__(self, A: torch.Tensor):
        self.A, self.dim, self.dtype, self.device = A, A.shape[0], A.dtype, A.device
        self.num_matvecs = 0

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        self.num_matvecs += 1
        return self.A @ v

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        self.num_matvecs += V.shape[1]
        return self.A @ V


def as_operator(op, name: str = "op"):
    """``op`` itself when it has ``dim``, ``dtype``, ``device`` and ``matvec``; a dense symmetric tensor wrapped."""
    if isinstance(op, torch.Tensor):
        if op.ndim != 2 or op.shape[0] != op.shape[1] or op.shape[0] == 0 or not op.is_floating_point():
            raise ValueError(f"{name}: expected a square floating (D, D) matrix, got shape {tuple(op.shape)} and "
                             f"dtype {op.dtype}; pass a symmetric float64 matrix or a CurvatureOperator")
        asym = float((op - op.T).abs().max()) / max(float(op.abs().max()), torch.finfo(op.dtype).tiny)
        if asym > 100 * torch.finfo(op.dtype).eps:
            raise ValueError(f"{name}: expected a symmetric matrix, got relative asymmetry {asym:.2e}; "
                             "symmetrize it with (A + A.T) / 2")
        return _Matrix(op)
    missing = [a for a in ("dim", "dtype", "device", "matvec") if not hasattr(op, a)]
    if missing:
        raise TypeError(f"{name}: expected a CurvatureOperator or a (D, D) tensor, got {type(op).__name__} lacking "
                        f"{', '.join(missing)}; wrap a matrix with curvlens.operators.DenseOperator(matrix)")
    if not (isinstance(op.dtype, torch.dtype) and op.dtype.is_floating_point):
        raise TypeError(f"{name}: expected a floating-point operator, got dtype {op.dtype}")
    return op


def check_vector(v, name: str, op) -> torch.Tensor:
    """A finite flat tensor of length ``op.dim`` in the operator's dtype and device, or a one-line error."""
    if not isinstance(v, torch.Tensor):
        raise TypeError(f"{name}: expected a flat torch.Tensor of length {op.dim}, got {type(v).__name__}; "
                        f"convert with torch.as_tensor(..., dtype={op.dtype}) (parameter-shaped lists: op.flatten)")
    if v.shape != (op.dim,):
        raise ValueError(f"{name}: expected shape ({op.dim},) (the operator dimension), got {tuple(v.shape)}; "
                         "flatten it with v.reshape(-1)")
    if v.dtype != op.dtype or v.device != torch.device(op.device):
        raise ValueError(f"{name}: expected dtype {op.dtype} on {op.device} (the operator's), got {v.dtype} on "
                         f"{v.device}; convert with v.to(dtype={op.dtype}, device='{op.device}')")
    if not bool(torch.isfinite(v).all()):
        raise ValueError(f"{name}: expected finite values, got NaN or inf; check how {name} was computed")
    return v


def check_tolerance(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a float >= 0, got {type(value).__name__}; pass e.g. {name}=1e-6")
    value = float(value)
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name}: expected a finite float >= 0, got {value!r}; pass e.g. {name}=1e-6")
    return value


def default_maxiter(dim: int) -> int:
    """``min(10 D, 10_000)``: ``D`` iterations suffice in exact arithmetic; rounding needs more."""
    return min(10 * dim, 10_000)


def dot(a: torch.Tensor, b: torch.Tensor) -> float:
    """``a^T b`` accumulated in float64, as a Python float."""
    if a.dtype == torch.float64:
        return float(torch.dot(a, b))
    return float(torch.sum(a * b, dtype=torch.float64))


def preconditioner(M, M_diag, op, name: str = "M") -> Preconditioner:
    """The map ``r -> z`` of ``M`` (approximates ``A^{-1}``) or of ``M_diag`` (``diag(d) ~ A``: ``z = r / d``)."""
    D = op.dim
    if M is not None and M_diag is not None:
        raise ValueError(f"{name}, M_diag: pass at most one preconditioner, got both; M approximates A^-1, "
                         "M_diag=d is a diagonal approximating A")
    if M_diag is not None:
        d = check_vector(M_diag, "M_diag", op)
        if not bool((d > 0).all()):
            raise ValueError(f"M_diag: expected a positive diagonal d (diag(d) ~ A), got min {float(d.min()):.3e}; "
                             "add damping, e.g. M_diag=d.clamp_min(0) + lam")
        return lambda r: r / d
    if M is None:
        return lambda r: r
    if isinstance(M, torch.Tensor):
        raise TypeError(f"{name}: expected an operator or callable approximating A^-1, got a tensor; for a diagonal "
                        "pass M_diag=d (diag(d) ~ A), for a dense matrix wrap it in DenseOperator(matrix)")
    apply = getattr(M, "matvec", None)
    if apply is None:
        if not callable(M):
            raise TypeError(f"{name}: expected an operator with matvec or a callable r -> z, got {type(M).__name__}")
        apply = M
    if getattr(M, "dim", D) != D:
        raise ValueError(f"{name}: expected a preconditioner of dimension {D}, got dim={M.dim}; build it for the "
                         "same parameters as the operator")

    def apply_checked(r: torch.Tensor) -> torch.Tensor:
        z = apply(r)
        if not isinstance(z, torch.Tensor) or z.shape != r.shape or z.dtype != r.dtype or z.device != r.device:
            got = f"{z.dtype} {tuple(z.shape)} on {z.device}" if isinstance(z, torch.Tensor) else type(z).__name__
            raise ValueError(f"{name}: returned {got}, expected a {r.dtype} tensor of shape {tuple(r.shape)} on "
                             f"{r.device}; make it return a vector like its input")
        return z

    return apply_checked
