"""Fisher matrices: empirical (from per-sample gradients) and Monte-Carlo (sampled labels)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from curvlens._rng import resolve_generator
from curvlens.operators.ggn import GGNOperator, OutputSpaceOperator
from curvlens.operators.model import as_problem, call_model


class EmpiricalFisherOperator(OutputSpaceOperator):
    """Empirical Fisher ``F = c * sum_i g_i g_i^T`` with per-sample loss gradients ``g_i``.

    ``c = 1/N`` for a mean-reduced loss over ``N`` samples, 1 for a sum. Products never form
    per-sample gradients: with ``r`` the vector of per-sample losses of a batch,
    ``F v = c J_r^T (J_r v)`` (two passes through the batch's graph). Per-sample losses are
    the loss evaluated on one-sample batches (vectorized with ``torch.func.vmap``), so any
    criterion or ``loss_fn(model, batch)`` works; their mean (or sum) must equal the batch
    loss, which is checked. Note the empirical Fisher is not a curvature matrix in general
    (Kunstner, Balles & Hennig 2019); it is PSD by construction.
    """

    def __init__(self, model: Any, loss_fn=None, data: Any = None, **kwargs):
        problem = as_problem(model, loss_fn, data, kwargs, type(self).__name__)
        if problem.mode == "train" and any(
            isinstance(m, nn.modules.batchnorm._BatchNorm) for m in problem.model.modules()
        ):
            raise ValueError(
                "mode: EmpiricalFisherOperator needs per-sample gradients, which batch normalization in "
                "train mode does not have (it couples the samples of a batch); use mode='eval'"
            )
        super().__init__(problem, **kwargs)

    def _output(self, i: int, batch: Any):
        r = self._per_sample_losses(i, batch)
        loss, _, _ = self._batch_loss(i, batch)
        red = r.mean() if self.reduction == "mean" else r.sum()
        tol = 1e-9 if self.dtype == torch.float64 else 1e-4
        if not torch.allclose(red.detach(), loss.detach(), rtol=tol, atol=tol * float(loss.detach().abs()) + 1e-12):
            raise ValueError(
                f"loss_fn: on batch {i} the {self.reduction} of per-sample losses ({float(red):.6g}) differs "
                f"from the batch loss ({float(loss):.6g}); the empirical Fisher needs a loss that is a "
                "plain mean or sum over samples (no class weights, no cross-sample terms)"
            )
        return r, None

    def _per_sample_losses(self, i: int, batch: Any) -> torch.Tensor:
        def one(sample):
            b = _unsqueeze(sample)
            if self.loss_form == "criterion":
                x, y = self._inputs_targets(b, i)
                return self.loss_fn(call_model(self.model, x), y).reshape(())
            return self.loss_fn(self.model, b).reshape(())

        try:
            return torch.func.vmap(one)(batch)
        except Exception:  # noqa: BLE001 - models without batching rules: loop over samples
            n = self.batch_sizes[i]
            return torch.stack([one(_index(batch, j)) for j in range(n)])

    def _output_matvec(self, i, out, ctx, W):
        c = 1.0 / self.num_samples if self.reduction == "mean" else 1.0
        return c * W


class MCFisherOperator(GGNOperator):
    """Monte-Carlo Fisher: ``sum_b w_b s_b sum_terms J^T g g^T J`` with ``g`` the gradient of the
    negative log-likelihood at targets sampled from the model's own predictive distribution.

    Its expectation over the sampled targets is the GGN for cross-entropy, NLL, MSE (Gaussian
    with variance 1/2, matching ``(f - y)^2``) and BCE-with-logits (Martens 2020). Targets are
    drawn once per batch from the operator's own ``generator`` (seeded), so the operator is one
    fixed PSD matrix; the global RNG is never used.

    Args:
        mc_samples: sampled targets per input (the estimate's rank grows with it).
        generator: a ``torch.Generator``, an int seed, or None (fresh seed, recorded in
            :attr:`seed`).
        Other arguments as :class:`~curvlens.operators.GGNOperator`.
    """

    def __init__(self, model: Any, loss_fn=None, data: Any = None, *, mc_samples: int = 1,
                 generator: torch.Generator | int | None = None, **kwargs):
        if not isinstance(mc_samples, int) or isinstance(mc_samples, bool) or mc_samples < 1:
            raise ValueError(f"mc_samples: expected a positive integer, got {mc_samples!r}")
        gen = resolve_generator(generator)
        self.seed = int(gen.initial_seed())
        self.mc_samples = mc_samples
        self._gen = gen
        self._batch_seeds: list[int] = []
        super().__init__(model, loss_fn, data, **kwargs)

    def _op_kwargs(self) -> dict:
        kw = super()._op_kwargs()
        kw.update(mc_samples=self.mc_samples, generator=self.seed)
        return kw

    def _output(self, i: int, batch: Any):
        out, y = super()._output(i, batch)
        while len(self._batch_seeds) <= i:  # one fixed seed per batch, drawn in order
            self._batch_seeds.append(int(torch.randint(0, 2**62, (1,), generator=self._gen)))
        g = torch.Generator(device=self._gen.device).manual_seed(self._batch_seeds[i])
        G = self.spec.sampled_gradients(out, y, self.mc_samples, g)
        return out, (y, G)

    def _output_matvec(self, i, out, ctx, W):
        y, G = ctx
        s = self.batch_weight(i) * self.spec.scale(out.detach(), y)
        if self.spec.kind in ("cross_entropy", "nll"):  # one term per position, class dim 1
            a = (G.unsqueeze(0) * W.unsqueeze(1)).sum(dim=3, keepdim=True)  # (k, S, N, 1, ...)
            return s * (a * G.unsqueeze(0)).mean(dim=1)
        return s * (G**2).mean(dim=0).unsqueeze(0) * W  # elementwise terms


def _unsqueeze(obj):
    if isinstance(obj, torch.Tensor):
        return obj.unsqueeze(0)
    if isinstance(obj, dict):
        return {k: _unsqueeze(v) for k, v in obj.items()}
    if isinstance(obj, (tuple, list)):
        return type(obj)(_unsqueeze(v) for v in obj)
    return obj


def _index(obj, j):
    if isinstance(obj, torch.Tensor):
        return obj[j]
    if isinstance(obj, dict):
        return {k: _index(v, j) for k, v in obj.items()}
    if isinstance(obj, (tuple, list)):
        return type(obj)(_index(v, j) for v in obj)
    return obj

