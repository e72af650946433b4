"""Krylov-deflated trace estimation: Hutch++ whose low-rank basis is a block Krylov space.

Hutch++ and XTrace deflate with the range of one random sketch ``A Omega``: a single power of
``A``. On the spectra of trained networks (a few outliers over a wide, slowly decaying bulk)
that sketch captures the top eigenvectors poorly, and little of the budget is saved. A block
Krylov space ``span[Omega, A Omega, A^2 Omega, ...]`` of the same number of products captures
them far better (Lanczos convergence), and ``tr(Q^T A Q)`` comes with it for free because the
products ``A Q`` are the products that build the space. The rest of the budget estimates
``tr((I - QQ^T) A (I - QQ^T))`` with Hutchinson probes drawn independently of ``Q``, so the
estimator is unbiased for every basis and ``stderr`` is the honest sample standard error of
the residual part (the deflated part carries no sampling error given ``Q``).

Measured on the 2,714-parameter MLP Hessian of ``benchmarks/spectral.py`` (flat bulk: trace
3.2, top eigenvalue 0.079), 100 products, predicted mean relative error from the exact
conditional variance: Hutchinson 7.6e-3, Hutch++ 7.0e-3, Krylov deflation with 40 of the 100
products 5.7e-3 (block sizes 1 and 2 alike, 5.9e-3 at block size 5). The estimator loses to
plain Hutchinson only on matrices close to a multiple of the identity (then Rademacher probes
are nearly exact and projecting them off ``Q`` spoils that): not the case for curvature.

References: R. A. Meyer, C. Musco, C. Musco, D. P. Woodruff, "Hutch++: Optimal stochastic
trace estimation", SOSA 2021; T. Chen, E. Hallman, "Krylov-aware stochastic trace
estimation", SIAM J. Matrix Anal. Appl. 44 (2023), for building the deflation basis from a
Krylov space whose products are reused.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable

import torch

from curvlens._rng import resolve_generator
from curvlens.estimators._common import (
    apply_chunked,
    call_back,
    check_budget,
    check_chunk,
    check_int,
    check_operator,
    orth,
)
from curvlens.estimators._probes import check_probe_kind, probe_vectors
from curvlens.estimators.hutchpp import deflated_trace
from curvlens.estimators.trace import TraceResult
from curvlens.linalg._thick_restart import _RowBasis
from curvlens.results import RunTimer

if TYPE_CHECKING:
    from curvlens.operators.base import CurvatureOperator


def krylov_basis(op, num_vectors: int, block_size: int, *, probe: str, chunk: int, gen: torch.Generator):
    """Orthonormal block Krylov basis ``Q`` (D, r) and the products ``Z = A Q``, ``r <= num_vectors``.

    Each step multiplies the newest block, then orthogonalizes the products against the whole
    basis (twice, rank-revealing). When the space becomes invariant the block is topped up
    with fresh random directions, so ``r = min(num_vectors, D)`` products are always spent.
    """
    dim = op.dim
    cap = min(num_vectors, dim)
    Qb = _RowBasis(dim, cap, op.dtype, op.device)  # preallocated rows: no copy of the basis per step
    Zb = _RowBasis(dim, cap, op.dtype, op.device)
    X = torch.zeros(dim, 0, dtype=op.dtype, device=op.device)
    while Qb.n < cap:
        want = min(block_size, cap - Qb.n)
        if X.shape[1] < want:
            fresh = probe_vectors(dim, want - X.shape[1], kind=probe, dtype=op.dtype, device=op.device, generator=gen)
            X = torch.cat([X, orth(fresh, against=torch.cat([Qb.rows.T, X], 1))], 1)
            if X.shape[1] == 0:
                break
        X = X[:, :want]
        AX = apply_chunked(op, X, chunk)
        Qb.append(X)
        Zb.append(AX)
        X = orth(AX, against=Qb.rows.T)
    return Qb.rows.T, Zb.rows.T


def krylov_trace(
    op: CurvatureOperator,
    num_matvecs: int = 100,
    *,
    krylov_fraction: float = 0.4,
    block_size: int = 1,
    probe: str = "rademacher",
    target_rstderr: float | None = None,
    max_matvecs: int | None = None,
    per_block: bool = False,
    chunk_size: int = 64,
    generator: torch.Generator | int | None = None,
    callback: Callable[[int, int], None] | None = None,
) -> TraceResult:
    """Trace estimate: exact ``tr`` on a block Krylov space + Hutchinson on its complement.

    ``round(krylov_fraction * num_matvecs)`` products build the Krylov basis ``Q`` (see
    :func:`krylov_basis`) and give ``tr(Q^T A Q)`` exactly; the remaining products are
    Hutchinson probes ``w`` projected off ``Q`` (``(I-QQ^T) w``), which estimate the residual
    trace without bias. Exact when ``rank(A)`` (or the number of distinct eigenvalues times
    ``block_size``) fits in the Krylov part. Per-block traces split both parts exactly (see
    :mod:`curvlens.estimators._deflation`) and add up to the total.

    Compared with :func:`~curvlens.estimators.hutchpp_trace` (one sketch ``A Omega`` plus its
    products ``A Q``: two products per basis vector), each basis vector here costs one product
    and the basis is closer to the top eigenspace, so more of the trace is computed exactly.
    The price is sequential products (``krylov_fraction * num_matvecs / block_size`` rounds of
    ``op.matmat``) instead of two large batches.

    Args:
        op: a :class:`~curvlens.operators.base.CurvatureOperator`.
        num_matvecs: products of the fixed budget (at least 4), or of the first round in
            adaptive mode (it fixes the Krylov part).
        krylov_fraction: share of ``num_matvecs`` spent on the Krylov basis, in (0, 1); at
            least two products always remain for the residual probes. 0.4 minimized the
            error on the spectra we measured (flat ones favour less, steeply decaying ones more).
        block_size: vectors per Krylov block (per ``op.matmat`` call). 1 (plain Lanczos)
            gets the most out of few products; larger blocks batch the products (faster per
            product on GPUs) and capture repeated eigenvalues, at a similar error for
            budgets of about 50 products and more.
        probe: ``"rademacher"`` (default) or ``"gaussian"``: the residual probes and the
            Krylov start block.
        target_rstderr: adaptive mode: add residual probes until
            ``stderr / |estimate| <= target_rstderr`` or ``max_matvecs`` is spent.
        max_matvecs: budget cap of adaptive mode (default ``10 * num_matvecs``).
        per_block: also estimate each block's trace (``op.blocks``), free of extra products.
        chunk_size: vectors per ``op.matmat`` call for the residual probes.
        generator: ``torch.Generator``, int seed or None (fresh seed, recorded in ``info``).
        callback: ``callback(matvecs_done, matvecs_budget)`` after each stage.

    Returns:
        :class:`~curvlens.estimators.TraceResult` with ``method="krylov"``; ``num_probes``
        counts the residual probes behind ``stderr``.

    Example:
        >>> import torch, curvlens
        >>> A = torch.diag(torch.tensor([100.0, 10.0, 1.0, 0.1] + [0.0] * 60, dtype=torch.float64))
        >>> res = krylov_trace(curvlens.DenseOperator(A), 20, generator=0)
        >>> round(res.estimate, 8)  # 5 distinct eigenvalues, 8 Krylov vectors: exact
        111.1
    """
    op = check_operator(op)
    m, target, mx = check_budget(num_matvecs, target_rstderr, max_matvecs, minimum=4, method="krylov_trace")
    if isinstance(krylov_fraction, bool) or not isinstance(krylov_fraction, (int, float)) or not (
        0.0 < float(krylov_fraction) < 1.0
    ):
        raise ValueError(
            f"krylov_fraction: expected a float in (0, 1) (share of num_matvecs for the Krylov basis), "
            f"got {krylov_fraction!r}; the default 0.4 suits Hessian spectra"
        )
    bs = check_int(block_size, "block_size", 1, "it is the number of vectors per Krylov block")
    probe = check_probe_kind(probe)
    chunk = check_chunk(chunk_size)
    gen = resolve_generator(generator)
    timer = RunTimer(op, gen)
    n_kry = min(max(1, int(math.floor(krylov_fraction * m + 0.5))), m - 2)
    Q, Z = krylov_basis(op, n_kry, bs, probe=probe, chunk=chunk, gen=gen)
    call_back(callback, timer.matvecs, m if target is None else mx)
    return deflated_trace(op, Q, Z, m=m, target=target, mx=mx, method="krylov", probe=probe, chunk=chunk,
                          gen=gen, timer=timer, per_block=per_block, callback=callback)


__all__ = ["krylov_trace", "krylov_basis"]
