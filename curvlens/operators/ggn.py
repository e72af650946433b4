"""The generalized Gauss-Newton matrix ``J^T H_loss J`` (PSD for the supported losses)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from curvlens.problem.losses import LossSpec, identify_loss
from curvlens.problem import Problem, resolve_loss_form
from curvlens.operators.model import ModelOperator, as_problem, batched_vjp, call_model, grads


class OutputSpaceOperator(ModelOperator):
    """``sum_b w_b J_b^T M_b J_b`` where ``J_b`` is the Jacobian of some per-batch output
    ``f_b(theta)`` and ``M_b`` a symmetric operator on the output space.

    ``J v`` uses the double-vjp identity: with a dummy ``u`` of the output's shape,
    ``g(u) = J^T u`` is linear in ``u``, so the vjp of ``g`` with respect to ``u`` along ``v``
    is ``J v``. Both graphs are kept while the memory budget allows.
    """

    is_psd = True

    def _output(self, i: int, batch: Any) -> tuple[torch.Tensor, Any]:
        """(f_b, context) of batch ``i``; ``f_b`` depends differentiably on the parameters."""
        raise NotImplementedError

    def _output_matvec(self, i: int, out: torch.Tensor, ctx: Any, W: torch.Tensor) -> torch.Tensor:
        """``w_b M_b W`` for directions ``W`` shaped ``(k, *out.shape)``."""
        raise NotImplementedError

    def _build(self, i: int):
        with self.state_guard():
            out, ctx = self._output(i, self._device_batch(i))
            if not isinstance(out, torch.Tensor):
                raise TypeError(
                    f"{type(self).__name__}: the model output on batch {i} is a {type(out).__name__}, "
                    "expected a tensor; use HessianOperator with loss_fn(model, batch) for such models"
                )
            u = torch.zeros_like(out, requires_grad=True)
            gu = grads([out], self.params, [u], batched=False, create_graph=True)
        return out, ctx, u, gu

    def _graph_roots(self, entry) -> list:
        return [t for t in entry[3] if t is not None]

    def _apply_many(self, items: list, V: list[torch.Tensor]) -> list[torch.Tensor]:
        k = V[0].shape[0]
        roots, gos, us, live = [], [], [], []
        for i, (out, ctx, u, gu) in items:
            idx = [n for n, t in enumerate(gu) if t is not None and t.requires_grad]
            if idx:
                roots += [gu[n] for n in idx]
                gos += [V[n] for n in idx]
                us.append(u)
                live.append((i, out, ctx))
        if not live:
            return [torch.zeros_like(v) for v in V]
        JVs = batched_vjp(roots, us, gos, k, self.vjp_state.setdefault("jv", {}))  # J_b V for every batch
        MJVs = [self._output_matvec(i, out, ctx, JV) for (i, out, ctx), JV in zip(live, JVs)]
        return batched_vjp([out for _, out, _ in live], self.params, MJVs, k, self.vjp_state.setdefault("jt", {}))


class GGNOperator(OutputSpaceOperator):
    """Generalized Gauss-Newton ``G = sum_b w_b J_b^T (d^2 L_b / d f^2) J_b`` (Schraudolph 2002).

    ``loss_fn`` must be a criterion applied to the model output: cross-entropy, NLL (on
    log-probabilities), MSE, BCE-with-logits or BCE, given as a module, a
    ``torch.nn.functional`` function or a name (see :mod:`curvlens.problem.losses`). For
    these losses the output Hessian is PSD, so ``G`` is PSD; for cross-entropy, NLL,
    BCE-with-logits and MSE it equals the Fisher information of the model's likelihood.

    Example:
        >>> model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.randn(8, 3, generator=g, dtype=torch.float64)
        >>> y = torch.randint(0, 2, (8,), generator=g)
        >>> G = GGNOperator(model, nn.CrossEntropyLoss(), (x, y))
        >>> bool(torch.linalg.eigvalsh(G.to_dense()).min() > -1e-12)
        True
    """

    def __init__(self, model: Any, loss_fn=None, data: Any = None, **kwargs):
        who = type(self).__name__
        loss_arg = loss_fn
        if not isinstance(model, Problem) and loss_fn is not None and not isinstance(loss_fn, (str, nn.Module)):
            self._check_form(loss_fn, kwargs.get("loss_form", "auto"))
            # a torch.nn.functional loss: use its spec as the criterion
            red = kwargs.get("reduction") or "mean"
            loss_arg = identify_loss(loss_fn, red, purpose=who)
            kwargs["loss_form"] = "criterion"
        problem = as_problem(model, loss_arg, data, kwargs, who)
        if problem.loss_form == "model_batch":
            self._check_form(problem.loss_fn, "model_batch")
        self.spec: LossSpec = (problem.loss_fn if isinstance(problem.loss_fn, LossSpec)
                               else identify_loss(problem.loss_fn, problem.reduction, purpose=who))
        super().__init__(problem, **kwargs)

    def _check_form(self, loss_fn, loss_form: str) -> None:
        if resolve_loss_form(loss_fn, loss_form) == "model_batch":
            raise ValueError(
                f"loss_fn: {type(self).__name__} needs a criterion applied to the model output "
                "(cross_entropy, nll, mse, bce_with_logits, bce_probs), got a loss_fn(model, batch); "
                "use HessianOperator or EmpiricalFisherOperator for it"
            )

    def _output(self, i: int, batch: Any):
        x, y = self._inputs_targets(batch, i)
        out = call_model(self.model, x)
        if isinstance(out, torch.Tensor):
            self.check_loss(self.spec(out, y), i)
        return out, y

    def _output_matvec(self, i, out, y, W):
        return self.batch_weight(i) * self.spec.hessian_vp(out, y, W)
