"""Certified extreme eigenpairs: :func:`top_eigenpairs` and :func:`bottom_eigenpairs`.

Both run block thick-restart Lanczos (:mod:`curvlens.linalg._thick_restart`) until every
returned pair has ``||A v - l v|| <= max(rtol * |l|, atol)`` or the product budget ends, and
then certify the returned vectors with *true* residuals (for the top end from the stored
products of the basis, ``A (V S) = (A V) S``; else one ``op.matmat`` of the ``k`` vectors). Pairs that miss the tolerance are returned with ``converged=False``, a status that
says what to increase, and a :class:`ConvergenceWarning`.

Design decisions:
    * **Single vector or block.** ``block_size=1`` is the cheapest in products for distinct
      eigenvalues, but a Krylov space grown from one vector contains only one direction of
      each eigenspace: a degenerate top eigenvalue would be reported once and the k-th value
      would be wrong. Measured on a 500-dim Hessian-like spectrum (bottom five clustered in
      [-0.042, -0.036], top 0.76), block size 2 needs about 1.2x (top-5) to 1.5x (bottom-5)
      the products of block size 1, block size 4 about 2-3x; on 500-dim spectra with separated
      top eigenvalues (rtol 1e-3, certificates included, mean of 3 seeds) top-5 took 15-16
      products with block size 1 and 20-23 with 2, top-10 23-25 against 29-33. The default is
      therefore 1 for ``k <= 10`` (within ``k + 15`` products for separated eigenvalues) and 2
      for larger ``k`` (a long list is likelier to hold a repeated value, and the premium is
      relatively smaller), each product then an ``op.matmat`` of 2 vectors with a basis twice
      as large. Pass ``block_size >= m`` when eigenvalues of multiplicity ``m`` are expected;
      rounding usually, but not provably, reveals higher multiplicities too.
    * **Certificates without extra products** (top end): the products ``A V`` of the basis
      are stored next to it (as much memory again, when that fits in 10% of the available
      memory), so the true residuals of the Ritz vectors ``Y = V S`` come from
      ``A Y = (A V) S``, the products actually taken, instead of ``k`` more products.
    * **No product after convergence.** The stopping test runs after every product on the
      free residual estimates ``||C s_i||`` (``beta_m |s_mi|`` for block size 1), and the
      certificates come from the stored products, so a run stops at the first Krylov
      dimension whose Ritz pairs meet the tolerance. Measured on the benchmark's
      1.07M-parameter MLP (float32, 8 uneven batches; top five eigenvalues 2.5-4.5% apart,
      ``benchmarks/results/spectral.md``): 26, 30 and 29 products for seeds 0-2, and that is
      also the first dimension ``m`` in which *any* unit vector of the Krylov space has a
      residual ``<= 1e-3 lambda_i`` for a shift within ``1e-3`` of ``lambda_i`` (the smallest
      singular value of ``[H - theta I; C]``): no Krylov method from the same start, refined
      Ritz vectors (Jia 1997) included, certifies those pairs sooner.
    * **Thick restart** keeps about half of the basis (the best Ritz vectors, more than ``k``)
      so clustered eigenvalues next to the k-th are not lost at a restart.
    * **Shifts do not help Lanczos**: the Krylov space of ``sigma I - A`` is that of ``A``.
      For the small, clustered negative end of a Hessian, :func:`bottom_eigenpairs` goes on
      with a Chebyshev filter (polynomial acceleration, :mod:`curvlens.linalg.chebyshev`)
      when one basis fill of plain Lanczos did not certify the pairs.
    * **Warm starts** (``v0``, one spelling with :func:`~curvlens.linalg.lanczos`): the
      eigenvectors of a nearby operator (the previous step of training) as the start block.
      A ``(D, j)`` block with ``j`` above the block size is folded into ``block_size`` columns
      (column ``i`` sums the columns ``i, i + b, ...``: every direction stays in the Krylov
      space); fewer columns are completed with random ones from ``generator``. Like any Krylov
      start, a ``v0`` with no component along an eigenvector cannot find it; and when ``v0``
      spans an invariant subspace (exact eigenvectors), its pairs are returned once certified
      instead of exploring random directions first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import numpy as np
import torch

from curvlens._memory import available_memory
from curvlens._rng import resolve_generator
from curvlens.linalg._certify import EigenResult, build_result
from curvlens.linalg._filtered import run_extreme
from curvlens.linalg._validate import (
    check_callback,
    check_int,
    check_k,
    check_operator,
    check_positive_float,
)
from curvlens.results import RunTimer

if TYPE_CHECKING:
    from curvlens.operators.protocol import LinearOperatorLike


def default_max_matvecs(k: int, dim: int) -> int:
    """Default ceiling of products: ``max(500, 150 * k)`` (generous: typical runs stop far earlier)."""
    return int(max(500, 150 * k))


BLOCK_ONE_MAX_K = 10  # default block size 1 up to this k, 2 above


def default_block_size(k: int) -> int:
    """Default vectors per product: 1 for ``k <= 10`` (fewest products), else 2 (see module doc)."""
    return 1 if k <= BLOCK_ONE_MAX_K else 2


BOTTOM_BASIS_MEMORY_FRACTION = 0.1  # of available memory, for the larger default basis of the bottom end
BOTTOM_BASIS_MEMORY_CAP = 2 * 2**30


def default_basis_size(k: int, block_size: int, *, largest: bool, dim: int, dtype=torch.float32, device="cpu") -> int:
    """Default Krylov basis (vectors kept before a thick restart).

    Top end: ``max(2k + 20, 3k) * block_size``; the large eigenvalues of a curvature matrix
    are separated outliers and converge before or soon after the first restart.

    Bottom end: ``max(100, 12 k * block_size)`` while that basis fits in 10% of available
    memory (at most 2 GiB), else as large as fits (never below the top-end size). The small,
    clustered negative end of a Hessian needs a long Krylov space, and restarting discards
    part of it: measured on the demo model's Hessian (1,317 parameters, lambda_min -0.0143
    next to 8.5, float64, rtol 1e-3), bottom-1 took 381-444 products with a 22-vector basis,
    119-147 with 60 and 84-89 with 100 (no restart); bottom-5 251-281 with 60 (block 2) and
    115-119 with 120.
    """
    small = max(2 * k + 20, 3 * k) * block_size
    if largest:
        return small
    itemsize = torch.finfo(dtype).bits // 8
    budget = min(BOTTOM_BASIS_MEMORY_CAP, BOTTOM_BASIS_MEMORY_FRACTION * available_memory(device))
    fits = int(budget // max(dim * itemsize, 1))
    return max(small, min(max(100, 12 * k * block_size), fits))


def _validate(op, k, rtol, atol, max_matvecs, block_size, basis_size, callback, *, largest=True):
    check_operator(op)
    k = check_k(k, op.dim)
    rtol = check_positive_float(rtol, "rtol", below_one=True, hint="use e.g. rtol=1e-3 (0.1% relative residual)")
    if atol is not None:
        atol = check_positive_float(atol, "atol", hint="or pass atol=None for the rounding-level default")
    b = default_block_size(k) if block_size is None else check_int(
        block_size, "block_size", low=1, high=op.dim, hint="use block_size=None for the default (1 if k <= 10 else 2)")
    if max_matvecs is None:
        max_matvecs = default_max_matvecs(k, op.dim)
    max_matvecs = check_int(
        max_matvecs, "max_matvecs", low=k + b,
        hint=f"one block of {b} products plus {k} for the residual certificates is the minimum; pass max_matvecs=None for the default",
    )
    if basis_size is None:
        basis_size = default_basis_size(k, b, largest=largest, dim=op.dim, dtype=op.dtype, device=op.device)
    else:
        basis_size = check_int(basis_size, "basis_size", low=k + b, hint="the basis must hold the k pairs plus one block")
    check_callback(callback)
    return k, rtol, atol, max_matvecs, b, basis_size


def _same_device(a, b) -> bool:
    a, b = torch.device(a), torch.device(b)
    return a.type == b.type and (a.index is None or b.index is None or a.index == b.index)


def check_v0(v0, op, block_size: int) -> torch.Tensor | None:
    """Validate a warm start and return it as a ``(D, min(j, block_size))`` block of unit columns."""
    if v0 is None:
        return None
    D = op.dim
    if not isinstance(v0, torch.Tensor):
        raise TypeError(f"v0: expected a torch.Tensor of shape ({D},) or ({D}, j), or None, got "
                        f"{type(v0).__name__}; pass e.g. v0=previous.eigenvectors")
    if v0.ndim not in (1, 2) or v0.shape[0] != D or (v0.ndim == 2 and not 1 <= v0.shape[1] <= D):
        raise ValueError(f"v0: expected shape ({D},) or ({D}, j) with 1 <= j <= {D}, got {tuple(v0.shape)}; "
                         "pass a flat vector or a block of column vectors of length D")
    if not v0.dtype.is_floating_point:
        raise TypeError(f"v0: expected a real floating-point tensor, got dtype {v0.dtype}; pass v0.to({op.dtype})")
    if v0.dtype != op.dtype:
        raise ValueError(f"v0: expected the operator's dtype {op.dtype}, got {v0.dtype}; pass v0.to({op.dtype})")
    if not _same_device(v0.device, op.device):
        raise ValueError(f"v0: expected the operator's device {op.device}, got {v0.device}; "
                         f"pass v0.to('{op.device}')")
    X = v0.detach().reshape(D, -1)
    if not bool(torch.isfinite(X).all()):
        raise ValueError("v0: expected finite values, got NaN or inf; pass v0=None for a random start")
    norms = torch.linalg.vector_norm(X, dim=0)
    if bool((norms == 0).any()):
        j = int(torch.nonzero(norms == 0)[0, 0])
        raise ValueError(f"v0: expected non-zero columns, got a zero column {j}; drop it or pass v0=None")
    X = X / norms
    if X.shape[1] > block_size:  # fold: every column's direction stays in the start block's Krylov space
        X = torch.stack([X[:, i::block_size].sum(1) for i in range(block_size)], 1)
    return X.contiguous()


def _run(op, k, *, largest, rtol, atol, max_matvecs, block_size, basis_size, generator, callback, name,
         upper=None, use_filter=False, start=None):
    gen = resolve_generator(generator)
    timer = RunTimer(op, gen)
    theta, res, Y, a, status, method = run_extreme(
        op, k, largest=largest, rtol=rtol, atol=atol, max_matvecs=max_matvecs, block_size=block_size,
        basis_size=basis_size, generator=gen, spent=lambda: timer.matvecs, callback=callback, upper=upper,
        use_filter=use_filter, start=start,
    )
    if start is not None:
        status = f"warm start; {status}"
    return build_result(
        theta=theta, res=res, Y=Y, rtol=rtol, atol=a, which="largest" if largest else "smallest", method=method,
        timer=timer, name=name, budget_hint=max_matvecs, extra_status=status,
    )


def top_eigenpairs(
    op: LinearOperatorLike,
    k: int = 1,
    *,
    rtol: float = 1e-3,
    atol: float | None = None,
    max_matvecs: int | None = None,
    block_size: int | None = None,
    basis_size: int | None = None,
    generator: torch.Generator | int | None = None,
    callback: Callable[[int, int], None] | None = None,
    v0: torch.Tensor | None = None,
) -> EigenResult:
    """The ``k`` largest (algebraic) eigenvalues and eigenvectors, certified by true residuals.

    Block thick-restart Lanczos (Wu & Simon, SIAM J. Matrix Anal. Appl. 2000; Golub &
    Underwood 1977) with full reorthogonalization.

    Args:
        op: a :class:`~curvlens.operators.CurvatureOperator`, or any
            :class:`~curvlens.operators.protocol.LinearOperatorLike`.
        k: number of eigenpairs, ``1 <= k <= op.dim``.
        rtol: a pair is certified when ``||A v - l v|| <= max(rtol * |l|, atol)``; then an
            eigenvalue of ``A`` lies within ``rtol * |l|`` of ``l``.
        atol: absolute residual floor (for eigenvalues near zero); default
            ``10 * eps * sqrt(D) * ||A||``, the rounding level of the products.
        max_matvecs: hard ceiling of products (never exceeded), including the ``k``
            certificate products; default ``max(500, 150 * k)``.
        block_size: vectors per ``op.matmat``; default 1 if ``k <= 10`` else 2. Eigenvalues of
            higher multiplicity than the block size may be reported fewer times than they occur.
        basis_size: Krylov basis size before a thick restart (memory: that many ``D``-vectors);
            default ``max(2k + 20, 3k) * block_size`` (see :func:`default_basis_size`).
        generator: random start (a Generator, an int seed, or None for a fresh recorded seed).
        callback: called as ``callback(matvecs_spent, max_matvecs)`` after each block product.
        v0: warm start: a flat vector or a ``(D, j)`` block (e.g. ``previous.eigenvectors``
            of a slowly changing operator) in the operator's dtype and device, finite, with
            non-zero columns; folded or completed to ``block_size`` columns and
            orthonormalized (see the module doc). Default: a random block from ``generator``.

    Returns:
        :class:`EigenResult` with eigenvalues in descending order.

    Example:
        >>> import torch
        >>> from curvlens.operators import DenseOperator
        >>> op = DenseOperator(torch.diag(torch.linspace(-1.0, 2.0, 50, dtype=torch.float64)))
        >>> res = top_eigenpairs(op, k=2, generator=0)
        >>> [round(float(x), 4) for x in res.eigenvalues], bool(res.converged.all())
        ([2.0, 1.9388], True)
    """
    k, rtol, atol, max_matvecs, b, nb = _validate(op, k, rtol, atol, max_matvecs, block_size, basis_size, callback)
    return _run(op, k, largest=True, rtol=rtol, atol=atol, max_matvecs=max_matvecs, block_size=b,
                basis_size=nb, generator=generator, callback=callback, name="top_eigenpairs",
                start=check_v0(v0, op, b))


def bottom_eigenpairs(
    op: LinearOperatorLike,
    k: int = 1,
    *,
    rtol: float = 1e-3,
    atol: float | None = None,
    max_matvecs: int | None = None,
    block_size: int | None = None,
    basis_size: int | None = None,
    generator: torch.Generator | int | None = None,
    callback: Callable[[int, int], None] | None = None,
    filter: str | None = None,
    spectrum_upper: float | None = None,
    v0: torch.Tensor | None = None,
) -> EigenResult:
    """The ``k`` smallest (most negative) eigenvalues and eigenvectors, certified.

    Same algorithm and arguments as :func:`top_eigenpairs`; eigenvalues are returned in
    ascending order (most negative first). Note that ``rtol`` is relative to ``|l|``: for the
    small negative end of a Hessian (``|l|`` a few percent of ``lambda_max``) the
    certificate is much stricter than for the top, and more products are needed.

    The default basis is larger than for the top end (see :func:`default_basis_size`):
    restarting is what makes plain Lanczos slow at a clustered negative end.

    ``filter="chebyshev"`` trades products for memory: when one basis fill of plain Lanczos
    did not certify the pairs, it goes on with thick-restart Lanczos on ``p(A)``, where the
    Chebyshev polynomial ``p`` (:mod:`curvlens.linalg.chebyshev`) damps everything above the
    ``(k+1)``-th Ritz value and amplifies the wanted end. Each basis vector then carries
    ``degree`` products, so a small basis suffices and there are far fewer
    reorthogonalizations; the pairs are still certified with true residuals of ``A``. A fixed
    polynomial cannot adapt to the few outliers and narrow bulk of a Hessian the way Lanczos
    does, so it needs more products: on the demo Hessian with a 22-vector basis, 649-654
    products (bottom-1) against 381-444 for plain restarted Lanczos and 84-89 for plain
    Lanczos with the default basis. Use it when ``D`` is so large that the default basis does
    not fit in memory.

    Additional args:
        filter: None (plain thick restart) or ``"chebyshev"`` (see above).
        spectrum_upper: for the filter, an upper bound (or estimate) of ``lambda_max``, e.g.
            ``top.eigenvalues[0] + top.residuals[0]`` from :func:`top_eigenpairs`; default:
            estimated from the first Lanczos run. A bound that is too low is detected (a
            Rayleigh quotient above it) and raised.
        v0: warm start, as for :func:`top_eigenpairs` (e.g. ``previous.eigenvectors`` of the
            bottom end); with the filter it starts the plain phase.

    Example:
        >>> import torch
        >>> from curvlens.operators import DenseOperator
        >>> op = DenseOperator(torch.diag(torch.linspace(-1.0, 2.0, 50, dtype=torch.float64)))
        >>> res = bottom_eigenpairs(op, k=1, generator=0)
        >>> round(float(res.eigenvalues[0]), 4)
        -1.0
    """
    if filter not in ("chebyshev", None):
        raise ValueError(f"filter: expected None or 'chebyshev', got {filter!r}; use filter=None for plain thick restart")
    # the filter exists to work with a small basis: it takes the top end's default size
    k, rtol, atol, max_matvecs, b, nb = _validate(op, k, rtol, atol, max_matvecs, block_size, basis_size, callback,
                                                  largest=filter is not None)
    if spectrum_upper is not None:
        spectrum_upper = float(spectrum_upper)
        if not np.isfinite(spectrum_upper):
            raise ValueError(f"spectrum_upper: expected a finite float or None, got {spectrum_upper!r}")
    start = check_v0(v0, op, b)
    return _run(op, k, largest=False, rtol=rtol, atol=atol, max_matvecs=max_matvecs, block_size=b, basis_size=nb,
                generator=generator, callback=callback, name="bottom_eigenpairs", upper=spectrum_upper,
                use_filter=filter == "chebyshev", start=start)
