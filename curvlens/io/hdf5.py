"""Results on disk: every registered result round-trips through HDF5, written atomically.

File layout (read it with plain ``h5py``; no curvlens needed)::

    run.h5
    ├── attrs: curvlens-format (int, 1), curvlens-version, created (UTC ISO 8601),
    │          torch-version, numpy-version, python-version, h5py-version,
    │          seed, matvecs, wall_time, converged        (from result.info, when present)
    │          num_params, num_samples                     (when the result has them)
    │          + the user's ``attrs=``
    └── result/                      one group per result
        ├── attrs: curvlens-kind (e.g. "lanczos"), curvlens-schema (int),
        │          curvlens-fields (JSON list of [field, type tag], in field order),
        │          every scalar field: int / float / bool / str; None is an empty attribute,
        │          tuples / lists of plain ints, floats, bools or strs as 1-d arrays
        │          (lists longer than 2048 and strings longer than 32768 become datasets)
        ├── <tensor field>  dataset; attrs curvlens-type="tensor", torch-dtype, device
        ├── <array field>   dataset; attrs curvlens-type="ndarray", numpy-dtype
        │                   (non-empty arrays are chunked with a Fletcher-32 checksum)
        ├── info/           nested result: a group with its own curvlens-kind / -schema
        ├── <list field>/   other lists / tuples: a group with children "0", "1", ...
        └── <dict field>/   dicts: a group with one child per key ("/" escaped as %2F,
                            "%" as %25; order and types in its curvlens-fields)

Example with plain h5py::

    import h5py
    with h5py.File("run.h5", "r") as f:
        g = f["result"]
        print(g.attrs["curvlens-kind"], f.attrs["curvlens-version"])
        alphas = g["alphas"][()]            # numpy array
        seed = g["info"].attrs["seed"]

Tensors load back on the CPU with their torch dtype (bfloat16 / float8 are stored as float32,
complex32 as complex64, and converted back). A kind this curvlens does not know, or a schema
newer than the registered one, raises :class:`~curvlens.errors.SchemaError` telling you to
upgrade; a missing file raises ``FileNotFoundError``; a truncated, corrupt or non-HDF5 file
raises ``SchemaError`` naming the file.

Schema evolution: bump ``schema`` in ``register_result`` when a result's fields change; an
older file then loads through the class's optional ``__curvlens_upgrade__(schema, values)``
classmethod (a dict of stored field values -> the new fields), else gives a ``SchemaError``
naming both schemas. Integers beyond int64 (e.g. 64-bit OS seeds) are stored as uint64, or
as decimal text beyond that; their type tag is still ``int``.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from curvlens.errors import SchemaError
from curvlens.io._compare import results_equal
from curvlens.io._h5codec import _h5_int, _h5py, _homogeneous, _is_result, _read_result, _write_result
from curvlens.io.atomic import atomic_path, write_json_atomic

__all__ = ["save_result", "load_result", "save_summary", "summary_of", "run_metadata", "results_equal",
           "FORMAT_VERSION"]

FORMAT_VERSION = 1
RESULT_GROUP = "result"


def run_metadata() -> dict[str, str]:
    """Versions of curvlens, torch, numpy, h5py and python (no host name, no user name)."""
    import platform

    from curvlens import __version__

    meta = {"curvlens": str(__version__), "torch": str(torch.__version__), "numpy": str(np.__version__),
            "python": platform.python_version()}
    try:
        import h5py

        meta["h5py"] = str(h5py.__version__)
    except ImportError:  # pragma: no cover - h5py is a dependency
        pass
    return meta




def _headline_attrs(result: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    info = getattr(result, "info", None)
    for name in ("seed", "matvecs", "wall_time", "converged"):
        v = getattr(info, name, None)
        if type(v) in (int, float, bool):
            out[name] = _h5_int(v) if type(v) is int else v
    summary = result.summary() if callable(getattr(result, "summary", None)) else {}
    for name in ("num_params", "num_samples"):
        v = getattr(result, name, summary.get(name))
        if isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)):
            out[name] = int(v)
    return out


def save_result(result: Any, path: str | os.PathLike, *, attrs: dict[str, Any] | None = None,
                compression: str | None = None, checksum: bool = True) -> Path:
    """Write a registered result to an HDF5 file, atomically (see the module docstring for the layout).

    The file is written to a temporary file in the same directory, fsynced and renamed onto
    ``path``: if anything fails midway, a previous file at ``path`` is left intact.

    Args:
        result: an instance of a class registered with :func:`curvlens.results.register_result`.
        path: destination file (conventionally ``*.h5``); its directory must exist.
        attrs: extra top-level file attributes (str keys; numbers, str, bool or lists of them),
            e.g. ``{"model": "resnet18.pt"}``. Names starting with ``curvlens-`` are reserved.
        compression: h5py compression for datasets (e.g. ``"gzip"``), default none.
        checksum: store a Fletcher-32 checksum with every non-empty array dataset, so that
            damaged data is reported by :func:`load_result` instead of read silently.

    Returns:
        The destination path.

    Example:
        >>> import os, tempfile, torch
        >>> from curvlens.linalg import lanczos
        >>> from curvlens.operators import DenseOperator
        >>> op = DenseOperator(torch.diag(torch.arange(1.0, 6.0, dtype=torch.float64)))
        >>> res = lanczos(op, 5, generator=torch.Generator().manual_seed(0))
        >>> path = save_result(res, os.path.join(tempfile.mkdtemp(), "run.h5"))
        >>> results_equal(load_result(path), res)
        True
    """
    if not _is_result(result):
        raise TypeError(f"result: expected a registered curvlens result dataclass, got {type(result).__name__}")
    if attrs is not None and not isinstance(attrs, dict):
        raise TypeError(f"attrs: expected a dict of str -> number/str, got {type(attrs).__name__}")
    for k, v in (attrs or {}).items():
        if not isinstance(k, str) or k.startswith("curvlens-"):
            raise ValueError(f"attrs: keys must be str not starting with 'curvlens-', got {k!r}; rename the key")
        ok = isinstance(v, (bool, int, float, str, np.generic)) or (
            isinstance(v, (list, tuple)) and _homogeneous(v) is not None)
        if not ok:
            raise TypeError(f"attrs[{k!r}]: expected a number, str, bool or a list of one of those, got "
                            f"{type(v).__name__}; convert it with str()")
    h5py = _h5py()
    dest = Path(path)
    opts: dict[str, Any] = {"fletcher32": bool(checksum)} if checksum else {}
    if compression is not None:
        opts["compression"] = compression
    with atomic_path(dest) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["curvlens-format"] = FORMAT_VERSION
            meta = run_metadata()
            f.attrs["curvlens-version"] = meta.pop("curvlens")
            f.attrs["created"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
            for k, v in meta.items():
                f.attrs[f"{k}-version"] = v
            for k, v in {**_headline_attrs(result), **(attrs or {})}.items():
                is_strs = isinstance(v, (list, tuple)) and _homogeneous(v) == "str"
                f.attrs[k] = np.asarray(list(v), dtype=h5py.string_dtype()) if is_strs else (
                    _h5_int(v) if type(v) is int else v)
            _write_result(f.create_group(RESULT_GROUP), result, "result", opts)
    return dest

def load_result(path: str | os.PathLike) -> Any:
    """Read a result written by :func:`save_result`.

    Args:
        path: an HDF5 file written by :func:`save_result`.

    Returns:
        The result dataclass, equal to the one saved (tensors on the CPU).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        SchemaError: the file is truncated, corrupt, not HDF5, not a curvlens results file, or
            written by a newer curvlens (unknown kind, newer schema or format).
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path: expected a str or os.PathLike, got {type(path).__name__}; pass a file name")
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"load_result: no such file {str(p)!r}; check the path")
    if p.is_dir():
        raise IsADirectoryError(f"load_result: {str(p)!r} is a directory; pass the .h5 file inside it")
    h5py = _h5py()
    try:
        f = h5py.File(p, "r")
    except OSError as e:
        reason = (str(e).splitlines() or [type(e).__name__])[0]
        raise SchemaError(f"{str(p)!r} is not a readable HDF5 file ({reason}): it is truncated, corrupt or not "
                          "written by curvlens; regenerate it") from None
    try:
        with f:
            return _read_file(f, p)
    except SchemaError:
        raise
    except (OSError, RuntimeError, KeyError, ValueError, TypeError) as e:  # h5py reports damage in many ways
        reason = (str(e).splitlines() or [type(e).__name__])[0]
        raise SchemaError(f"{str(p)!r} is a corrupt curvlens results file ({type(e).__name__}: {reason}); "
                          "regenerate it") from e


def _read_file(f, p: Path) -> Any:
    fmt = f.attrs.get("curvlens-format")
    if fmt is None or RESULT_GROUP not in f:
        raise SchemaError(f"{str(p)!r} is an HDF5 file but not a curvlens results file (no curvlens-format "
                          f"attribute or no {RESULT_GROUP!r} group); write it with curvlens.io.save_result")
    if int(fmt) > FORMAT_VERSION:
        raise SchemaError(f"{str(p)!r} uses file format {int(fmt)}, newer than {FORMAT_VERSION}; upgrade "
                          "curvlens (pip install -U curvlens)")
    try:
        return _read_result(f[RESULT_GROUP], "result")
    except SchemaError as e:
        raise SchemaError(f"{str(p)!r}: {e}") from None


# ---------------------------------------------------------------- summary.json
def summary_of(result: Any) -> dict[str, Any]:
    """The headline numbers of a result as a flat dict.

    Uses ``result.summary()`` when the result has one (e.g. ``AnalysisResult``); otherwise its
    scalar fields, 0-d tensors, and ``info.{seed, matvecs, wall_time, converged, status}``.
    """
    if callable(getattr(result, "summary", None)):
        return dict(result.summary())
    out: dict[str, Any] = {}
    for f in dataclasses.fields(result):
        v = getattr(result, f.name)
        if v is None or isinstance(v, (bool, int, float, str, np.generic)):
            out[f.name] = v
        elif isinstance(v, (torch.Tensor, np.ndarray)) and v.ndim == 0 and v.dtype != object:
            out[f.name] = v.item()
    info = getattr(result, "info", None)
    for name in ("seed", "matvecs", "wall_time", "converged", "status"):
        if hasattr(info, name):
            out[name] = getattr(info, name)
    return out


def save_summary(result: Any, path: str | os.PathLike, *, attrs: dict[str, Any] | None = None) -> Path:
    """Write ``summary.json``: kind, versions, creation time, ``attrs`` and :func:`summary_of` (atomic).

    NaN / infinite numbers are written as ``null`` (strict JSON).
    """
    if not _is_result(result):
        raise TypeError(f"result: expected a curvlens result dataclass, got {type(result).__name__}")
    cls = type(result)
    doc = {"curvlens-kind": getattr(cls, "__curvlens_kind__", cls.__name__),
           "curvlens-schema": getattr(cls, "__curvlens_schema__", None),
           "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "versions": run_metadata(), "attrs": dict(attrs or {}), "summary": summary_of(result)}
    write_json_atomic(doc, path)
    return Path(path)

