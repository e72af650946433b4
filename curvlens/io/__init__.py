"""curvlens.io: results on disk (HDF5, summary.json) and atomic file writes.

Loading checkpoints, data files and losses is :mod:`curvlens.problem` (``load_problem``).

Names are imported lazily (on first attribute access) so that ``import curvlens`` stays light
and does not import h5py.
See :mod:`curvlens.io.hdf5` for the file layout.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    # HDF5 results
    "save_result": "curvlens.io.hdf5",
    "load_result": "curvlens.io.hdf5",
    "save_summary": "curvlens.io.hdf5",
    "summary_of": "curvlens.io.hdf5",
    "run_metadata": "curvlens.io.hdf5",
    "results_equal": "curvlens.io.hdf5",
    # time series of a training monitor (appended one record at a time)
    "CurvatureSeries": "curvlens.io.series",
    "SeriesWriter": "curvlens.io.series",
    "load_series": "curvlens.io.series",
    # atomic writes
    "atomic_write": "curvlens.io.atomic",
    "atomic_path": "curvlens.io.atomic",
    "write_json_atomic": "curvlens.io.atomic",
    "to_jsonable": "curvlens.io.atomic",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'curvlens.io' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
