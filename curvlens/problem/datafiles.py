"""Load evaluation data: tensor files (``.pt``, ``.npz``, ``.h5``) or a ``module:factory``.

Tensor files hold inputs and targets under ``inputs``/``targets`` (also ``x``/``y``,
``X``/``y``, ``X``/``Y``, ``data``/``labels``, ``features``/``labels``); other names are passed
with ``keys=("images", "labels")`` (or ``"images,labels"``). ``.pt`` files are read
with ``weights_only=True``, ``.npz`` with ``allow_pickle=False``: loading data never runs code.
A factory may return a ``(inputs, targets)`` pair, a dict, a ``Dataset``, a ``DataLoader`` or
any iterable of batches.

Example:
    >>> import torch, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "d.pt")
    >>> torch.save({"x": torch.zeros(4, 3), "y": torch.tensor([0, 1, 0, 1])}, path)
    >>> inputs, targets = load_data(path)
    >>> inputs.shape, targets.dtype
    (torch.Size([4, 3]), torch.int64)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from curvlens.errors import CheckpointError
from curvlens.problem.factory import call_factory, is_factory_spec

__all__ = ["DEFAULT_DATA_KEYS", "load_data", "parse_data_keys"]

#: (inputs key, targets key) pairs tried in order when ``keys`` is not given
DEFAULT_DATA_KEYS: tuple[tuple[str, str], ...] = (
    ("inputs", "targets"),
    ("x", "y"),
    ("X", "y"),
    ("X", "Y"),
    ("data", "labels"),
    ("features", "labels"),
)

_SUFFIXES = {".pt": "pt", ".pth": "pt", ".npz": "npz", ".h5": "h5", ".hdf5": "h5"}


def parse_data_keys(keys: str | Sequence[str] | None, *, arg: str = "keys") -> tuple[str, str] | None:
    """``"images,labels"`` or ``("images", "labels")`` -> ``("images", "labels")``; None stays None.

    ``arg`` is the argument name that error messages use (``load_problem`` calls it ``data_keys``).
    """
    if keys is None:
        return None
    parts = [k.strip() for k in keys.split(",")] if isinstance(keys, str) else list(keys)
    if len(parts) != 2 or not all(isinstance(k, str) and k for k in parts):
        raise ValueError(
            f"{arg}: expected two names 'INPUTS,TARGETS' (e.g. {arg}='images,labels'), got {keys!r}"
        )
    return parts[0], parts[1]


def _read_pt(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        if "Weights only load failed" in str(e) or "weights_only" in str(e):
            raise CheckpointError(
                f"data file {str(path)!r} holds pickled Python objects (not plain tensors), which are "
                "not loaded because unpickling can run code; save a dict instead: "
                "torch.save({'inputs': X, 'targets': y}, path)"
            ) from e
        raise CheckpointError(
            f"data file {str(path)!r} is not a readable torch file (corrupt or truncated?): "
            f"{str(e).splitlines()[0] if str(e) else type(e).__name__}"
        ) from e


def _read_npz(path: Path) -> dict[str, Any]:
    with open(path, "rb") as f:
        head = f.read(6)
    if not head.startswith((b"PK\x03\x04", b"PK\x05\x06", b"\x93NUMPY")):
        raise CheckpointError(
            f"data file {str(path)!r} is not a .npz archive (it starts with {head!r}, not a zip header); "
            "write it with numpy.savez(path, inputs=X, targets=y)"
        )
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except ValueError as e:
        raise CheckpointError(
            f"data file {str(path)!r} holds object arrays, which need pickle and are refused; "
            "save numeric arrays with numpy.savez(path, inputs=X, targets=y)"
        ) from e
    except Exception as e:
        raise CheckpointError(
            f"data file {str(path)!r} is not a readable .npz archive (corrupt or truncated?): {e}"
        ) from e


def _read_h5(path: Path) -> dict[str, Any]:
    import h5py

    out: dict[str, Any] = {}
    try:
        with h5py.File(path, "r") as f:
            f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    except OSError as e:
        raise CheckpointError(
            f"data file {str(path)!r} is not a readable HDF5 file (corrupt or truncated?): {e}"
        ) from e
    return out


def _as_tensor(value: Any, name: str, path: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    arr = np.asarray(value)
    if arr.dtype.kind not in "biuf":
        raise CheckpointError(
            f"data file {path!r}: key {name!r} holds {arr.dtype} values, expected numbers"
        )
    return torch.from_numpy(np.ascontiguousarray(arr))


def _pick(content: Any, keys: tuple[str, str] | None, path: str, arg: str) -> tuple[Any, Any]:
    if isinstance(content, (tuple, list)) and len(content) == 2 and keys is None:
        return content[0], content[1]
    if not isinstance(content, dict):
        raise CheckpointError(
            f"data file {path!r} holds a {type(content).__name__}; expected a dict with keys "
            "'inputs' and 'targets' (or an (inputs, targets) pair)"
        )
    candidates = [keys] if keys is not None else list(DEFAULT_DATA_KEYS)
    for kx, ky in candidates:
        if kx in content and ky in content:
            return content[kx], content[ky]
    found = ", ".join(repr(k) for k in list(content)[:20]) or "(none)"
    wanted = f"{keys[0]!r} and {keys[1]!r}" if keys else "'inputs' and 'targets' (or 'x'/'y', 'X'/'y')"
    raise CheckpointError(
        f"data file {path!r} has no keys {wanted}; it holds {found}; "
        f"name the keys with {arg}='INPUTS,TARGETS'"
    )


def _finish(x: Any, y: Any, path: str, keys: tuple[str, str] | None, num_samples: int | None,
            dtype: torch.dtype | None) -> tuple[torch.Tensor, torch.Tensor]:
    kx, ky = keys or ("inputs", "targets")
    x, y = _as_tensor(x, kx, path), _as_tensor(y, ky, path)
    if x.dim() == 0 or y.dim() == 0 or x.shape[0] != y.shape[0]:
        raise CheckpointError(
            f"data file {path!r}: inputs have shape {tuple(x.shape)} but targets {tuple(y.shape)}; "
            "both need the same number of samples along the first dimension"
        )
    if x.shape[0] == 0:
        raise CheckpointError(
            f"data file {path!r} holds 0 samples (inputs of shape {tuple(x.shape)}); pass a file with at "
            "least one (input, target) pair"
        )
    if num_samples is not None:
        x, y = x[:num_samples], y[:num_samples]
    if not y.is_floating_point() and y.dtype != torch.bool:
        y = y.to(torch.int64)  # class indices as the losses expect
    if dtype is not None:
        x = x.to(dtype) if x.is_floating_point() else x
        y = y.to(dtype) if y.is_floating_point() else y
    return x, y


class _FirstSamples:
    """Iterable over the batches of ``source`` that stops after ``num_samples`` samples."""

    def __init__(self, source: Iterable, num_samples: int):
        self.source, self.num_samples = source, num_samples

    def __iter__(self):
        seen = 0
        for batch in self.source:
            if seen >= self.num_samples:
                return
            x, y = batch[0], batch[1]
            n = min(len(x), self.num_samples - seen)
            seen += n
            yield (x[:n], y[:n]) if n < len(x) else batch


def _from_factory(obj: Any, spec: str, keys, num_samples, batch_size, dtype, arg: str):
    from torch.utils.data import DataLoader, Dataset, IterableDataset, Subset

    if isinstance(obj, (tuple, list)) and len(obj) == 2 and all(isinstance(t, (torch.Tensor, np.ndarray)) for t in obj):
        return _finish(obj[0], obj[1], spec, keys, num_samples, dtype)
    if isinstance(obj, dict):
        x, y = _pick(obj, keys, spec, arg)
        return _finish(x, y, spec, keys, num_samples, dtype)
    if isinstance(obj, DataLoader):
        return obj if num_samples is None else _FirstSamples(obj, num_samples)
    if isinstance(obj, Dataset) and not isinstance(obj, IterableDataset) and hasattr(obj, "__len__"):
        if num_samples is not None:
            obj = Subset(obj, range(min(num_samples, len(obj))))
        return DataLoader(obj, batch_size=batch_size or 256, shuffle=False)
    if isinstance(obj, Iterable) and not isinstance(obj, (str, bytes, torch.Tensor)):
        return obj if num_samples is None else _FirstSamples(obj, num_samples)
    raise CheckpointError(
        f"data factory {spec!r} returned a {type(obj).__name__}; expected an (inputs, targets) pair, "
        "a dict, a Dataset, a DataLoader or an iterable of (inputs, targets) batches"
    )


def load_data(
    spec: str | os.PathLike,
    *,
    keys: str | Sequence[str] | None = None,
    num_samples: int | None = None,
    batch_size: int | None = None,
    dtype: torch.dtype | None = None,
) -> Any:
    """Load evaluation data from a tensor file or a factory spec.

    Args:
        spec: a ``.pt``/``.pth``, ``.npz`` or ``.h5``/``.hdf5`` file, or
            ``'pkg.module:factory'`` / ``'path/to/file.py:factory'`` (called without arguments).
        keys: ``(inputs_key, targets_key)`` or ``"inputs_key,targets_key"``; default tries
            :data:`DEFAULT_DATA_KEYS`. HDF5 keys may be paths (``"train/images"``).
        num_samples: keep only the first ``num_samples`` samples (deterministic, no shuffling).
        batch_size: batch size when a factory returns a map-style ``Dataset`` (default 256).
        dtype: cast floating inputs/targets to this dtype (e.g. the model's); integer targets
            always become int64.

    Returns:
        ``(inputs, targets)`` tensors for files and pairs; a ``DataLoader`` or iterable of
        batches for factories returning datasets or loaders.

    Raises:
        ValueError: bad ``keys``, ``num_samples``, ``batch_size`` or an unknown file type.
        CheckpointError: missing/corrupt file, missing keys, mismatched lengths, or a failing
            factory; the message names the file or key and the fix.
    """
    return read_data(spec, parse_data_keys(keys), num_samples, batch_size, dtype, keys_arg="keys")


def read_data(spec: Any, keys: tuple[str, str] | None, num_samples: int | None, batch_size: int | None,
              dtype: torch.dtype | None, *, keys_arg: str) -> Any:
    """:func:`load_data` with parsed ``keys``; messages name the keys argument ``keys_arg``."""
    for name, val in (("num_samples", num_samples), ("batch_size", batch_size)):
        if val is not None and (not isinstance(val, int) or isinstance(val, bool) or val < 1):
            raise ValueError(f"{name}: expected a positive int or None, got {val!r}")
    if isinstance(spec, str) and is_factory_spec(spec) and not Path(spec).exists():
        obj = call_factory(spec, what="data")
        return _from_factory(obj, spec, keys, num_samples, batch_size, dtype, keys_arg)
    if not isinstance(spec, (str, os.PathLike)):
        raise TypeError(f"data: expected a file path or 'module:factory' string, got {type(spec).__name__}")
    path = Path(spec)
    kind = _SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise ValueError(
            f"data: unsupported file type {path.suffix or '(no suffix)'!r} for {str(path)!r}; "
            "expected .pt, .pth, .npz, .h5 or .hdf5, or a 'module:factory' spec"
        )
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise CheckpointError(f"data file {str(path)!r} {what}; check the path")
    if path.stat().st_size == 0:
        raise CheckpointError(f"data file {str(path)!r} is empty (0 bytes); write the data again")
    content = {"pt": _read_pt, "npz": _read_npz, "h5": _read_h5}[kind](path)
    x, y = _pick(content, keys, str(path), keys_arg)
    return _finish(x, y, str(path), keys, num_samples, dtype)
