"""Input validation shared by the diagnostics (messages name the argument, expectation, value, fix)."""

from __future__ import annotations

import math
from typing import Any


def check_float(value: Any, name: str, *, low: float | None = None, high: float | None = None,
                strict_low: bool = False, strict_high: bool = False, fix: str = "") -> float:
    """Return ``float(value)`` after checking it is a finite real number within the bounds."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not hasattr(value, "__float__"):
        raise TypeError(f"{name}: expected a real number, got {type(value).__name__}{'; ' + fix if fix else ''}")
    v = float(value)
    bad = not math.isfinite(v)
    if low is not None:
        bad = bad or (v <= low if strict_low else v < low)
    if high is not None:
        bad = bad or (v >= high if strict_high else v > high)
    if bad:
        lo = "" if low is None else f"{'>' if strict_low else '>='} {low:g}"
        hi = "" if high is None else f"{'<' if strict_high else '<='} {high:g}"
        rng = " and ".join(s for s in (lo, hi) if s) or "finite"
        raise ValueError(f"{name}: expected a finite number {rng}, got {value!r}{'; ' + fix if fix else ''}")
    return v


def check_int(value: Any, name: str, *, low: int = 1, fix: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name}: expected an int >= {low}, got {value!r}{'; ' + fix if fix else ''}")
    return int(value)


def check_callback(callback: Any) -> None:
    if callback is not None and not callable(callback):
        raise TypeError(f"callback: expected a callable(stage, done, total) or None, got {type(callback).__name__}")
