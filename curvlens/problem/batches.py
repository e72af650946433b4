"""Batches: telling one batch from an iterable of batches, sizes, weights, device moves."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch


def _is_leaf_batch(data: Any) -> bool:
    if isinstance(data, (torch.Tensor, Mapping)):
        return True
    if isinstance(data, (tuple, list)):
        return len(data) > 0 and any(isinstance(e, (torch.Tensor, Mapping)) for e in data)
    return False


def first_tensor(obj: Any) -> torch.Tensor | None:
    """The first tensor found depth-first in a (nested) batch, or None."""
    if isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, Mapping):
        obj = list(obj.values())
    if isinstance(obj, (tuple, list)):
        for e in obj:
            t = first_tensor(e)
            if t is not None:
                return t
    return None


def batch_size(batch: Any, index: int) -> int:
    """Number of samples in a batch: the leading dimension of its first tensor."""
    t = first_tensor(batch)
    if t is None or t.ndim == 0:
        raise ValueError(
            f"data: batch {index} holds no tensor with a batch dimension (got {type(batch).__name__}); "
            "expected (inputs, targets) tensors whose first dimension is the batch"
        )
    return int(t.shape[0])


def to_device(obj: Any, device: torch.device, dtype: torch.dtype) -> Any:
    """Move tensors to ``device``; floating tensors are cast to the model's ``dtype``.

    Only data is cast (so a float64 model can be fed float32 data); the model never is.
    """
    if isinstance(obj, torch.Tensor):
        if obj.is_floating_point() and obj.dtype != dtype:
            obj = obj.to(dtype)
        return obj.to(device)
    if isinstance(obj, Mapping):
        return {k: to_device(v, device, dtype) for k, v in obj.items()}
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # namedtuple
        return type(obj)(*(to_device(v, device, dtype) for v in obj))
    if isinstance(obj, (tuple, list)):
        return type(obj)(to_device(v, device, dtype) for v in obj)
    return obj


def collect_batches(data: Any) -> list[Any]:
    """Return the list of batches described by ``data``.

    ``data`` is one batch (a tensor, a mapping, or a tuple/list holding tensors such as
    ``(inputs, targets)``) or an iterable of batches (DataLoader, list, generator). Batches
    are materialized once, so the operator is one fixed matrix even if the loader shuffles.
    """
    if data is None:
        raise ValueError("data: expected one (inputs, targets) batch or an iterable of batches, got None")
    if _is_leaf_batch(data):
        return [data]
    if not isinstance(data, Iterable):
        raise TypeError(
            f"data: expected one (inputs, targets) batch or an iterable of batches (DataLoader, list), "
            f"got {type(data).__name__}"
        )
    batches = list(data)
    if not batches:
        raise ValueError("data: the iterable of batches is empty; pass at least one (inputs, targets) batch")
    return batches



def subset_batch(batch: Any, idx: torch.Tensor) -> Any:
    """The samples ``idx`` of one batch: every tensor with the batch's leading dimension is
    indexed along it (nested tuples, lists, dicts and namedtuples keep their structure)."""
    n = batch_size(batch, 0)

    def take(obj: Any) -> Any:
        if isinstance(obj, torch.Tensor):
            return obj.index_select(0, idx.to(obj.device)) if obj.ndim and obj.shape[0] == n else obj
        if isinstance(obj, Mapping):
            return {k: take(v) for k, v in obj.items()}
        if isinstance(obj, tuple) and hasattr(obj, "_fields"):
            return type(obj)(*(take(v) for v in obj))
        if isinstance(obj, (tuple, list)):
            return type(obj)(take(v) for v in obj)
        return obj

    return take(batch)
