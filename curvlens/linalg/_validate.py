"""Input validation shared by the public eigensolvers (messages name argument, want, got, fix)."""

from __future__ import annotations

import numbers

import torch

_FLOAT_DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)


def check_operator(op, name: str = "op") -> None:
    """Check that ``op`` looks like a :class:`~curvlens.operators.CurvatureOperator`."""
    missing = [a for a in ("dim", "dtype", "device", "matmat", "matvec") if not hasattr(op, a)]
    if missing:
        raise TypeError(
            f"{name}: expected a CurvatureOperator (with dim, dtype, device, matvec, matmat), "
            f"got {type(op).__name__} lacking {', '.join(missing)}; wrap a dense matrix with "
            "curvlens.operators.DenseOperator(matrix)"
        )
    if op.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{name}: expected a floating-point operator, got dtype {op.dtype}")


def check_int(value, name: str, *, low: int, high: int | None = None, hint: str = "") -> int:
    """Return ``value`` as int after checking ``low <= value <= high``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an integer, got {type(value).__name__} ({value!r}); pass e.g. {name}={low}")
    value = int(value)
    if value < low or (high is not None and value > high):
        rng = f">= {low}" if high is None else f"between {low} and {high}"
        raise ValueError(f"{name}: expected an integer {rng}, got {value}{'; ' + hint if hint else ''}")
    return value


def check_positive_float(value, name: str, *, below_one: bool = False, hint: str = "") -> float:
    """Return ``value`` as float after checking it is finite and > 0 (and < 1 if asked)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a float, got {type(value).__name__} ({value!r}); pass e.g. {name}=1e-3")
    value = float(value)
    ok = value > 0 and value == value and value != float("inf") and (not below_one or value < 1)
    if not ok:
        want = "a float in (0, 1)" if below_one else "a finite float > 0"
        raise ValueError(f"{name}: expected {want}, got {value!r}{'; ' + hint if hint else ''}")
    return value


def check_callback(callback) -> None:
    if callback is not None and not callable(callback):
        raise TypeError(
            f"callback: expected a callable callback(done, total) or None, got {type(callback).__name__}"
        )


def check_k(k, dim: int) -> int:
    return check_int(
        k, "k", low=1, high=dim,
        hint=f"k must be at least 1 and at most the operator dimension D={dim}",
    )
