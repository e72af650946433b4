"""Stochastic trace estimation: the :class:`TraceResult` and Hutchinson's estimator.

Which estimator to use:

* :func:`~curvlens.estimators.krylov_trace` (default recommendation): exact trace on a block
  Krylov space plus Hutchinson on its complement, the split chosen from a pilot and falling
  back to plain Hutchinson on flat spectra (never worse than it beyond sampling noise on the
  spectra we measured). On Hessian-shaped spectra (a few outliers over a wide bulk) the
  Krylov space holds far more of the trace than a random sketch, so it has the lowest error
  per product we measured; its standard error is honest (from the spread of the probes).
* :func:`~curvlens.estimators.xtrace`: the best of the sketch-based estimators, exact for
  rank < ``num_matvecs / 2``; its products come in two large batches (no sequential Krylov
  steps), and its leave-one-out standard error runs low at small budgets.
* :func:`~curvlens.estimators.hutchpp_trace`: nearly as accurate as XTrace, cheaper
  bookkeeping, and its adaptive mode adds single probes (XTrace's adds pairs).
* :func:`hutchinson_trace`: for per-probe streaming with the smallest memory, or to
  reproduce PyHessian-style numbers (``krylov_trace`` already falls back to it where
  deflation does not pay). Its error falls only like ``1/sqrt(num_matvecs)``,
  while the deflated estimators reach ``1/num_matvecs`` on decaying spectra.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

import torch

from curvlens._rng import resolve_generator
from curvlens.estimators._common import (
    block_sums,
    call_back,
    check_budget,
    check_chunk,
    check_operator,
    finish_status,
    mean_stderr,
    next_round,
    rel,
)
from curvlens.estimators._probes import check_probe_kind, probe_vectors
from curvlens.operators.base import Block
from curvlens.results import RunInfo, RunTimer, register_result

if TYPE_CHECKING:
    from curvlens.operators.base import CurvatureOperator


@register_result("trace_estimate")
@dataclass(frozen=True)
class TraceResult:
    """A stochastic estimate of ``tr(A)`` (and optionally of each block's trace).

    Attributes:
        estimate: the trace estimate.
        stderr: its standard error (NaN when fewer than two independent samples).
        block_names: names of the blocks (``op.blocks``) when ``per_block=True``, else ``()``.
        block_estimates: float64 tensor of the block traces (same order); they add up to
            ``estimate`` when the blocks cover the whole vector.
        block_stderr: float64 tensor of their standard errors.
        num_matvecs: operator products spent.
        num_probes: number of independent random samples behind ``stderr``.
        probe: ``"rademacher"`` or ``"gaussian"``.
        method: ``"hutchinson"``, ``"hutchpp"``, ``"krylov"`` or ``"xtrace"``.
        info: run metadata (seed, matvecs, time, converged, status).
    """

    estimate: float
    stderr: float
    block_names: tuple[str, ...]
    block_estimates: torch.Tensor
    block_stderr: torch.Tensor
    num_matvecs: int
    num_probes: int
    probe: str
    method: str
    info: RunInfo

    @property
    def rstderr(self) -> float:
        """Relative standard error ``stderr / |estimate|`` (inf when the estimate is 0)."""
        return rel(self.stderr, self.estimate)

    def block_dict(self) -> dict[str, tuple[float, float]]:
        """``{block name: (estimate, stderr)}``."""
        return {
            n: (float(e), float(s)) for n, e, s in zip(self.block_names, self.block_estimates, self.block_stderr)
        }


def trace_result_from_samples(
    totals: torch.Tensor,
    block_samples: torch.Tensor | None,
    blocks: Sequence[Block] | None,
    *,
    method: str,
    probe: str,
    timer: RunTimer,
    target: float | None,
    max_matvecs: int,
) -> TraceResult:
    """Build a :class:`TraceResult` from per-probe trace samples ``totals`` (k,) and, with
    ``blocks``, per-block samples ``block_samples`` (num_blocks, k), float64."""
    est, se = mean_stderr(totals)
    est, se = float(est), float(se)
    if blocks:
        b_est, b_se = mean_stderr(block_samples, dim=1)
        names = tuple(b.name for b in blocks)
    else:
        b_est = b_se = torch.zeros(0, dtype=torch.float64)
        names = ()
    r = rel(se, est)
    converged = target is None or r <= target
    status = finish_status(method, target, converged, timer.matvecs, r, max_matvecs)
    return TraceResult(
        estimate=est,
        stderr=se,
        block_names=names,
        block_estimates=b_est,
        block_stderr=b_se,
        num_matvecs=timer.matvecs,
        num_probes=int(totals.numel()),
        probe=probe,
        method=method,
        info=timer.info(converged, status),
    )


def make_trace_result(
    rows: torch.Tensor,
    blocks: Sequence[Block] | None,
    *,
    method: str,
    probe: str,
    timer: RunTimer,
    target: float | None,
    max_matvecs: int,
) -> TraceResult:
    """Build a :class:`TraceResult` from (D, k) per-row samples (column i: one sample of diag(A))."""
    return trace_result_from_samples(rows.sum(0), block_sums(rows, blocks) if blocks else None, blocks,
                                     method=method, probe=probe, timer=timer, target=target,
                                     max_matvecs=max_matvecs)


def hutchinson_trace(
    op: CurvatureOperator,
    num_matvecs: int = 100,
    *,
    probe: str = "rademacher",
    target_rstderr: float | None = None,
    max_matvecs: int | None = None,
    per_block: bool = False,
    chunk_size: int = 64,
    generator: torch.Generator | int | None = None,
    callback: Callable[[int, int], None] | None = None,
) -> TraceResult:
    """Hutchinson's trace estimator ``tr(A) ~ (1/m) sum_i v_i^T A v_i``.

    Reference: M. F. Hutchinson, "A stochastic estimator of the trace of the influence matrix
    for Laplacian smoothing splines", Comm. Stat. Simul. Comput. 18 (1989). With Rademacher
    probes the variance is ``2 (||A||_F^2 - sum_i A_ii^2) / m`` (Avron & Toledo, J. ACM 2011).

    Args:
        op: a :class:`~curvlens.operators.base.CurvatureOperator`.
        num_matvecs: products (= probes) of the fixed budget, or of the first round in
            adaptive mode. At least 2 (for a standard error).
        probe: ``"rademacher"`` (default, lower variance) or ``"gaussian"``.
        target_rstderr: adaptive mode: keep adding probes until
            ``stderr / |estimate| <= target_rstderr`` or ``max_matvecs`` is spent.
        max_matvecs: budget cap of adaptive mode (default ``10 * num_matvecs``).
        per_block: also estimate each block's trace (``op.blocks``) from the same products
            via ``v_b^T (A v)_b``; free of extra products.
        chunk_size: probes per ``op.matmat`` call (memory bound).
        generator: ``torch.Generator``, int seed or None (fresh seed, recorded in ``info``).
        callback: ``callback(matvecs_done, matvecs_budget)`` after each chunk.

    Returns:
        :class:`TraceResult`; ``info.converged`` is False (with a warning) when the target
        was not reached.

    Example:
        >>> import torch, curvlens
        >>> op = curvlens.DenseOperator(torch.diag(torch.arange(1.0, 11.0, dtype=torch.float64)))
        >>> res = hutchinson_trace(op, 20, generator=0)
        >>> res.estimate  # exact for a diagonal matrix with Rademacher probes
        55.0
    """
    op = check_operator(op)
    m, target, mx = check_budget(num_matvecs, target_rstderr, max_matvecs, minimum=2, method="hutchinson_trace")
    probe = check_probe_kind(probe)
    chunk = check_chunk(chunk_size)
    gen = resolve_generator(generator)
    timer = RunTimer(op, gen)
    budget = m if target is None else mx
    parts: list[torch.Tensor] = []
    new, used = m, 0
    while new > 0:
        for i in range(0, new, chunk):
            V = probe_vectors(op.dim, min(chunk, new - i), kind=probe, dtype=op.dtype, device=op.device, generator=gen)
            parts.append((V * op.matmat(V)).double())
            used += V.shape[1]
            call_back(callback, used, budget)
        if target is None:
            break
        est, se = mean_stderr(torch.cat(parts, 1).sum(0))
        new = next_round(used, used, rel(float(se), float(est)), target, mx)
    rows = torch.cat(parts, 1)
    return make_trace_result(
        rows, op.blocks if per_block else None, method="hutchinson", probe=probe, timer=timer, target=target,
        max_matvecs=mx,
    )


__all__ = ["TraceResult", "hutchinson_trace", "make_trace_result", "trace_result_from_samples"]
