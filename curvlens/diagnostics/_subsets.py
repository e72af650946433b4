"""Indexable samples for the minibatch studies: (inputs, targets) tensors or a list of such batches."""

from __future__ import annotations

from typing import Any

import torch

from curvlens.problem.batches import collect_batches


class Samples:
    """``N`` samples as a tuple of tensors sharing their leading dimension; ``subset(idx)`` is a batch."""

    def __init__(self, parts: tuple[torch.Tensor, ...]):
        self.parts = parts
        self.num_samples = int(parts[0].shape[0])

    def subset(self, idx: torch.Tensor) -> tuple[torch.Tensor, ...]:
        idx = idx.to(self.parts[0].device)
        return tuple(p.index_select(0, idx.to(p.device)) for p in self.parts)


def indexable(data: Any) -> tuple[Samples | None, str]:
    """Return ``(Samples, "")`` when ``data`` is one tuple of tensors or a list of them, else ``(None, why)``."""
    try:
        batches = collect_batches(data)
    except (TypeError, ValueError) as e:
        return None, f"data could not be read as batches ({e})"
    first = batches[0]
    if not isinstance(first, (tuple, list)) or not first or not all(isinstance(t, torch.Tensor) for t in first):
        return None, ("the minibatch studies need (inputs, targets) tensors or a list of such batches; got batches "
                      f"of type {type(first).__name__}")
    width = len(first)
    for b in batches:
        if not isinstance(b, (tuple, list)) or len(b) != width or not all(isinstance(t, torch.Tensor) for t in b):
            return None, "the batches do not all have the same (inputs, targets) tensor structure"
        n = b[0].shape[0] if b[0].ndim else None
        if n is None or any(t.ndim == 0 or t.shape[0] != n for t in b):
            return None, "the tensors of a batch do not share a leading batch dimension"
    try:
        parts = tuple(torch.cat([b[j] for b in batches], 0) if len(batches) > 1 else first[j] for j in range(width))
    except RuntimeError as e:
        return None, f"the batches could not be concatenated ({str(e).splitlines()[0]})"
    return Samples(parts), ""
