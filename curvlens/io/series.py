"""A curvature time series on disk: an HDF5 file that grows by one record at a time.

The file is an ordinary curvlens results file (:func:`curvlens.io.load_result` reads it as a
:class:`CurvatureSeries`), laid out so that a record is appended by growing every column by
one row::

    run.h5
    ├── attrs: curvlens-format, curvlens-version, created, ...-version
    └── result/            curvlens-kind = "curvature_series"
        ├── steps            int64 (N,)      resizable, chunked, Fletcher-32
        ├── columns/         one float64 (N,) dataset per quantity (NaN: not measured)
        ├── alert_steps      int64 (A,)
        ├── alert_kinds      str (A,)
        ├── alert_messages   str (A,)
        └── meta/            run settings (optimizer, metrics, schedule, sizes)

Appending (:meth:`SeriesWriter.append`) is copy-on-write: the current file is copied to a
temporary file in the same directory, the record is appended there (columns resized, new
columns back-filled with NaN), the copy is flushed, fsynced and renamed onto the file. So:

* **readable while training runs**: any reader, at any moment, opens a complete file (the
  rename is atomic; a reader that opened the previous version keeps reading it);
* **crash-safe**: a ``kill -9`` mid-write leaves the previous version, with every earlier
  record, in place (and at most a stale ``.run.h5.*.tmp``, removed on the next open);
* **resumable**: opening an existing file appends to it; steps must increase.

Why not h5py's SWMR mode: after a writer is killed, an SWMR file stays marked as open for
writing (``h5clear`` is needed before it can be appended to again), SWMR cannot add datasets
or attributes once started (new per-layer columns, alert text), and HDF5 has no journal, so
a kill during a metadata flush of an in-place append can damage the whole file. The price of
copy-on-write is one file copy per record: a series of 10,000 records of 20 columns is about
2 MB, copied in about a millisecond, against the seconds of curvature products per record.
"""

from __future__ import annotations

import datetime
import glob
import json
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from curvlens.errors import SchemaError
from curvlens.io._h5codec import _escape, _h5py
from curvlens.io.atomic import atomic_path
from curvlens.results import register_result

__all__ = ["CurvatureSeries", "SeriesWriter", "load_series"]

_KIND = "curvature_series"
_CHUNK = 256
_FIELD_TAGS = [["steps", "ndarray"], ["columns", "dict"], ["alert_steps", "ndarray"], ["alert_kinds", "ndarray"],
               ["alert_messages", "ndarray"], ["meta", "dict"]]


@register_result(_KIND)
@dataclass(frozen=True)
class CurvatureSeries:
    """Curvature measured along a training run, one row per measurement.

    Attributes:
        steps: int64 ``(N,)`` training steps, strictly increasing.
        columns: ``{name: float64 (N,)}``; NaN where a quantity was not measured. Names used by
            :class:`~curvlens.hooks.CurvatureMonitor`: ``lambda_max``, ``lambda_max_residual``,
            ``lr``, ``threshold`` (the stability threshold, ``2/lr`` for gradient descent),
            ``eos_ratio`` (``lambda_max / threshold``), ``trace``, ``trace_stderr``,
            ``negative_mass``, ``negative_mass_stderr``, ``preconditioned_sharpness``,
            ``preconditioned_threshold``, ``matvecs``, ``seconds``, and per layer
            ``layer_lambda_max:<block>`` / ``layer_trace:<block>``.
        alert_steps, alert_kinds, alert_messages: one entry per alert raised.
        meta: run settings (str, int, float or bool values).
    """

    steps: np.ndarray
    columns: dict
    alert_steps: np.ndarray
    alert_kinds: np.ndarray
    alert_messages: np.ndarray
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.steps.shape[0])

    def __eq__(self, other: object) -> bool:
        """Same steps, columns (NaN equal to NaN), alerts and settings."""
        if not isinstance(other, CurvatureSeries):
            return NotImplemented

        def same(a, b) -> bool:
            a, b = np.asarray(a), np.asarray(b)
            if a.shape != b.shape:
                return False
            if a.dtype.kind == "f" and b.dtype.kind == "f":
                return bool(np.array_equal(a, b, equal_nan=True))
            return bool(np.array_equal(a, b))

        return (same(self.steps, other.steps) and set(self.columns) == set(other.columns)
                and all(same(self.columns[k], other.columns[k]) for k in self.columns)
                and same(self.alert_steps, other.alert_steps) and same(self.alert_kinds, other.alert_kinds)
                and same(self.alert_messages, other.alert_messages) and dict(self.meta) == dict(other.meta))

    __hash__ = None  # mutable arrays inside: not hashable

    def column(self, name: str) -> np.ndarray:
        """The values of one quantity (``ValueError`` naming the columns there are)."""
        if name not in self.columns:
            raise ValueError(f"name: expected one of the series' columns {sorted(self.columns)}, got {name!r}")
        return self.columns[name]

    def summary(self) -> dict[str, Any]:
        """Last value of every column, the number of records and of alerts."""
        out: dict[str, Any] = {"records": len(self), "alerts": int(self.alert_steps.shape[0])}
        if len(self):
            out["last_step"] = int(self.steps[-1])
            out.update({k: float(v[-1]) for k, v in self.columns.items()})
        return out


def load_series(path: str | os.PathLike) -> CurvatureSeries:
    """Read a series file (also while a writer appends to it).

    Raises:
        FileNotFoundError: no such file.
        SchemaError: not a curvlens file, or a curvlens file holding another kind of result.
    """
    from curvlens.io.hdf5 import load_result

    res = load_result(path)
    if not isinstance(res, CurvatureSeries):
        raise SchemaError(f"{str(path)!r} holds a {type(res).__name__}, not a curvature series; write one with "
                          "curvlens.hooks.CurvatureMonitor(..., out=path)")
    return res


def _check_meta(meta: Any) -> dict:
    if meta is None:
        return {}
    if not isinstance(meta, dict):
        raise TypeError(f"meta: expected a dict of str -> str/int/float/bool, got {type(meta).__name__}")
    for k, v in meta.items():
        if not isinstance(k, str) or type(v) not in (str, int, float, bool):
            raise TypeError(f"meta[{k!r}]: expected a str key and a str/int/float/bool value, got "
                            f"{type(v).__name__}; convert it with str()")
    return dict(meta)


def _tag(v: Any) -> str:
    return {bool: "bool", int: "int", float: "float", str: "str"}[type(v)]


class SeriesWriter:
    """Append records to a series file (see the module docstring for layout and guarantees).

    Args:
        path: the ``.h5`` file. Created when absent; appended to when it holds a series.
        meta: run settings stored with the series (str keys; str/int/float/bool values); on
            reopening, the stored settings are updated with these.

    Raises:
        SchemaError: ``path`` exists but is not a curvature series.

    Example:
        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "run.h5")
        >>> w = SeriesWriter(path)
        >>> w.append(10, {"lambda_max": 3.0})
        >>> w.append(20, {"lambda_max": 3.5, "trace": 40.0})
        >>> s = load_series(path)
        >>> s.steps.tolist(), s.columns["trace"].tolist()[1], SeriesWriter(path).last_step
        ([10, 20], 40.0, 20)
    """

    def __init__(self, path: str | os.PathLike, *, meta: dict | None = None):
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path: expected a str or os.PathLike file name, got {type(path).__name__}")
        self.path = Path(path)
        meta = _check_meta(meta)
        self.last_step: int | None = None
        self.num_records = 0
        for stale in glob.glob(glob.escape(str(self.path.parent / f".{self.path.name}.")) + "*.tmp"):
            try:  # a copy left by a writer killed mid-append; the file itself is intact
                os.unlink(stale)
            except OSError:
                pass
        if self.path.exists():
            existing = load_series(self.path)
            self.num_records = len(existing)
            self.last_step = int(existing.steps[-1]) if len(existing) else None
            if meta:
                self._rewrite(lambda g: self._write_meta(g, {**existing.meta, **meta}))
        else:
            self._create(meta)

    # ------------------------------------------------------------------ file structure
    def _create(self, meta: dict) -> None:
        from curvlens.io.hdf5 import FORMAT_VERSION, run_metadata

        h5py = _h5py()
        with atomic_path(self.path) as tmp:
            with h5py.File(tmp, "w") as f:
                f.attrs["curvlens-format"] = FORMAT_VERSION
                versions = run_metadata()
                f.attrs["curvlens-version"] = versions.pop("curvlens")
                f.attrs["created"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
                for k, v in versions.items():
                    f.attrs[f"{k}-version"] = v
                g = f.create_group("result")
                g.attrs.update({"curvlens-type": "result", "curvlens-kind": _KIND, "curvlens-schema": 1,
                                "curvlens-fields": json.dumps(_FIELD_TAGS)})
                self._new_column(g, "steps", np.int64)
                cols = g.create_group("columns")
                cols.attrs.update({"curvlens-type": "dict", "curvlens-fields": "[]"})
                self._new_column(g, "alert_steps", np.int64)
                self._new_column(g, "alert_kinds", str)
                self._new_column(g, "alert_messages", str)
                self._write_meta(g, meta)

    @staticmethod
    def _new_column(g, name: str, dtype, fill_rows: int = 0) -> Any:
        h5py = _h5py()
        if dtype is str:
            ds = g.create_dataset(name, shape=(0,), maxshape=(None,), chunks=(64,), dtype=h5py.string_dtype())
            ds.attrs.update({"curvlens-type": "ndarray", "numpy-dtype": "<U0"})
            return ds
        ds = g.create_dataset(name, shape=(fill_rows,), maxshape=(None,), chunks=(_CHUNK,), dtype=dtype,
                              fletcher32=True, fillvalue=np.nan if dtype is np.float64 else 0)
        ds.attrs.update({"curvlens-type": "ndarray", "numpy-dtype": np.dtype(dtype).str})
        return ds

    @staticmethod
    def _write_meta(g, meta: dict) -> None:
        if "meta" in g:
            del g["meta"]
        m = g.create_group("meta")
        m.attrs["curvlens-type"] = "dict"
        for k, v in meta.items():
            m.attrs[_escape(k)] = np.bool_(v) if type(v) is bool else v
        m.attrs["curvlens-fields"] = json.dumps([[k, _tag(v)] for k, v in meta.items()])

    def _rewrite(self, edit) -> None:
        """Copy the file, apply ``edit(result_group)`` to the copy, and move it into place."""
        h5py = _h5py()
        with atomic_path(self.path) as tmp:
            shutil.copyfile(self.path, tmp)
            with h5py.File(tmp, "r+") as f:
                edit(f["result"])
                f.flush()

    # ------------------------------------------------------------------ appending
    def append(self, step: int, values: dict[str, float], alerts: Iterable[tuple[str, str]] = ()) -> None:
        """Append one record: ``values`` (name -> float; NaN allowed) at ``step``, and ``alerts``
        as ``(kind, message)`` pairs. The file on disk holds the record when this returns.

        Raises:
            ValueError: ``step`` is not larger than the last recorded step.
        """
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)):
            raise TypeError(f"step: expected an int training step, got {type(step).__name__}")
        step = int(step)
        if self.last_step is not None and step <= self.last_step:
            raise ValueError(f"step: expected a step after the last recorded step {self.last_step} of "
                             f"{str(self.path)!r}, got {step}; steps must increase (pass the global step when "
                             "resuming, or write to a new file)")
        row = {}
        for k, v in values.items():
            if not isinstance(k, str) or not k:
                raise ValueError(f"values: expected non-empty str column names, got {k!r}")
            row[k] = float(v) if v is not None else math.nan
        alerts = [(str(k), str(m)) for k, m in alerts]

        def edit(g) -> None:
            n = g["steps"].shape[0]
            _grow(g["steps"], n, step)
            cols = g["columns"]
            fields = json.loads(cols.attrs["curvlens-fields"])
            known = {k for k, _ in fields}
            for k in row:
                if k not in known:
                    self._new_column(cols, _escape(k), np.float64, fill_rows=n)
                    fields.append([k, "ndarray"])
            cols.attrs["curvlens-fields"] = json.dumps(fields)
            for k, _ in fields:
                _grow(cols[_escape(k)], n, row.get(k, math.nan))
            for kind, message in alerts:
                a = g["alert_steps"].shape[0]
                _grow(g["alert_steps"], a, step)
                _grow(g["alert_kinds"], a, kind)
                _grow(g["alert_messages"], a, message)

        self._rewrite(edit)
        self.last_step = step
        self.num_records += 1


def _grow(ds, n: int, value: Any) -> None:
    ds.resize((n + 1,))
    ds[n] = value
