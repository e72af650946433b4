"""Power iteration with deflation and a residual-based stopping rule.

Reference: R. von Mises and H. Pollaczek-Geiringer (1929); deflation by projection as in
Y. Saad, *Numerical Methods for Large Eigenvalue Problems*, 2nd ed., Sec. 4.2.

Unlike a stop on "the eigenvalue estimate changed by less than tol" (which can stop after two
products with a wrong value when the start vector is nearly orthogonal to the top
eigenvector, or oscillate unnoticed between ``+l`` and ``-l``), a pair is accepted only when
its true residual ``||A v - l v|| <= max(rtol * |l|, atol)``. The residual comes from the same
product as the next iterate, so the certificate costs nothing extra. Lanczos
(:func:`~curvlens.linalg.top_eigenpairs`) needs far fewer products; power iteration is here
as a simple, memory-light baseline and for the shifted iteration ``A - shift * I``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import numpy as np
import torch

from curvlens._rng import resolve_generator
from curvlens.linalg._accurate import column_norms64, norm64, rayleigh, unit
from curvlens.linalg._certify import EigenResult, build_result, default_atol
from curvlens.linalg._thick_restart import _random_block
from curvlens.linalg._validate import check_callback, check_int, check_k, check_operator, check_positive_float
from curvlens.results import RunTimer

if TYPE_CHECKING:
    from curvlens.operators.protocol import LinearOperatorLike


def power_iteration(
    op: LinearOperatorLike,
    k: int = 1,
    *,
    rtol: float = 1e-3,
    atol: float | None = None,
    max_matvecs: int | None = None,
    shift: float = 0.0,
    generator: torch.Generator | int | None = None,
    callback: Callable[[int, int], None] | None = None,
) -> EigenResult:
    """The ``k`` eigenpairs of largest ``|l - shift|`` by power iteration with deflation.

    Pair ``j`` iterates ``v <- (I - Y Y^T)(A - shift I) v`` from a random start orthogonal
    to the ``j`` pairs found before (``Y``), until ``||A v - l v|| <= max(rtol |l|, atol)``.
    With ``shift`` near ``lambda_max`` it finds the most negative eigenvalues (the shifted
    operator ``A - lambda_max I`` is negative semi-definite).

    Args:
        op: a :class:`~curvlens.operators.CurvatureOperator`.
        k: number of pairs, ``1 <= k <= op.dim``.
        rtol, atol: residual tolerance, as in :func:`~curvlens.linalg.top_eigenpairs`.
        max_matvecs: total budget, shared evenly among pairs not yet found (unused budget
            carries over); default ``500 * k``.
        shift: iterate with ``A - shift * I``. Eigenvalues are reported for ``A``.
        generator: random starts (Generator, int seed or None for a fresh recorded seed).
        callback: ``callback(matvecs_spent, max_matvecs)`` after each product.

    Returns:
        :class:`EigenResult` with ``which="magnitude"``, pairs in the order found (largest
        ``|l - shift|`` first). Converges at rate ``|l_{j+1} - shift| / |l_j - shift|``: an
        eigenvalue ``-l`` next to ``+l`` never converges and is reported as unconverged.

    Example:
        >>> import torch
        >>> from curvlens.operators import DenseOperator
        >>> op = DenseOperator(torch.diag(torch.tensor([4.0, 1.0, 0.5, -0.5], dtype=torch.float64)))
        >>> res = power_iteration(op, k=1, rtol=1e-8, generator=0)
        >>> round(float(res.eigenvalues[0]), 6), bool(res.converged[0])
        (4.0, True)
    """
    check_operator(op)
    k = check_k(k, op.dim)
    rtol = check_positive_float(rtol, "rtol", below_one=True, hint="use e.g. rtol=1e-3")
    if atol is not None:
        atol = check_positive_float(atol, "atol", hint="or pass atol=None for the rounding-level default")
    if max_matvecs is None:
        max_matvecs = 500 * k
    max_matvecs = check_int(max_matvecs, "max_matvecs", low=k, hint="each pair needs at least one product")
    if isinstance(shift, bool) or not isinstance(shift, (int, float)) or not np.isfinite(shift):
        raise TypeError(f"shift: expected a finite float, got {shift!r}; pass e.g. shift=0.0")
    check_callback(callback)
    gen = resolve_generator(generator)
    timer = RunTimer(op, gen)
    D, dtype, device = op.dim, op.dtype, op.device
    Y = torch.empty(D, 0, dtype=dtype, device=device)
    thetas, resids = [], []
    norm_est = 0.0
    final_rr = k > 1 and max_matvecs >= 2 * k
    budget = max_matvecs - (k if final_rr else 0)
    for j in range(k):
        share = (budget - timer.matvecs) // (k - j)
        v = _random_block(D, 1, dtype, device, gen).reshape(D)
        v = _deflate(v, Y)
        v = unit(v)
        theta, res = 0.0, float("inf")
        steps = max(share, 1)
        for step in range(steps):
            Av = op.matvec(v)
            th, rs = rayleigh(v.reshape(D, 1), Av.reshape(D, 1))
            theta, res = float(th[0]), float(rs[0])
            norm_est = max(norm_est, abs(theta), norm64(Av) / norm64(v))
            if callback is not None:
                callback(timer.matvecs, max_matvecs)
            a = atol if atol is not None else default_atol(dtype, D, norm_est)
            if res <= max(rtol * abs(theta), a) or step == steps - 1:
                break  # (the last step keeps v: theta and res are its quotient and residual)
            w = _deflate(Av - shift * v, Y)
            nrm = norm64(w)
            if not np.isfinite(nrm) or nrm == 0.0:  # v spans an eigenspace of value `shift`
                break
            v = unit(w)
        Y = torch.cat([Y, v.reshape(D, 1)], 1)
        thetas.append(theta)
        resids.append(res)
    if final_rr:  # Rayleigh-Ritz on the k vectors removes what deflation leaked between pairs
        thetas, resids, Y = _rayleigh_ritz(op, Y, np.asarray(thetas), shift)
    a = atol if atol is not None else default_atol(dtype, D, norm_est)
    return build_result(
        theta=np.asarray(thetas), res=np.asarray(resids), Y=Y, rtol=rtol, atol=a,
        which="magnitude", method="power_iteration", timer=timer, name="power_iteration",
        budget_hint=max_matvecs, extra_status=f"shift={shift:g}",
    )


def _rayleigh_ritz(op, Y, thetas, shift):
    """Rotate ``Y`` to the Ritz vectors of ``span(Y)``; true residuals from one ``op.matmat``."""
    AY = op.matmat(Y)
    Hm = (Y.T @ AY).double().cpu().numpy()
    w, S = np.linalg.eigh(0.5 * (Hm + Hm.T))
    # order by decreasing |l - shift|, as power iteration finds them
    order = np.argsort(-np.abs(w - shift), kind="stable")
    w, S = w[order], S[:, order]
    St = torch.as_tensor(S, dtype=Y.dtype, device=Y.device)
    Y, AY = Y @ St, AY @ St
    scale = column_norms64(Y)
    w, res = rayleigh(Y, AY)  # normalized quotients of the rotated vectors
    return w, res, (Y.double() / scale).to(Y.dtype)


def _deflate(v: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    """Project out the found eigenvectors (twice, for orthogonality to working precision)."""
    if Y.shape[1] == 0:
        return v
    for _ in range(2):
        v = v - Y @ (Y.T @ v)
    return v
