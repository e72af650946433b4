"""Number formatting and tolerant access to the parts of an analysis (helpers of the report).

The report must never crash on a part that was not measured: every accessor here returns
``None`` for a missing attribute, a ``None`` part, or a non-numeric value, and the formatters
turn ``None`` into ``"not measured"`` and NaN into ``"nan"``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["NOT_MEASURED", "as_float", "as_array", "part", "fmt", "fmt_pm", "summary_dict"]

NOT_MEASURED = "not measured"


def part(obj: Any, name: str) -> Any:
    """``obj.name`` (or ``obj[name]`` for a Mapping), None when absent."""
    if obj is None:
        return None
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


def as_float(x: Any) -> float | None:
    """A python float from a number / 0-d or 1-element tensor / array, else None (NaN stays NaN)."""
    if x is None or isinstance(x, str):
        return None
    if isinstance(x, bool):
        return float(x)
    try:
        if hasattr(x, "detach"):
            x = x.detach().cpu()
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if a.size != 1:
        return None
    return float(a.reshape(()))


def as_array(x: Any) -> np.ndarray | None:
    """A float64 numpy array (tensors, lists, arrays), None when absent or not numeric."""
    if x is None:
        return None
    try:
        if hasattr(x, "detach"):
            x = x.detach().cpu().double().numpy()
        return np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        return None


def summary_dict(analysis: Any) -> dict[str, Any]:
    """``analysis.summary()``; a Mapping is taken as the summary itself; else ``{}``."""
    if isinstance(analysis, Mapping):
        inner = analysis.get("summary")
        return dict(inner) if isinstance(inner, Mapping) else dict(analysis)
    fn = getattr(analysis, "summary", None)
    if callable(fn):
        out = fn()
        return dict(out) if isinstance(out, Mapping) else {}
    return {}


def fmt(x: Any, digits: int = 4) -> str:
    """Compact text for a value: ``"not measured"`` for None, ``"inf"``, ``"1.234e+05"``, ``"0.5"``."""
    if x is None:
        return NOT_MEASURED
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, str):
        return x
    if isinstance(x, (int, np.integer)):
        return f"{int(x):,}"
    if isinstance(x, (list, tuple)):
        return "[" + ", ".join(fmt(v, digits) for v in x) + "]" if x else "[]"
    f = as_float(x)
    if f is None:
        return str(x)
    if math.isnan(f):
        return "nan"
    if math.isinf(f):
        return "inf" if f > 0 else "-inf"
    if f == 0:
        return "0"
    if 1e-3 <= abs(f) < 1e5:
        return f"{f:.{digits}g}"
    return f"{f:.{max(digits - 1, 1)}e}"


def fmt_pm(x: Any, err: Any, digits: int = 4) -> str:
    """``"12.35 ± 0.041"``: the error with two significant digits and the value to the same place.

    Falls back to :func:`fmt` of the value when the error is None, NaN or not positive.
    """
    v, e = as_float(x), as_float(err)
    if v is None:
        return NOT_MEASURED
    if e is None or not math.isfinite(e) or e <= 0 or not math.isfinite(v):
        return fmt(v, digits)
    if v != 0 and e < 1e-4 * abs(v):  # e.g. a certified eigenvalue: residual far below the value
        return f"{fmt(v, max(digits, 6))} ± {e:.1e}"
    exp_e = math.floor(math.log10(e))
    big = max(abs(v), e)
    if big >= 1e5 or big < 1e-3:
        exp_v = math.floor(math.log10(big))
        decimals = min(max(exp_v - exp_e + 1, 0), 12)
        scale = 10.0**exp_v
        return f"({v / scale:.{decimals}f} ± {e / scale:.{decimals}f})e{exp_v:+03d}"
    decimals = min(max(1 - exp_e, 0), 12)
    return f"{v:.{decimals}f} ± {e:.{decimals}f}"
