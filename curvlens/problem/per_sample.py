"""Per-sample gradients of a :class:`~curvlens.problem.Problem` with ``torch.func`` (vmap of grad)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator

import torch
from torch import nn

from curvlens.problem.batches import to_device

if TYPE_CHECKING:
    from curvlens.problem.problem import Problem

__all__ = ["per_sample_gradients"]


class _LossOf(nn.Module):
    """(model, loss) as one module, so ``functional_call`` can substitute the parameters."""

    def __init__(self, problem: "Problem"):
        super().__init__()
        self.m = problem.model
        object.__setattr__(self, "_problem", problem)

    def forward(self, batch):
        pr = self._problem
        if pr.loss_form == "criterion":
            from curvlens.problem.problem import call_model

            return pr.loss_fn(call_model(self.m, batch[0]), batch[1]).reshape(())
        return pr.loss_fn(self.m, batch).reshape(())


def per_sample_gradients(problem: "Problem", chunk_size: int = 64) -> Iterator[torch.Tensor]:
    """Yield ``(n, D)`` chunks of per-sample gradients, in sample order, batch by batch."""
    from torch.func import functional_call, grad, vmap

    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size: expected a positive integer (samples per vmap call), got {chunk_size!r}")
    if not all(isinstance(b, (tuple, list)) and all(isinstance(t, torch.Tensor) for t in b) for b in problem.batches):
        raise TypeError("per-sample gradients need batches that are tuples of tensors")
    wrap = _LossOf(problem)
    names = problem.param_names
    base = tuple(p.detach() for p in problem.params)

    def loss_one(pvals, sample):
        one = tuple(t.unsqueeze(0) for t in sample)
        return functional_call(wrap, {"m." + n: v for n, v in zip(names, pvals)}, (one,))

    g_one = vmap(grad(loss_one), in_dims=(None, 0))
    with problem.state_guard():
        for b in problem.batches:
            b = tuple(to_device(t, problem.device, problem.dtype) for t in b)
            size = int(b[0].shape[0])
            for s in range(0, size, chunk_size):
                gs = g_one(base, tuple(t[s:s + chunk_size] for t in b))
                yield torch.cat([g.reshape(g.shape[0], -1) for g in gs], 1)
