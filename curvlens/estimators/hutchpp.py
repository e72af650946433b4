"""Hutch++: Hutchinson's estimator with low-rank deflation."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch

from curvlens._rng import resolve_generator
from curvlens.estimators._common import (
    apply_chunked,
    call_back,
    check_budget,
    check_chunk,
    check_operator,
    mean_stderr,
    next_round,
    orth,
    rel,
)
from curvlens.estimators._deflation import deflated_row_samples
from curvlens.estimators._probes import check_probe_kind, probe_vectors
from curvlens.estimators.trace import TraceResult, make_trace_result
from curvlens.results import RunTimer

if TYPE_CHECKING:
    from curvlens.operators.base import CurvatureOperator


def hutchpp_sketch(op, num_sketch: int, *, probe: str, chunk: int, gen: torch.Generator):
    """``Q = orth(A S)`` for ``num_sketch`` probes ``S``, and ``Z = A Q``. Costs ``num_sketch + rank``."""
    S = probe_vectors(op.dim, num_sketch, kind=probe, dtype=op.dtype, device=op.device, generator=gen)
    Q = orth(apply_chunked(op, S, chunk))
    Z = apply_chunked(op, Q, chunk) if Q.shape[1] else Q.clone()
    return Q, Z


def deflated_probe_rows(op, Q, Z, k: int, *, probe: str, chunk: int, gen: torch.Generator) -> torch.Tensor:
    """(D, k) per-row samples of ``diag(A)`` from ``k`` probes on the residual of ``P = Q Q^T``."""
    G = probe_vectors(op.dim, k, kind=probe, dtype=op.dtype, device=op.device, generator=gen)
    U = G - Q @ (Q.T @ G)
    return deflated_row_samples(Q, Z, G, U, apply_chunked(op, U, chunk))


def deflated_trace(op, Q, Z, *, m: int, target, mx: int, method: str, probe: str, chunk: int,
                   gen: torch.Generator, timer: RunTimer, per_block: bool, callback) -> TraceResult:
    """Finish a deflated estimator: residual probes in rounds (fixed budget ``m`` or adaptive up
    to ``mx``), then the result. Shared by Hutch++ and the Krylov estimator."""
    budget = m if target is None else mx
    parts: list[torch.Tensor] = []
    new = m - timer.matvecs
    if Q.shape[1] >= op.dim:  # the basis spans everything: exact, no residual left to probe
        zero = torch.zeros(op.dim, 2, dtype=op.dtype, device=op.device)
        parts.append(deflated_row_samples(Q, Z, zero, zero, zero))
        new = 0
    while new > 0:
        parts.append(deflated_probe_rows(op, Q, Z, new, probe=probe, chunk=chunk, gen=gen))
        call_back(callback, timer.matvecs, budget)
        if target is None:
            break
        samples = torch.cat(parts, 1).sum(0)
        est, se = mean_stderr(samples)
        new = next_round(samples.numel(), timer.matvecs, rel(float(se), float(est)), target, mx)
    return make_trace_result(
        torch.cat(parts, 1), op.blocks if per_block else None, method=method, probe=probe, timer=timer,
        target=target, max_matvecs=mx,
    )


def hutchpp_trace(
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
    """Hutch++ trace estimator: exact trace on a sketched top subspace + Hutchinson on the rest.

    Reference: R. A. Meyer, C. Musco, C. Musco, D. P. Woodruff, "Hutch++: Optimal Stochastic
    Trace Estimation", SOSA 2021. With ``m`` products it reaches relative error ``O(1/m)`` on
    PSD matrices (Hutchinson: ``O(1/sqrt(m))``).

    A third of the budget sketches ``Q = orth(A S)``, up to a third computes ``A Q`` and
    ``tr(Q^T A Q)`` exactly, and the rest estimates ``tr((I-QQ^T) A (I-QQ^T))`` with
    Hutchinson. ``stderr`` is the sample standard error of that residual part (the deflated
    part carries no sampling error given ``Q``). If ``A S`` has numerical rank below the sketch
    size the unused products go to the residual, and for ``rank(A) <= num_matvecs // 3`` the
    estimate is exact. Per-block traces use the exact block split of the deflated part (see
    :mod:`curvlens.estimators._deflation`), so block estimates add up to the total.

    Args:
        op: a :class:`~curvlens.operators.base.CurvatureOperator`.
        num_matvecs: total products of the fixed budget (at least 4); in adaptive mode, the
            first round (it fixes the sketch size ``num_matvecs // 3``).
        probe: ``"rademacher"`` (default) or ``"gaussian"``, for sketch and residual probes.
        target_rstderr: adaptive mode: add residual probes until
            ``stderr / |estimate| <= target_rstderr`` or ``max_matvecs`` is spent.
        max_matvecs: budget cap of adaptive mode (default ``10 * num_matvecs``).
        per_block: also estimate each block's trace (``op.blocks``), free of extra products.
        chunk_size: vectors per ``op.matmat`` call.
        generator: ``torch.Generator``, int seed or None (fresh seed, recorded in ``info``).
        callback: ``callback(matvecs_done, matvecs_budget)`` after each stage.

    Returns:
        :class:`TraceResult` with ``method="hutchpp"``; ``num_probes`` counts residual probes.

    Example:
        >>> import torch, curvlens
        >>> A = torch.diag(torch.tensor([100.0, 10.0, 1.0, 0.1] + [0.0] * 60, dtype=torch.float64))
        >>> res = hutchpp_trace(curvlens.DenseOperator(A), 30, probe="gaussian", generator=0)
        >>> round(res.estimate, 8)  # rank 4 <= 30 // 3: exact
        111.1
    """
    op = check_operator(op)
    m, target, mx = check_budget(num_matvecs, target_rstderr, max_matvecs, minimum=4, method="hutchpp_trace")
    probe = check_probe_kind(probe)
    chunk = check_chunk(chunk_size)
    gen = resolve_generator(generator)
    timer = RunTimer(op, gen)
    Q, Z = hutchpp_sketch(op, m // 3, probe=probe, chunk=chunk, gen=gen)
    call_back(callback, timer.matvecs, m if target is None else mx)
    return deflated_trace(op, Q, Z, m=m, target=target, mx=mx, method="hutchpp", probe=probe, chunk=chunk,
                          gen=gen, timer=timer, per_block=per_block, callback=callback)


__all__ = ["hutchpp_trace", "deflated_trace"]
