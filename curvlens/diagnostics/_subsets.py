"""Indexable samples for the minibatch studies: (inputs, targets) tensors or a list of such batches.

On a process group (:class:`GroupSamples`) the samples are the concatenation of the ranks'
shards in rank order: every rank draws the same global indices (same generator), keeps those
that fall in its own shard, and the minibatch operator is built on a Problem on the group, so
it weighs by the global minibatch size and equals the single-process one on the union.
"""

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

    def operator(self, cls, model, loss_fn, idx: torch.Tensor, **kwargs):
        """``cls`` (an operator class) on the samples ``idx``."""
        return cls(model, loss_fn, self.subset(idx), **kwargs)


class GroupSamples:
    """The union of the ranks' shards (``N`` samples over the group); this rank holds samples
    ``offset .. offset + local.num_samples - 1`` of it (``local`` is None for an empty shard)."""

    def __init__(self, local: Samples | None, offset: int, num_samples: int, process_group):
        self.local, self.offset, self.num_samples = local, int(offset), int(num_samples)
        self.process_group = process_group

    def local_indices(self, idx: torch.Tensor) -> torch.Tensor:
        """The global indices ``idx`` that fall in this rank's shard, as indices into the shard."""
        n = 0 if self.local is None else self.local.num_samples
        idx = idx.reshape(-1).cpu()
        keep = (idx >= self.offset) & (idx < self.offset + n)
        return idx[keep] - self.offset

    def subset(self, idx: torch.Tensor) -> list:
        """This rank's part of the global sample selection ``idx`` (an empty list for none)."""
        mine = self.local_indices(idx)
        return [self.local.subset(mine)] if mine.numel() else []

    def operator(self, cls, model, loss_fn, idx: torch.Tensor, **kwargs):
        """``cls`` on a Problem on the group whose data is this rank's part of ``idx``
        (a collective: every rank calls it with the same ``idx``)."""
        from curvlens.problem import Problem

        pk = {k: kwargs.pop(k) for k in ("params", "mode") if k in kwargs}
        return cls(Problem(model, loss_fn, self.subset(idx), process_group=self.process_group, **pk), **kwargs)


def _group_indexable(data: Any, group, device) -> tuple[GroupSamples | None, str]:
    """Collective: every rank learns every shard's size and whether every shard is indexable."""
    from curvlens.distributed import all_gather_ints, rank_and_size

    empty = isinstance(data, (list, tuple)) and len(data) == 0
    local, why = (None, "") if empty else indexable(data)
    n_local = 0 if local is None else local.num_samples
    rows = all_gather_ints([n_local, int(bool(why))], group, device=device, what="shard sizes of the minibatch studies")
    bad = [r for r, (_, failed) in enumerate(rows) if failed]
    if bad:
        return None, why or f"the shard of rank {bad[0]} cannot be indexed (see that rank's notes)"
    rank, _ = rank_and_size(group)
    sizes = [n for n, _ in rows]
    return GroupSamples(local, sum(sizes[:rank]), sum(sizes), group), ""


def indexable(data: Any, *, process_group: Any = None,
              device: torch.device | str = "cpu") -> tuple[Samples | GroupSamples | None, str]:
    """Return ``(Samples, "")`` when ``data`` is one tuple of tensors or a list of them, else ``(None, why)``;
    on a resolved ``process_group`` (collective) ``data`` is this rank's shard and a :class:`GroupSamples`
    over the union of the shards is returned (the same decision on every rank; ``device``: the
    model's, for the NCCL backend)."""
    if process_group is not None:
        return _group_indexable(data, process_group, device)
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
