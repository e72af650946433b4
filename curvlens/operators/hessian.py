"""The Hessian of the loss over a data set, as a matrix-free operator."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from curvlens.operators.model import ModelOperator, batched_vjp, call_model, grads


class HessianOperator(ModelOperator):
    """``H = d^2 L / d theta^2`` of the loss over all samples of ``data`` (indefinite in general).

    Products use reverse-over-reverse differentiation (Pearlmutter 1994): the gradient of
    each batch is built once with ``create_graph=True`` and kept while a memory budget allows,
    so a product costs one extra backward; ``matmat`` pushes ``k`` vectors through one
    batched backward. ``backend="fwd_rev"`` computes forward-over-reverse products with
    ``torch.func`` (``jvp`` of ``grad``, ``vmap`` over vectors) instead.

    See :class:`~curvlens.operators.model.ModelOperator` for the arguments.

    Example:
        >>> model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.randn(8, 3, generator=g, dtype=torch.float64)
        >>> y = torch.randint(0, 2, (8,), generator=g)
        >>> H = HessianOperator(model, nn.CrossEntropyLoss(), (x, y))
        >>> H.to_dense().shape
        torch.Size([26, 26])
    """

    is_psd = False

    def __init__(self, model: Any, loss_fn=None, data: Any = None, *, backend: str = "auto", **kwargs):
        if backend not in ("auto", "double_backward", "fwd_rev"):
            raise ValueError(f"backend: expected 'auto', 'double_backward' or 'fwd_rev', got {backend!r}")
        self.backend = "double_backward" if backend == "auto" else backend
        if self.backend == "fwd_rev":
            kwargs["max_graph_memory"] = 0
        super().__init__(model, loss_fn, data, **kwargs)

    def _op_kwargs(self) -> dict:
        kw = super()._op_kwargs()
        kw["backend"] = self.backend
        if self.backend == "fwd_rev":
            kw.pop("max_graph_memory")
        return kw

    def _build(self, i: int) -> list:
        with self.state_guard():
            loss, _, _ = self.problem.batch_loss(i)
            return grads([loss * self.batch_weight(i)], self.params, [None], batched=False,
                         create_graph=self.backend == "double_backward", retain_graph=True)

    def _graph_roots(self, g: list) -> list:
        return [t for t in g if t is not None]

    def _apply_many(self, items: list, V: list[torch.Tensor]) -> list[torch.Tensor]:
        outs, gos = [], []
        for _, g in items:
            for t, v in zip(g, V):
                if t is not None and t.requires_grad:
                    outs.append(t)
                    gos.append(v)
        if not outs:  # the gradient does not depend on the parameters: zero curvature
            return [torch.zeros_like(v) for v in V]
        return batched_vjp(outs, self.params, gos, V[0].shape[0], self.vjp_state.setdefault("hvp", {}))

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        if self.backend == "fwd_rev":
            return self._matmat_fwd_rev(V)
        return super()._matmat(V)

    # ------------------------------------------------------------------ forward-over-reverse
    def _matmat_fwd_rev(self, V: torch.Tensor) -> torch.Tensor:
        from torch.func import functional_call, grad, jvp, vmap

        names = self.param_names
        base = {n: p.detach() for n, p in zip(names, self.params)}
        k = V.shape[1]
        tangents, start = [], 0
        for p in self.params:
            tangents.append(V[start : start + p.numel()].T.reshape(k, *p.shape))
            start += p.numel()
        out = None
        for i in range(len(self.batches)):
            batch, w = self._device_batch(i), self.batch_weight(i)

            def loss_of(pvals, batch=batch, w=w, i=i):
                pd = dict(zip(names, pvals))
                # validated at construction; no data-dependent checks inside vmap
                return w * functional_call(_LossModule(self), pd_prefix(pd), (batch, i)).reshape(())

            def hvp(*t):
                return jvp(grad(loss_of), (tuple(base.values()),), (tuple(t),))[1]

            with self.state_guard():
                res = vmap(hvp)(*tangents) if k > 1 else [r.unsqueeze(0) for r in hvp(*[t[0] for t in tangents])]
            part = torch.cat([r.reshape(k, -1) for r in res], dim=1)
            out = part if out is None else out + part
        out = torch.zeros(k, self.dim, dtype=self.dtype, device=self.device) if out is None else out
        return self.problem.reduce_(out.T.contiguous(), "curvature product")


def pd_prefix(pd: dict) -> dict:
    return {"op_model." + n: v for n, v in pd.items()}


class _LossModule(nn.Module):
    """Wraps (model, loss) so ``torch.func.functional_call`` can substitute the parameters."""

    def __init__(self, op: ModelOperator):
        super().__init__()
        self.op_model = op.model
        object.__setattr__(self, "_op", op)

    def forward(self, batch, i):
        op = self._op
        if op.loss_form == "criterion":
            x, y = op._inputs_targets(batch, i)
            return op.loss_fn(call_model(self.op_model, x), y)
        return op.loss_fn(self.op_model, batch)
