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
from curvlens.estimators._deflation import deflated_diagonal, deflated_slice_sums, plain_slice_sums
from curvlens.estimators._probes import check_probe_kind, probe_vectors
from curvlens.estimators.trace import TraceResult, trace_result_from_samples
from curvlens.results import RunTimer

if TYPE_CHECKING:
    from curvlens.operators.base import CurvatureOperator


def hutchpp_sketch(op, num_sketch: int, *, probe: str, chunk: int, gen: torch.Generator):
    """``Q = orth(A S)`` for ``num_sketch`` probes ``S``, and ``Z = A Q``. Costs ``num_sketch + rank``."""
    S = probe_vectors(op.dim, num_sketch, kind=probe, dtype=op.dtype, device=op.device, generator=gen)
    Q = orth(apply_chunked(op, S, chunk))
    Z = apply_chunked(op, Q, chunk) if Q.shape[1] else Q.clone()
    return Q, Z


#: residual probes processed together: each group is reduced to per-slice sums before the next.
#: One at a time: a product of 4 vectors needs 308 MB of working memory on a 1.07M-parameter MLP
#: against 60 MB for one, at the same CPU time per probe (``benchmarks/results/analyze_memory.md``)
PROBE_GROUP = 1
#: rows per slice of the streamed row sums (one slice at a time is widened to float64)
ROW_SLAB = 1 << 16


def _residual_probes(dim: int, k: int, *, probe: str, dtype, device, gen: torch.Generator):
    """The ``k`` residual probes of :func:`~curvlens.estimators.probe_vectors`, stored compactly.

    Returns ``columns(i, j)`` giving probes ``i .. j-1`` as a (D, j - i) tensor equal to the
    same columns of ``probe_vectors(dim, k, ...)``. Rademacher signs are kept as booleans (one
    byte per entry instead of a float block plus its int64 draw); on a CPU generator they are
    drawn in row slabs, which consumes the generator exactly as one (D, k) draw does.
    """
    if probe == "gaussian" or k == 0:
        V = probe_vectors(dim, k, kind=probe, dtype=dtype, device=device, generator=gen)
        return lambda i, j: V[:, i:j]
    gdev = gen.device
    if gdev.type == "cpu":
        bits = torch.empty(dim, k, dtype=torch.bool, device=gdev)
        for r in range(0, dim, ROW_SLAB):
            bits[r:r + ROW_SLAB] = torch.randint(0, 2, (min(ROW_SLAB, dim - r), k), generator=gen, device=gdev)
    else:  # other generators: one draw, as probe_vectors does
        bits = torch.randint(0, 2, (dim, k), generator=gen, device=gdev).bool()
    return lambda i, j: bits[:, i:j].to(dtype).mul_(2).sub_(1).to(device)


def paired_probe_sums(op, Q, Z, det, k: int, blocks, *, probe: str, chunk: int, gen: torch.Generator,
                      plain: bool = True) -> tuple[torch.Tensor, ...]:
    """Deflated and plain samples of ``k`` probes, reduced :data:`PROBE_GROUP` probes at a time.

    For each probe ``g`` (``probe_vectors(dim, k)``): the deflated sample (row sums of
    ``deflated_row_samples``: ``tr(2PA - PAP) + g^T (I-P) A (I-P) g`` for ``P = Q Q^T``) and, with
    ``plain``, Hutchinson's ``g^T A g`` of the same probe, from the same product
    (``A g = A (I-P) g + Z Q^T g``). No (D, k) array is held.

    Returns:
        ``(x, x_blocks, y, y_blocks)``: float64 tensors (k,), (num_blocks, k), (k,), (num_blocks, k);
        ``y`` and ``y_blocks`` are empty (0 columns) without ``plain``.
    """
    D = op.dim
    columns = _residual_probes(D, k, probe=probe, dtype=op.dtype, device=op.device, gen=gen)
    slabs = [slice(r, min(r + ROW_SLAB, D)) for r in range(0, D, ROW_SLAB)]
    bslices = [b.slice for b in blocks] if blocks else []
    xs, xbs, ys, ybs = [], [], [], []
    step = min(PROBE_GROUP, chunk)
    for i in range(0, k, step):
        G = columns(i, min(i + step, k))
        QtG = Q.T @ G
        U = G - Q @ QtG
        AU = apply_chunked(op, U, chunk)
        del U
        if plain:
            AG = AU + Z @ QtG
            ys.append(plain_slice_sums(G, AG, slabs).sum(0))
            ybs.append(plain_slice_sums(G, AG, bslices))
            del AG
        AU -= Q @ (Q.T @ AU)  # the residual of deflated_row_samples, in place
        xs.append(deflated_slice_sums(det, G, AU, slabs).sum(0))
        xbs.append(deflated_slice_sums(det, G, AU, bslices))
        del G, AU
    empty = torch.zeros(0, dtype=torch.float64, device=det.device)
    nb = len(bslices)
    return (torch.cat(xs) if xs else empty, torch.cat(xbs, 1) if xbs else empty.reshape(nb, 0),
            torch.cat(ys) if ys else empty, torch.cat(ybs, 1) if ybs else empty.reshape(nb, 0))


def deflated_probe_sums(op, Q, Z, det, k: int, blocks, *, probe: str, chunk: int,
                        gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Trace samples (k,) and per-block samples (num_blocks, k), float64, from ``k`` probes on the
    residual of ``P = Q Q^T``: the row sums of ``deflated_row_samples`` for ``probe_vectors(dim, k)``,
    computed :data:`PROBE_GROUP` probes at a time so that no (D, k) array is held."""
    x, xb, _, _ = paired_probe_sums(op, Q, Z, det, k, blocks, probe=probe, chunk=chunk, gen=gen, plain=False)
    return x, xb


def deflated_trace(op, Q, Z, *, m: int, target, mx: int, method: str, probe: str, chunk: int,
                   gen: torch.Generator, timer: RunTimer, per_block: bool, callback) -> TraceResult:
    """Finish a deflated estimator: residual probes in rounds (fixed budget ``m`` or adaptive up
    to ``mx``), then the result. Shared by Hutch++ and the Krylov estimator. Memory: the basis,
    its products and about ``3 * PROBE_GROUP`` D-vectors (probes are reduced group by group)."""
    budget = m if target is None else mx
    blocks = op.blocks if per_block else None
    det = deflated_diagonal(Q, Z)
    totals: list[torch.Tensor] = []
    parts: list[torch.Tensor] = []
    new = m - timer.matvecs
    if Q.shape[1] >= op.dim:  # the basis spans everything: exact, no residual left to probe
        zero = torch.zeros(op.dim, 2, dtype=op.dtype, device=op.device)
        whole = [slice(0, op.dim)]
        totals.append(deflated_slice_sums(det, zero, zero, whole).sum(0))
        parts.append(deflated_slice_sums(det, zero, zero, [b.slice for b in blocks] if blocks else []))
        new = 0
    while new > 0:
        t, b = deflated_probe_sums(op, Q, Z, det, new, blocks, probe=probe, chunk=chunk, gen=gen)
        totals.append(t)
        parts.append(b)
        call_back(callback, timer.matvecs, budget)
        if target is None:
            break
        samples = torch.cat(totals)
        est, se = mean_stderr(samples)
        new = next_round(samples.numel(), timer.matvecs, rel(float(se), float(est)), target, mx)
    return trace_result_from_samples(torch.cat(totals), torch.cat(parts, 1), blocks, method=method, probe=probe,
                                     timer=timer, target=target, max_matvecs=mx)


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
        chunk_size: vectors per ``op.matmat`` call (residual probes: at most :data:`PROBE_GROUP`).
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


__all__ = ["hutchpp_trace", "deflated_trace", "paired_probe_sums"]
