"""The loss, gradient and Hessian-vector products of one optimizer step, from one graph.

A second-order step needs the loss, the gradient and a few products ``H v`` at the same
weights. Building the gradient with ``create_graph=True`` once gives all three: the loss is
the graph's root, the gradient its first derivative and every product one more backward
through the retained gradient graph (Pearlmutter 1994). This is what
:class:`~curvlens.operators.HessianOperator` does internally, without what a long-lived
operator needs and a single step does not (validation on every construction, staleness
checks, memory accounting, a separate gradient pass). The products are summed over the
problem's batches with their weights and reduced over its process group, so the values are
those of :class:`~curvlens.Problem` (``loss_and_gradient``) and of the operator.

The object is valid while the weights are unchanged; the optimizer discards it after its step.
"""

from __future__ import annotations

import torch

from curvlens.problem.differentiable import check_twice_differentiable

__all__ = ["StepHessian"]


class StepHessian:
    """``loss``, flat ``gradient`` and ``H v`` at the current weights of ``problem``.

    Satisfies :class:`~curvlens.operators.protocol.LinearOperatorLike` (``dim``, ``dtype``,
    ``device``, ``matvec``, ``matmat``, ``num_matvecs``), so Lanczos runs on it.

    Args:
        problem: a :class:`~curvlens.Problem` (its state guard is used for the forward passes).
        validate: walk the graph once and refuse operations that cannot be differentiated twice.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from curvlens import Problem
        >>> m = nn.Linear(2, 1, bias=False).double()
        >>> with torch.no_grad():
        ...     _ = m.weight.copy_(torch.tensor([[1.0, 2.0]]))
        >>> X = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
        >>> h = StepHessian(Problem(m, nn.MSELoss(), (X, torch.zeros(2, 1, dtype=torch.float64))))
        >>> round(float(h.loss), 6), h.gradient.tolist(), h.matvec(torch.tensor([1.0, 0.0], dtype=torch.float64)).tolist()
        (2.5, [1.0, 2.0], [1.0, 0.0])
    """

    is_psd = False

    def __init__(self, problem, *, validate: bool = False):
        self.problem = problem
        self.params = list(problem.params)
        self.dim, self.dtype, self.device = int(problem.dim), problem.dtype, problem.device
        self._roots: list[list[torch.Tensor]] = []  # per batch: the gradient tensors with their graphs
        self._which: list[list[int]] = []  # per batch: the parameters those tensors belong to
        self.num_matvecs = 0
        self._offsets = [0]
        for p in self.params:
            self._offsets.append(self._offsets[-1] + p.numel())
        total = torch.zeros((), dtype=self.dtype, device=self.device)
        flat = torch.zeros(self.dim, dtype=self.dtype, device=self.device)
        with problem.state_guard():
            for _, wl in problem.weighted_losses():
                g = torch.autograd.grad(wl, self.params, create_graph=True, allow_unused=True)
                which = [j for j, t in enumerate(g) if t is not None]
                roots = [g[j] for j in which]
                if validate and not self._roots:
                    check_twice_differentiable(roots, "SaddleFreeNewton")
                flat += self._flatten(which, [t.detach() for t in roots])
                # a gradient with no graph is constant in the weights (the loss is at most linear
                # in those parameters): its rows of H are zero and it takes no part in products
                live = [i for i, t in enumerate(roots) if t.requires_grad]
                self._roots.append([roots[i] for i in live])
                self._which.append([which[i] for i in live])
                total += wl.detach()
        if problem.process_group is not None:  # one all-reduce of [gradient, loss]
            buf = problem.reduce_(torch.cat([flat, total.reshape(1)]), "gradient")
            flat, total = buf[:-1].clone(), buf[-1].clone()
        self.loss, self.gradient = total, flat

    def _flatten(self, which: list[int], parts: list[torch.Tensor]) -> torch.Tensor:
        out = torch.zeros(self.dim, dtype=self.dtype, device=self.device)
        o = self._offsets
        for j, t in zip(which, parts):
            out[o[j] : o[j + 1]] = t.reshape(-1)
        return out

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """``H v`` for a flat ``v`` (one backward per batch through the retained gradient graph)."""
        return self.matmat(v.reshape(-1, 1)).reshape(-1)

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        """``H V`` for a ``(D, k)`` block (``k`` backwards per batch)."""
        k = V.shape[1]
        out = torch.zeros(self.dim, k, dtype=self.dtype, device=self.device)
        o = self._offsets
        for roots, which in zip(self._roots, self._which):
            if not roots:
                continue
            for c in range(k):
                v = V[:, c].to(self.dtype)
                gos = [v[o[j] : o[j + 1]].view_as(self.params[j]) for j in which]
                hv = torch.autograd.grad(roots, self.params, gos, retain_graph=True, allow_unused=True)
                for j, t in enumerate(hv):
                    if t is not None:
                        out[o[j] : o[j + 1], c] += t.reshape(-1)
        self.num_matvecs += k
        if self.problem.process_group is not None:
            self.problem.reduce_(out, "curvature product")
        return out
