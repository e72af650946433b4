"""Gradient noise scale ``B_simple = tr(Sigma) / |G|^2`` (McCandlish et al. 2018).

``G`` is the full-data gradient of the mean loss and ``Sigma`` the covariance of per-sample
gradients ``g_i`` over the ``N`` samples (the data set taken as the population):
``tr(Sigma) = (1/N) sum_i |g_i|^2 - |G|^2``. ``B_simple`` is the batch size around which
minibatch SGD stops gaining from larger batches ("critical batch size").

Methods:

* ``"per_sample"``: per-sample gradients with ``torch.func`` (``vmap`` of ``grad``) in chunks
  of ``chunk_size`` samples (memory ``chunk_size * D``), summed into float64 accumulators one
  parameter slice at a time (no float64 copy of a chunk); exact.
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
from curvlens.problem import Problem
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


#: per-sample gradient memory of the default ``chunk_size`` (samples per vmap call): about this many bytes
CHUNK_BYTES = 64 * 2**20
#: parameters per float64 slice when per-sample gradients are accumulated
SUM_COLUMNS = 1 << 16


def default_chunk_size(dim: int, itemsize: int) -> int:
    """Samples per ``vmap`` call: at most 64, and a chunk of gradients within :data:`CHUNK_BYTES`."""
    return max(1, min(64, CHUNK_BYTES // max(1, dim * itemsize)))


def _accumulate(flat: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
    """Add the rows of ``flat`` (n, D) to ``total`` (float64) and return ``sum |g_i|^2``, widening
    one column slice at a time to float64 (no float64 copy of the chunk)."""
    sq = torch.zeros((), dtype=torch.float64, device=flat.device)
    for j in range(0, flat.shape[1], SUM_COLUMNS):
        part = flat[:, j:j + SUM_COLUMNS].double()
        sq += (part * part).sum()
        total[j:j + SUM_COLUMNS] += part.sum(0)
    return sq


def _per_sample(problem: Problem, chunk: int) -> tuple[float, float, int]:
    total = torch.zeros(problem.dim, dtype=torch.float64, device=problem.device)
    sq, n = torch.zeros((), dtype=torch.float64), 0
    failed = None
    try:
        for flat in problem.per_sample_gradients(chunk_size=chunk):
            sq += _accumulate(flat, total).cpu()
            n += flat.shape[0]
            del flat
    except (RuntimeError, TypeError, ValueError) as e:
        failed = e
    if problem.process_group is not None:  # one all-reduce of [failed, n, sum |g_i|^2, sum g_i]
        head = torch.tensor([float(failed is not None), float(n), float(sq)], dtype=torch.float64)
        buf = problem.reduce_(torch.cat([head.to(total.device), total]), "per-sample gradient sums")
        if failed is None and float(buf[0]) > 0:
            failed = RuntimeError("per-sample gradients failed on another rank of the process group")
        n, sq, total = int(buf[1].item()), buf[2].cpu(), buf[3:]
    if failed is not None:
        raise failed
    G = total / n
    gn = float(G @ G)
    return float(sq / n) - gn, gn, n


def gradient_noise_scale(
    model: nn.Module,
    loss_fn: Callable,
    data: Any,
    *,
    params: Any = None,
    method: str = "auto",
    chunk_size: int | None = None,
    num_small: int = 8,
    small_batch: int | None = None,
    mode: str = "eval",
    generator: torch.Generator | int | None = None,
    process_group: Any = None,
) -> GradientNoiseResult:
    """Estimate ``B_simple = tr(Sigma) / |G|^2`` over all samples of ``data``.

    Args:
        model, loss_fn, data, params, mode: as for :class:`~curvlens.operators.HessianOperator`;
            the loss of a one-sample batch is the per-sample loss.
        method: ``"auto"`` (per-sample, falling back to two-batch if ``vmap`` fails),
            ``"per_sample"`` or ``"two_batch"``.
        chunk_size: samples per ``vmap`` call (memory about ``2 * chunk_size * D`` floats); default
            :func:`default_chunk_size`: at most 64 samples and about 64 MB of gradients per call.
        num_small, small_batch: two-batch method: number and size of the small minibatches
            (default size ``max(1, min(32, N // 4))``).
        generator: draws of the two-batch method (the same seed on every rank of a group).
        process_group: None, ``"world"`` or a process group (as for :class:`~curvlens.Problem`):
            ``data`` is this rank's shard and the result is the one over the union of the shards.

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
    if chunk_size is not None:
        chunk_size = check_int(chunk_size, "chunk_size", low=1, fix="it is the number of samples per vmap call")
    num_small = check_int(num_small, "num_small", low=2, fix="use num_small=8")
    problem = Problem(model, loss_fn, data, params=params, mode=mode, process_group=process_group)
    chunk = chunk_size if chunk_size is not None else default_chunk_size(problem.dim, problem.dtype.itemsize)
    device, dtype = problem.device, problem.dtype
    gen = resolve_generator(generator)
    status = ""
    if method in ("auto", "per_sample"):
        try:
            tr, gn, n = _per_sample(problem, chunk)
            used = "per_sample"
        except (RuntimeError, TypeError, ValueError) as e:
            if method == "per_sample":
                raise
            log.info("per-sample gradients unavailable (%s); using the two-batch estimator", e)
            status = f"per-sample gradients unavailable ({str(e).splitlines()[0][:120]}); "
            method = "two_batch"
    if method == "two_batch":
        samples, why = indexable(data, process_group=problem.process_group, device=device)
        if samples is None:
            info = RunInfo(seed=int(gen.initial_seed()), matvecs=0, wall_time=time.perf_counter() - t0,
                           converged=False, status=status + "two-batch estimator impossible: " + why)
            return GradientNoiseResult(math.nan, math.nan, math.nan, "two_batch", 0, info)
        n = samples.num_samples
        b = max(1, min(32, n // 4)) if small_batch is None else check_int(small_batch, "small_batch", low=1)
        whole = problem if problem.process_group is not None else problem.with_data(samples.parts)
        G = whole.gradient(flat=True).double()
        gn = float(G @ G)
        small = []
        for _ in range(num_small):  # on a group every rank draws the same indices and keeps its own
            g = problem.with_data(samples.subset(torch.randperm(n, generator=gen)[:b])).gradient(flat=True).double()
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
