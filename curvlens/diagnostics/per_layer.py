"""Per-layer breakdown: trace and top eigenvalue of each parameter block, and their shares.

For each block ``b`` (``op.blocks``, one per module by default) with diagonal block ``A_bb``:

* ``traces[b] = tr(A_bb)`` (from one per-block Krylov/Hutchinson trace run, free of extra
  products), ``trace_share[b] = tr(A_bb) / tr(A)``; the shares add up to 1.
* ``lambda_max[b]``: the top eigenvalue of ``A_bb`` alone (the sharpness a per-layer
  optimizer sees; by Cauchy interlacing ``lambda_max[b] <= lambda_max(A)``), by
  :func:`~curvlens.linalg.top_eigenpairs` on ``op.block(name)`` with a small budget.
* ``lambda_max_share[b] = |u_b|^2``: the share of the full top eigenvector ``u`` that lies in
  block ``b`` (where the sharpest direction lives); the shares add up to 1.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass

import torch

from curvlens._rng import resolve_generator
from curvlens.estimators import TraceResult
from curvlens.linalg import EigenResult, top_eigenpairs
from curvlens.results import RunInfo, register_result

__all__ = ["PerLayerResult", "per_layer_breakdown"]


@register_result("per_layer")
@dataclass(frozen=True)
class PerLayerResult:
    """Trace and top eigenvalue per parameter block.

    Attributes:
        block_names: names of the blocks.
        sizes: int64 number of parameters per block.
        traces, trace_stderr: float64 block traces and standard errors (NaN if not measured).
        lambda_max: float64 top eigenvalue of each diagonal block (NaN if not measured).
        lambda_max_residual: float64 true residuals of those.
        trace_share: float64 ``traces / sum(traces)``.
        lambda_max_share: float64 ``|u_b|^2`` of the full top eigenvector ``u``.
        info: products spent on the block eigenvalues, time, seed.
    """

    block_names: tuple[str, ...]
    sizes: torch.Tensor
    traces: torch.Tensor
    trace_stderr: torch.Tensor
    lambda_max: torch.Tensor
    lambda_max_residual: torch.Tensor
    trace_share: torch.Tensor
    lambda_max_share: torch.Tensor
    info: RunInfo


def per_layer_breakdown(op, *, trace: TraceResult | None = None, top: EigenResult | None = None,
                        max_matvecs: int | None = None, rtol: float = 1e-2, deadline: float | None = None,
                        generator: torch.Generator | int | None = None) -> PerLayerResult:
    """Per-block traces, top eigenvalues and shares (definitions in the module docstring).

    Args:
        op: the full operator (its ``blocks`` define the layers).
        trace: a per-block trace result (``per_block=True``) of ``op``, or None (traces NaN).
        top: the full top eigenpair(s) of ``op`` for ``lambda_max_share``, or None (NaN).
        max_matvecs: products for all block eigenvalues together (default ``30`` per block);
            with fewer than 2 per block they are not computed (NaN, noted in the status).
        rtol: tolerance of the block eigenvalues.
        deadline: a ``time.perf_counter()`` value after which remaining blocks are skipped.
        generator: starts of the block eigensolvers.

    Example:
        >>> import torch
        >>> from curvlens.operators import Block, DenseOperator
        >>> A = torch.diag(torch.tensor([1.0, 3.0, 2.0, 2.0], dtype=torch.float64))
        >>> op = DenseOperator(A, blocks=[Block("a", 0, 2), Block("b", 2, 4)])
        >>> res = per_layer_breakdown(op, generator=0)
        >>> [round(float(x), 6) for x in res.lambda_max]
        [3.0, 2.0]
    """
    if trace is not None and (not isinstance(trace, TraceResult) or tuple(trace.block_names) != tuple(op.block_names())):
        raise ValueError("trace: expected a TraceResult of this operator computed with per_block=True "
                         f"(blocks {op.block_names()}), got {getattr(trace, 'block_names', type(trace).__name__)!r}; "
                         "pass hutchinson_trace(op, ..., per_block=True)")
    t0 = time.perf_counter()
    gen = resolve_generator(generator)
    blocks = op.blocks
    nb = len(blocks)
    budget = 30 * nb if max_matvecs is None else int(max_matvecs)
    per = budget // max(nb, 1)
    nan = torch.full((nb,), math.nan, dtype=torch.float64)
    lmax, lres = nan.clone(), nan.clone()
    spent, notes, unconverged = 0, [], 0
    if per >= 2:
        for i, b in enumerate(blocks):
            if deadline is not None and time.perf_counter() > deadline:
                notes.append(f"time budget: block eigenvalues from block {b.name!r} on not computed")
                break
            sub = op.block(b.name)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                r = top_eigenpairs(sub, 1, rtol=rtol, max_matvecs=min(per, max(2, 150)), generator=gen)
            spent += r.info.matvecs
            lmax[i], lres[i] = float(r.eigenvalues[0]), float(r.residuals[0])
            unconverged += int(not bool(r.converged[0]))
    else:
        notes.append(f"budget of {budget} products too small for {nb} block eigenvalues (2 each needed)")
    if unconverged:
        notes.append(f"{unconverged} block eigenvalue(s) not certified (rtol={rtol:g}); raise max_matvecs")
    if trace is not None:
        tr, tse = trace.block_estimates.double(), trace.block_stderr.double()
        total = float(tr.sum())
        share = tr / total if total != 0 else nan.clone()
    else:
        tr, tse, share = nan.clone(), nan.clone(), nan.clone()
    if top is not None:
        u = top.eigenvectors[:, 0].double()
        ushare = torch.stack([(u[b.slice] ** 2).sum() for b in blocks]) / (u @ u)
    else:
        ushare = nan.clone()
    info = RunInfo(seed=int(gen.initial_seed()), matvecs=int(spent), wall_time=time.perf_counter() - t0,
                   converged=not notes, status="; ".join(notes) or f"{nb} block(s)", dtype=str(op.dtype),
                   device=str(op.device))
    return PerLayerResult(
        block_names=tuple(b.name for b in blocks), sizes=torch.tensor([b.size for b in blocks], dtype=torch.int64),
        traces=tr, trace_stderr=tse, lambda_max=lmax, lambda_max_residual=lres, trace_share=share,
        lambda_max_share=ushare, info=info,
    )
