"""Gradient noise scale ``B_simple = tr(Sigma) / |G|^2`` (McCandlish et al. 2018).

``G`` is the full-data gradient of the mean loss and ``Sigma`` the covariance of per-sample
gradients ``g_i`` over the ``N`` samples (the data set taken as the population):
``tr(Sigma) = (1/N) sum_i |g_i|^2 - |G|^2``. ``B_simple`` is the batch size around which
minibatch SGD stops gaining from larger batches ("critical batch size").

Methods:

* ``"per_sample"``: per-sample gradients with ``torch.func`` (``vmap`` of ``grad``) in chunks
  of ``chunk_size`` samples (memory ``chunk_size * D``); exact.
* ``"two_batch"``: when per-sample gradients are unavailable (layers without ``vmap``
  support): ``|G|^2`` from the full gradient and ``E|G_b|^2 = |G|^2 + tr(Sigma) (N - b) /
  ((N - 1) b)`` from ``num_small`` minibatches of ``b`` distinct samples, solved for
  ``tr(Sigma)`` (the unbiased small/large batch estimator of McCandlish et al., Appendix A,
  with the full data as the large batch).

Reference: S. McCandlish, J. Kaplan, D. Amodei, OpenAI Dota Team, "An empirical model of
large-batch training", arXiv:1812.06162 (2018).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from curvlens._rng import resolve_generator
from curvlens.diagnostics._checks import check_int
from curvlens.diagnostics._subsets import indexable
from curvlens.operators._data import collect_batches, to_device
from curvlens.operators._params import select_params
from curvlens.operators._state import preserved_state
from curvlens.operators.model import resolve_loss_form, call_model
from curvlens.results import RunInfo, register_result

__all__ = ["GradientNoiseResult", "gradient_noise_scale"]

log = logging.getLogger("curvlens.diagnostics")


@register_result("gradient_noise")
@dataclass(frozen=True)
class GradientNoiseResult:
    """The simple gradient noise scale and its parts.

    Attributes:
        b_simple: ``tr(Sigma) / |G|^2`` (inf when ``G = 0``, NaN when not measured).
        trace_sigma: ``tr(Sigma)``, trace of the per-sample gradient covariance.
        grad_norm_sq: ``|G|^2`` of the full-data mean gradient.
        method: ``"per_sample"`` or ``"two_batch"``.
        num_samples: ``N``.
        info: run metadata (``matvecs`` 0: gradients only; seed of the two-batch draws).
    """

    b_simple: float
    trace_sigma: float
    grad_norm_sq: float
    method: str
    num_samples: int
    info: RunInfo


class _LossOf(nn.Module):
    def __init__(self, model: nn.Module, loss_fn: Callable, form: str):
        super().__init__()
        self.m = model
        object.__setattr__(self, "_loss", loss_fn)
        self.form = form

    def forward(self, batch):
        if self.form == "criterion":
            return self._loss(call_model(self.m, batch[0]), batch[1]).reshape(())
        return self._loss(self.m, batch).reshape(())


def _per_sample(wrap, names, params, batches, chunk, device, dtype):
    from torch.func import functional_call, grad, vmap

    base = tuple(p.detach() for p in params)

    def loss_one(pvals, sample):
        one = tuple(t.unsqueeze(0) for t in sample)
        return functional_call(wrap, {"m." + n: v for n, v in zip(names, pvals)}, (one,))

    g_one = vmap(grad(loss_one), in_dims=(None, 0))
    total = None
    sq, n = torch.zeros((), dtype=torch.float64), 0
    for b in batches:
        b = tuple(to_device(t, device, dtype) for t in b)
        size = int(b[0].shape[0])
        for s in range(0, size, chunk):
            part = tuple(t[s:s + chunk] for t in b)
            gs = g_one(base, part)
            flat = torch.cat([g.reshape(g.shape[0], -1) for g in gs], 1).double()
            sq += (flat * flat).sum()
            total = flat.sum(0) if total is None else total + flat.sum(0)
            n += flat.shape[0]
    G = total / n
    gn = float(G @ G)
    return float(sq / n) - gn, gn, n


def _grad_of(wrap, params, batch, device, dtype) -> torch.Tensor:
    loss = wrap(tuple(to_device(t, device, dtype) for t in batch))
    gs = torch.autograd.grad(loss, params, allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for g, p in zip(gs, params)]).double()


def gradient_noise_scale(
    model: nn.Module,
    loss_fn: Callable,
    data: Any,
    *,
    params: Any = None,
    method: str = "auto",
    chunk_size: int = 64,
    num_small: int = 8,
    small_batch: int | None = None,
    mode: str = "eval",
    generator: torch.Generator | int | None = None,
) -> GradientNoiseResult:
    """Estimate ``B_simple = tr(Sigma) / |G|^2`` over all samples of ``data``.

    Args:
        model, loss_fn, data, params, mode: as for :class:`~curvlens.operators.HessianOperator`;
            the loss of a one-sample batch is the per-sample loss.
        method: ``"auto"`` (per-sample, falling back to two-batch if ``vmap`` fails),
            ``"per_sample"`` or ``"two_batch"``.
        chunk_size: samples per ``vmap`` call (memory ``chunk_size * D`` floats).
        num_small, small_batch: two-batch method: number and size of the small minibatches
            (default size ``max(1, min(32, N // 4))``).
        generator: draws of the two-batch method.

    Example:
        >>> import torch
        >>> x = torch.randn(32, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        >>> model = torch.nn.Linear(3, 1, bias=False).double()
        >>> res = gradient_noise_scale(model, torch.nn.MSELoss(), (x, x[:, :1]))
        >>> res.method, res.b_simple > 0
        ('per_sample', True)
    """
    t0 = time.perf_counter()
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    if method not in ("auto", "per_sample", "two_batch"):
        raise ValueError(f"method: expected 'auto', 'per_sample' or 'two_batch', got {method!r}; use method='auto'")
    chunk = check_int(chunk_size, "chunk_size", low=1, fix="it is the number of samples per vmap call")
    num_small = check_int(num_small, "num_small", low=2, fix="use num_small=8")
    form = resolve_loss_form(loss_fn, "auto")
    names, plist = select_params(model, params)
    wrap = _LossOf(model, loss_fn, form)
    device, dtype = plist[0].device, plist[0].dtype
    gen = resolve_generator(generator)
    batches = collect_batches(data)
    status = ""
    with preserved_state(model, mode, device):
        if method in ("auto", "per_sample"):
            try:
                if not all(isinstance(b, (tuple, list)) and all(isinstance(t, torch.Tensor) for t in b) for b in batches):
                    raise TypeError("per-sample gradients need batches that are tuples of tensors")
                tr, gn, n = _per_sample(wrap, names, plist, batches, chunk, device, dtype)
                used = "per_sample"
            except (RuntimeError, TypeError, ValueError) as e:
                if method == "per_sample":
                    raise
                log.info("per-sample gradients unavailable (%s); using the two-batch estimator", e)
                status = f"per-sample gradients unavailable ({str(e).splitlines()[0][:120]}); "
                method = "two_batch"
        if method == "two_batch":
            samples, why = indexable(data)
            if samples is None:
                info = RunInfo(seed=int(gen.initial_seed()), matvecs=0, wall_time=time.perf_counter() - t0,
                               converged=False, status=status + "two-batch estimator impossible: " + why)
                return GradientNoiseResult(math.nan, math.nan, math.nan, "two_batch", 0, info)
            n = samples.num_samples
            b = max(1, min(32, n // 4)) if small_batch is None else check_int(small_batch, "small_batch", low=1)
            G = _grad_of(wrap, plist, samples.parts, device, dtype)
            gn = float(G @ G)
            small = []
            for _ in range(num_small):
                g = _grad_of(wrap, plist, samples.subset(torch.randperm(n, generator=gen)[:b]), device, dtype)
                small.append(float(g @ g))
            fpc = (n - b) / ((n - 1) * b) if n > 1 else 0.0
            tr = (sum(small) / len(small) - gn) / fpc if fpc > 0 else math.nan
            used = "two_batch"
    b_simple = tr / gn if gn > 0 else (math.inf if tr > 0 else math.nan)
    info = RunInfo(seed=int(gen.initial_seed()) if used == "two_batch" else None, matvecs=0,
                   wall_time=time.perf_counter() - t0, converged=math.isfinite(b_simple),
                   status=status + f"{used} estimate over {n} samples", dtype=str(dtype), device=str(device))
    return GradientNoiseResult(b_simple=float(b_simple), trace_sigma=float(tr), grad_norm_sq=float(gn), method=used,
                               num_samples=int(n), info=info)
