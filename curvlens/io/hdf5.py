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
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from curvlens.errors import SchemaError
from curvlens.io.atomic import atomic_path, write_json_atomic
from curvlens.results import RESULT_KINDS

__all__ = ["save_result", "load_result", "save_summary", "summary_of", "run_metadata", "results_equal",
           "FORMAT_VERSION"]

FORMAT_VERSION = 1
RESULT_GROUP = "result"
_FIELDS, _KIND, _SCHEMA, _TYPE = "curvlens-fields", "curvlens-kind", "curvlens-schema", "curvlens-type"
_MAX_ATTR_ITEMS = 2048  # longer lists / strings become datasets (HDF5 attributes are small)
_PLAIN = {"bool": bool, "int": int, "float": float, "str": str}
_I64 = (-(2**63), 2**63 - 1)


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


def _h5py():
    try:
        import h5py
    except ImportError as e:  # pragma: no cover - h5py is a dependency
        raise ImportError("curvlens.io.hdf5 needs h5py; install it with pip install h5py") from e
    return h5py


def _escape(key: str) -> str:
    """HDF5 name of a dict key / field: '/' and '%' escaped; '', leading '.' and 'curvlens-' made safe."""
    key = key.replace("%", "%25").replace("/", "%2F")
    if key == "":
        return "%"
    if key.startswith(".") or key.startswith("curvlens-"):  # '.' is special; curvlens-* are our attributes
        return f"%{ord(key[0]):02X}" + key[1:]
    return key


def _is_result(v: Any) -> bool:
    return dataclasses.is_dataclass(v) and not isinstance(v, type)


# ---------------------------------------------------------------- writing
def _write_scalar_attr(g, name: str, v) -> None:
    if isinstance(v, str) and len(v) > 16 * _MAX_ATTR_ITEMS:
        g.create_dataset(name, data=v, dtype=_h5py().string_dtype())
    else:
        g.attrs[name] = v


def _write_tensor(g, name: str, v: torch.Tensor, where: str, opts: dict) -> None:
    if v.layout != torch.strided:
        raise TypeError(f"{where}: cannot store a {v.layout} tensor; convert it with .to_dense() first")
    t = v.detach().cpu().resolve_conj().resolve_neg()
    try:
        arr = t.numpy()
    except TypeError:  # bfloat16, float8, complex32: no numpy dtype
        arr = (t.to(torch.complex64) if t.is_complex() else t.to(torch.float32)).numpy()
    _write_array(g, name, arr, where, opts)
    g[name].attrs[_TYPE] = "tensor"
    g[name].attrs["torch-dtype"] = str(v.dtype).removeprefix("torch.")
    g[name].attrs["device"] = str(v.device)


def _write_array(g, name: str, arr: np.ndarray, where: str, opts: dict) -> None:
    if arr.dtype.kind in "OMmV":
        raise TypeError(f"{where}: cannot store a numpy array of dtype {arr.dtype}; convert it to numbers or str")
    data, kw = arr, {}
    if arr.dtype.kind == "U":
        data, kw = arr.astype(object), {"dtype": _h5py().string_dtype()}
    if arr.ndim > 0 and arr.size > 0 and arr.dtype.kind != "U":
        kw.update(opts)  # chunked storage: compression and Fletcher-32 checksums
    ds = g.create_dataset(name, data=data, **kw)
    ds.attrs[_TYPE] = "ndarray"
    ds.attrs["numpy-dtype"] = arr.dtype.str


def _h5_int(v: int) -> Any:
    """int64 when it fits, else uint64 (e.g. 64-bit OS seeds), else decimal text."""
    return v if _I64[0] <= v <= _I64[1] else (np.uint64(v) if 0 <= v < 2**64 else str(v))


def _homogeneous(v: list | tuple) -> str | None:
    if not v:
        return None
    t = type(v[0])
    if t not in (bool, int, float, str) or any(type(x) is not t for x in v):
        return None
    if t is int and not all(_I64[0] <= x <= _I64[1] for x in v):
        return None
    return t.__name__


def _write_value(g, key: str, v: Any, where: str, opts: dict) -> str:
    """Store ``v`` under ``key`` in group ``g``; return its type tag."""
    h5py = _h5py()
    name = _escape(key)
    if v is None:
        g.attrs[name] = h5py.Empty("f4")
        return "none"
    if isinstance(v, np.generic) and v.dtype.kind in "biufc":
        g.attrs[name] = v
        return "np:" + v.dtype.name
    if isinstance(v, (int, float, complex, str)) and type(v) not in (bool, int, float, complex, str):
        raise TypeError(f"{where}: cannot store {type(v).__name__} (a subclass of {type(v).__mro__[1].__name__}) "
                        "without losing its extra state; store plain values (e.g. float(x) and x.stderr) in "
                        "separate fields")
    if isinstance(v, bool):
        g.attrs[name] = np.bool_(v)
        return "bool"
    if isinstance(v, int):
        g.attrs[name] = _h5_int(v)
        return "int"
    if isinstance(v, (float, complex, str)):
        _write_scalar_attr(g, name, v)
        return "str" if isinstance(v, str) else ("float" if isinstance(v, float) else "complex")
    if isinstance(v, torch.dtype):
        g.attrs[name] = str(v)
        return "torch.dtype"
    if isinstance(v, torch.Tensor):
        _write_tensor(g, name, v, where, opts)
        return "tensor"
    if isinstance(v, np.ndarray):
        _write_array(g, name, v, where, opts)
        return "ndarray"
    if isinstance(v, (list, tuple)):
        seq = "list" if isinstance(v, list) else "tuple"
        plain = _homogeneous(v)
        if plain is not None:
            data = np.asarray(list(v), dtype=h5py.string_dtype() if plain == "str" else None)
            if len(v) <= _MAX_ATTR_ITEMS:
                g.attrs[name] = data
            else:
                g.create_dataset(name, data=data)
            return f"{seq}:{plain}"
        sub = g.create_group(name)
        sub.attrs[_TYPE] = seq
        fields = [[str(i), _write_value(sub, str(i), x, f"{where}[{i}]", opts)] for i, x in enumerate(v)]
        sub.attrs[_FIELDS] = json.dumps(fields)
        return seq
    if isinstance(v, dict):
        bad = [k for k in v if not isinstance(k, str)]
        if bad:
            raise TypeError(f"{where}: dict keys must be str, got {type(bad[0]).__name__} key {bad[0]!r}; "
                            "convert the keys with str()")
        sub = g.create_group(name)
        sub.attrs[_TYPE] = "dict"
        fields = [[k, _write_value(sub, k, x, f"{where}[{k!r}]", opts)] for k, x in v.items()]
        sub.attrs[_FIELDS] = json.dumps(fields)
        return "dict"
    if _is_result(v):
        _write_result(g.create_group(name), v, where, opts)
        return "result"
    raise TypeError(f"{where}: cannot store a value of type {type(v).__name__} in HDF5; use tensors, numpy "
                    "arrays, numbers, str, None, lists / tuples / dicts of those, or registered results")


def _write_result(g, result: Any, where: str, opts: dict) -> None:
    cls = type(result)
    kind = getattr(cls, "__curvlens_kind__", None)
    if kind is None or RESULT_KINDS.get(kind, (None,))[0] is not cls:
        raise TypeError(f"{where}: {cls.__name__} is not a registered result; decorate it with "
                        "@curvlens.results.register_result(kind, schema)")
    g.attrs[_TYPE] = "result"
    g.attrs[_KIND] = kind
    g.attrs[_SCHEMA] = int(cls.__curvlens_schema__)
    fields = [[f.name, _write_value(g, f.name, getattr(result, f.name), f"{where}.{f.name}", opts)]
              for f in dataclasses.fields(result) if f.init]
    g.attrs[_FIELDS] = json.dumps(fields)


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


# ---------------------------------------------------------------- reading
_RESULT_PACKAGES = ("curvlens.linalg", "curvlens.estimators", "curvlens.diagnostics", "curvlens.recommend",
                    "curvlens.optim", "curvlens.hooks", "curvlens.operators")


def _lookup_kind(kind: str) -> tuple[type, int] | None:
    """Find a registered kind, importing curvlens' result modules on a miss (they register on import)."""
    if kind in RESULT_KINDS:
        return RESULT_KINDS[kind]
    import importlib
    import pkgutil

    for pkg_name in _RESULT_PACKAGES:
        try:
            pkg = importlib.import_module(pkg_name)
        except Exception:  # a broken optional package must not hide the real error below
            continue
        for mod in pkgutil.iter_modules(getattr(pkg, "__path__", [])):
            try:
                importlib.import_module(f"{pkg_name}.{mod.name}")
            except Exception:
                continue
        if kind in RESULT_KINDS:
            break
    return RESULT_KINDS.get(kind)


def _raw(g, name: str):
    if name in g.attrs:
        return g.attrs[name]
    return g[name][()]


def _as_str(x) -> str:
    return x.decode("utf-8") if isinstance(x, bytes) else str(x)


def _read_array(ds) -> np.ndarray:
    want = np.dtype(_as_str(ds.attrs.get("numpy-dtype", ds.dtype.str)))
    if want.kind == "U":
        return np.asarray(ds.asstr()[...], dtype=want)
    return np.asarray(ds[...]).astype(want, copy=False)


def _read_dataset(ds, where: str) -> np.ndarray:
    try:
        return _read_array(ds)
    except (OSError, RuntimeError) as e:
        reason = (str(e).splitlines() or [type(e).__name__])[0]
        hint = "; failed checksum" if ds.fletcher32 else ""
        raise SchemaError(f"{where}: damaged dataset, the file is corrupt ({reason}{hint}); regenerate it") from e


def _read_value(g, key: str, tag: str, where: str) -> Any:
    name = _escape(key)
    if tag == "none":
        return None
    if tag in _PLAIN or tag == "complex":
        raw = _raw(g, name)
        if tag == "str":
            return _as_str(raw)
        if tag == "int" and isinstance(raw, (str, bytes)):  # integers beyond 64 bits are stored as text
            return int(_as_str(raw))
        return complex(raw) if tag == "complex" else _PLAIN[tag](raw)
    if tag.startswith("np:"):
        return np.dtype(tag[3:]).type(_raw(g, name))
    if tag == "torch.dtype":
        dt = getattr(torch, _as_str(_raw(g, name)).removeprefix("torch."), None)
        if not isinstance(dt, torch.dtype):
            raise SchemaError(f"{where}: unknown torch dtype {_raw(g, name)!r}; upgrade torch")
        return dt
    if tag == "ndarray":
        return _read_dataset(g[name], where)
    if tag == "tensor":
        ds = g[name]
        arr = _read_dataset(ds, where)
        dt = getattr(torch, _as_str(ds.attrs["torch-dtype"]), None)
        if not isinstance(dt, torch.dtype):
            raise SchemaError(f"{where}: unknown torch dtype {ds.attrs['torch-dtype']!r}; upgrade torch")
        return torch.from_numpy(np.array(arr, copy=True)).to(dt)
    seq, _, plain = tag.partition(":")
    if seq in ("list", "tuple") and plain in _PLAIN:
        raw = _raw(g, name)
        items = [_as_str(x) for x in raw] if plain == "str" else [_PLAIN[plain](x) for x in np.asarray(raw).tolist()]
        return items if seq == "list" else tuple(items)
    if tag in ("list", "tuple", "dict"):
        sub = g[name]
        pairs = [(k, _read_value(sub, k, t, f"{where}[{k!r}]")) for k, t in json.loads(sub.attrs[_FIELDS])]
        if tag == "dict":
            return dict(pairs)
        return [v for _, v in pairs] if tag == "list" else tuple(v for _, v in pairs)
    if tag == "result":
        return _read_result(g[name], where)
    raise SchemaError(f"{where}: unknown value type {tag!r}, written by a newer curvlens; upgrade curvlens "
                      "(pip install -U curvlens)")


def _read_result(g, where: str) -> Any:
    from curvlens import __version__

    if _KIND not in g.attrs or _SCHEMA not in g.attrs:
        raise SchemaError(f"{where}: group {g.name!r} has no {_KIND}/{_SCHEMA} attributes; not a curvlens result")
    kind, schema = _as_str(g.attrs[_KIND]), int(g.attrs[_SCHEMA])
    found = _lookup_kind(kind)
    if found is None:
        raise SchemaError(f"{where}: unknown result kind {kind!r} (schema {schema}); it was written by a newer "
                          f"curvlens than this one ({__version__}); upgrade curvlens (pip install -U curvlens)")
    cls, current = found
    if schema > current:
        raise SchemaError(f"{where}: result kind {kind!r} has schema {schema}, newer than the schema {current} "
                          f"this curvlens ({__version__}) reads; upgrade curvlens (pip install -U curvlens)")
    values = {k: _read_value(g, k, t, f"{where}.{k}") for k, t in json.loads(g.attrs[_FIELDS])}
    if schema < current and hasattr(cls, "__curvlens_upgrade__"):
        values = cls.__curvlens_upgrade__(schema, values)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    missing = [f.name for f in dataclasses.fields(cls) if f.init and f.name not in values
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    extra = sorted(set(values) - names)
    if missing or extra:
        raise SchemaError(f"{where}: stored fields of {kind!r} (schema {schema}) do not match {cls.__name__} "
                          f"(schema {current}): missing {missing}, unexpected {extra}; read it with the "
                          "curvlens version that wrote it (see the file attribute curvlens-version)")
    return cls(**values)


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
