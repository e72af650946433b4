"""curvlens.io: results on disk (HDF5, summary.json), atomic file writes, checkpoints and data files.

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
    # atomic writes
    "atomic_write": "curvlens.io.atomic",
    "atomic_path": "curvlens.io.atomic",
    "write_json_atomic": "curvlens.io.atomic",
    "to_jsonable": "curvlens.io.atomic",
    # checkpoints, data files, losses, factories (curvlens.io.checkpoint / datafiles / losses / factory)
    "load_checkpoint": "curvlens.io.checkpoint",
    "inspect_checkpoint": "curvlens.io.checkpoint",
    "LoadedCheckpoint": "curvlens.io.checkpoint",
    "CheckpointSummary": "curvlens.io.checkpoint",
    "check_double_backward": "curvlens.io.checkpoint",
    "sniff_format": "curvlens.io.checkpoint",
    "load_data": "curvlens.io.datafiles",
    "parse_data_keys": "curvlens.io.datafiles",
    "DEFAULT_DATA_KEYS": "curvlens.io.datafiles",
    "resolve_loss": "curvlens.io.losses",
    "loss_name": "curvlens.io.losses",
    "LOSSES": "curvlens.io.losses",
    "import_object": "curvlens.io.factory",
    "call_factory": "curvlens.io.factory",
    "is_factory_spec": "curvlens.io.factory",
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
