"""The HDF5 codec of curvlens results: how one value is written to, and read from, a group.

Every stored value gets a type tag (``none``, ``int``, ``str``, ``np:<dtype>``, ``tensor``,
``ndarray``, ``list:<plain type>``, ``dict``, ``result``, ...); a group lists its ``[name, tag]``
pairs in its ``curvlens-fields`` attribute. The file layout is in :mod:`curvlens.io.hdf5`.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np
import torch

from curvlens.errors import SchemaError
from curvlens.results import RESULT_KINDS

_FIELDS, _KIND, _SCHEMA, _TYPE = "curvlens-fields", "curvlens-kind", "curvlens-schema", "curvlens-type"
_MAX_ATTR_ITEMS = 2048  # longer lists / strings become datasets (HDF5 attributes are small)
_PLAIN = {"bool": bool, "int": int, "float": float, "str": str}
_I64 = (-(2**63), 2**63 - 1)


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
