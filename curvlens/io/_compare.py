"""Exact, NaN-aware equality of curvlens results (used to check HDF5 round trips)."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from curvlens.io._h5codec import _is_result

# ---------------------------------------------------------------- equality
def _diff(a: Any, b: Any, where: str) -> str | None:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
            return f"{where}: {type(a).__name__} vs {type(b).__name__}"
        if a.dtype != b.dtype or a.shape != b.shape:
            return f"{where}: {a.dtype}{tuple(a.shape)} vs {b.dtype}{tuple(b.shape)}"
        a, b = a.detach().cpu().resolve_conj(), b.detach().cpu().resolve_conj()
        if a.dtype == torch.complex32 or "float8" in str(a.dtype):  # few CPU kernels: compare upcast
            up = torch.complex64 if a.is_complex() else torch.float32
            a, b = a.to(up), b.to(up)
        same = torch.equal(a, b) or (bool(torch.all((a == b) | (torch.isnan(a) & torch.isnan(b))))
                                     if a.is_floating_point() or a.is_complex() else False)
        return None if same else f"{where}: tensor values differ"
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        if not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray)) or a.dtype != b.dtype or a.shape != b.shape:
            da, db = getattr(a, "dtype", type(a).__name__), getattr(b, "dtype", type(b).__name__)
            return f"{where}: {da} {np.shape(a)} vs {db} {np.shape(b)}"
        nan_ok = a.dtype.kind in "fc"
        return None if np.array_equal(a, b, equal_nan=nan_ok) else f"{where}: array values differ"
    if type(a) is not type(b) and not (isinstance(a, tuple) and isinstance(b, tuple)):
        return f"{where}: {type(a).__name__} vs {type(b).__name__}"
    if _is_result(a):
        for f in dataclasses.fields(a):
            d = _diff(getattr(a, f.name), getattr(b, f.name), f"{where}.{f.name}")
            if d:
                return d
        return None
    if isinstance(a, (list, tuple)):
        if len(a) != len(b):
            return f"{where}: length {len(a)} vs {len(b)}"
        return next((d for i, (x, y) in enumerate(zip(a, b)) if (d := _diff(x, y, f"{where}[{i}]"))), None)
    if isinstance(a, dict):
        if list(a) != list(b):
            return f"{where}: keys {list(a)} vs {list(b)}"
        return next((d for k in a if (d := _diff(a[k], b[k], f"{where}[{k!r}]"))), None)
    if isinstance(a, (float, np.floating, complex, np.complexfloating)):
        both_nan = a != a and b != b  # NaN (real or complex) is the only value unequal to itself
        return None if a == b or both_nan else f"{where}: {a!r} vs {b!r}"
    return None if a == b else f"{where}: {a!r} vs {b!r}"


def results_equal(a: Any, b: Any, *, explain: bool = False) -> bool | str | None:
    """Exact, NaN-aware equality of two results (recursively; tensors compared on the CPU).

    Tensors and arrays must have the same dtype, shape and values (NaN equals NaN); python
    types must match (tuple vs list, int vs float). With ``explain=True`` returns ``None`` when
    equal, else a one-line description of the first difference (handy in test assertions).
    """
    d = _diff(a, b, "result")
    return d if explain else d is None
