"""The Lanczos process with full reorthogonalization and breakdown handling.

Reference: C. Lanczos (1950); with full reorthogonalization as in Golub & Van Loan,
*Matrix Computations*, 4th ed., Sec. 10.1. The three-term recurrence loses orthogonality in
floating point once Ritz values converge, producing spurious copies ("ghost" eigenvalues);
re-orthogonalizing every new vector against the whole basis (twice, "twice is enough")
keeps the basis orthonormal to working precision at O(D m) extra memory.

This module is operator-agnostic: it only calls ``op.matvec`` / ``op.matmat``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch

from curvlens._rng import resolve_generator
from curvlens.linalg._accurate import norm64, unit
from curvlens.linalg._validate import check_callback, check_int, check_operator
from curvlens.results import RunInfo, RunTimer, register_result

if TYPE_CHECKING:
    from curvlens.operators.protocol import LinearOperatorLike


@register_result("lanczos")
@dataclass(frozen=True)
class LanczosResult:
    """A Lanczos factorization ``A Q = Q T + beta_m q_{m+1} e_m^T``.

    Attributes:
        alphas: diagonal of the tridiagonal ``T`` (float64, length m).
        betas: off-diagonal of ``T`` (float64, length m-1).
        basis: orthonormal Lanczos vectors ``Q`` as a ``(D, m)`` tensor in the operator's
            dtype, or None when ``store_basis=False``.
        residual_norm: ``beta_m``, the norm of the part of ``A q_m`` outside the basis; the
            residual of a Ritz pair ``(theta, Q s)`` is ``residual_norm * |s[-1]|``.
        breakdown: True when an invariant subspace was found before ``num_steps`` steps
            (then the Ritz values are exact eigenvalues of ``A`` restricted to it).
        info: run metadata.
    """

    alphas: np.ndarray
    betas: np.ndarray
    basis: torch.Tensor | None
    residual_norm: float
    breakdown: bool
    info: RunInfo

    @property
    def num_steps(self) -> int:
        return len(self.alphas)

    def tridiagonal(self) -> np.ndarray:
        """The dense ``m x m`` tridiagonal matrix ``T`` (float64)."""
        m = len(self.alphas)
        T = np.diag(self.alphas)
        if m > 1:
            T += np.diag(self.betas, 1) + np.diag(self.betas, -1)
        return T

    def ritz(self) -> tuple[np.ndarray, np.ndarray]:
        """Eigenvalues (ascending) and eigenvectors of ``T`` (float64)."""
        from scipy.linalg import eigh_tridiagonal

        if len(self.alphas) == 1:
            return self.alphas.copy(), np.ones((1, 1))
        return eigh_tridiagonal(self.alphas, self.betas)


def random_unit_vector(dim: int, dtype: torch.dtype, device, generator: torch.Generator | int | None) -> torch.Tensor:
    """A Gaussian random unit vector drawn from ``generator`` (never the global RNG).

    ``generator`` may be a Generator, an int seed, or None (fresh OS-entropy seed). The draw
    happens on the generator's device and is then moved to ``device``.
    """
    generator = resolve_generator(generator)
    draw_dtype = dtype if dtype in (torch.float32, torch.float64) else torch.float64
    v = torch.randn(dim, generator=generator, dtype=draw_dtype, device=generator.device).to(device=device, dtype=dtype)
    return unit(v)


def lanczos(
    op: LinearOperatorLike,
    num_steps: int | None = None,
    *,
    num_iters: int | None = None,
    v0: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    reorth: bool = True,
    store_basis: bool = True,
    breakdown_tol: float | None = None,
    callback: Callable[[int, int], None] | None = None,
) -> LanczosResult:
    """Run ``num_steps`` steps of Lanczos on a symmetric operator.

    Args:
        op: a :class:`~curvlens.operators.CurvatureOperator` (any object with ``dim``,
            ``dtype``, ``device`` and ``matvec``).
        num_steps: maximum number of steps (= matvecs); capped at ``op.dim``. The same name
            as in :func:`~curvlens.estimators.spectral_density`; ``num_iters`` is its former
            spelling (accepted with a ``DeprecationWarning``).
        v0: starting vector (normalized internally); default a Gaussian vector from
            ``generator``.
        generator: source of the random start vector (a Generator, an int seed, or None for
            a fresh seed that is recorded in ``info.seed``); unused when ``v0`` is given.
        reorth: full reorthogonalization (default). ``False`` gives the plain three-term
            recurrence (cheaper, but produces ghost eigenvalues; for comparison only).
        store_basis: keep the ``(D, m)`` basis in the result. Full reorthogonalization
            needs it internally anyway; with ``reorth=False`` and ``store_basis=False`` the
            memory is O(D).
        breakdown_tol: stop when ``beta`` falls below this times the running norm estimate
            (default ``1e3 * eps`` of the dtype): an invariant subspace was found.
        callback: called as ``callback(step, num_steps)`` after each step.

    Returns:
        :class:`LanczosResult`.

    Example:
        >>> import torch
        >>> from curvlens.operators import DenseOperator
        >>> op = DenseOperator(torch.diag(torch.arange(1.0, 11.0, dtype=torch.float64)))
        >>> res = lanczos(op, 10, generator=torch.Generator().manual_seed(0))
        >>> round(float(res.ritz()[0][-1]), 8)
        10.0
    """
    check_operator(op)
    if num_iters is not None:
        if num_steps is not None:
            raise TypeError("lanczos: got num_steps and num_iters; pass num_steps only (num_iters is its old name)")
        import warnings

        warnings.warn("lanczos: num_iters is renamed num_steps; pass num_steps=", DeprecationWarning, stacklevel=2)
        num_steps = num_iters
    if num_steps is None:
        raise TypeError("lanczos: missing num_steps, the number of Lanczos steps (e.g. lanczos(op, 30))")
    num_iters = check_int(num_steps, "num_steps", low=1, hint="pass the number of Lanczos steps, e.g. num_steps=30")
    check_callback(callback)
    if breakdown_tol is not None and (not isinstance(breakdown_tol, (int, float)) or not breakdown_tol > 0):
        raise ValueError(f"breakdown_tol: expected a float > 0 or None, got {breakdown_tol!r}; use None for the default")
    gen = resolve_generator(generator) if v0 is None else None
    timer = RunTimer(op, gen)
    D, dtype, device = op.dim, op.dtype, op.device
    m = int(min(num_iters, D))
    if v0 is None:
        q = random_unit_vector(D, dtype, device, gen)
    else:
        if not isinstance(v0, torch.Tensor):
            raise TypeError(f"v0: expected a torch.Tensor of shape ({D},) or None, got {type(v0).__name__}")
        if v0.shape != (D,):
            raise ValueError(f"v0: expected a tensor of shape ({D},), got {tuple(v0.shape)}; pass a flat vector of length D")
        q = v0.to(dtype=dtype, device=device)
        nrm = norm64(q)
        if not np.isfinite(nrm) or nrm == 0:
            raise ValueError("v0: expected a finite, non-zero starting vector, got norm {}; pass v0=None for a random start".format(float(nrm)))
        q = unit(q)
    keep = reorth or store_basis
    # basis kept by rows: ``Q @ w`` and ``(c Q)`` are plain GEMVs, about twice as fast as the
    # transposed product with a column-stored basis for D ~ 1M (see _thick_restart._orth_against)
    Q = torch.empty(m, D, dtype=dtype, device=device) if keep else None
    alphas: list[float] = []
    betas: list[float] = []
    eps = float(torch.finfo(dtype).eps)  # breakdown: beta <= 1e3 * eps * ||A|| estimate
    tol_rel = breakdown_tol if breakdown_tol is not None else 1e3 * eps
    q_prev = None
    beta = 0.0
    norm_est = 0.0
    breakdown = False
    for j in range(m):
        if Q is not None:
            Q[j] = q
        w = op.matvec(q)
        alpha = float(torch.dot(w.double(), q.double()))  # float64 sum: see linalg._accurate
        w = w - alpha * q
        if q_prev is not None:
            w = w - beta * q_prev
        if reorth:
            Qj = Q[: j + 1]
            for _ in range(2):
                w = w - (Qj @ w) @ Qj
        alphas.append(alpha)
        beta = norm64(w)
        norm_est = max(norm_est, abs(alpha) + beta + (betas[-1] if betas else 0.0))
        if callback is not None:
            callback(j + 1, m)
        if j == m - 1:
            break
        if not np.isfinite(beta) or beta <= tol_rel * max(norm_est, 1e-300):
            breakdown = True
            break
        betas.append(beta)
        q_prev, q = q, w / beta
    steps = len(alphas)
    basis = Q[:steps].T if (Q is not None and store_basis) else None
    if breakdown:
        status = f"invariant subspace found after {steps} steps: Ritz values are exact"
    else:
        status = f"completed {steps} Lanczos steps"
    info = timer.info(True, status)
    return LanczosResult(
        alphas=np.asarray(alphas, dtype=np.float64),
        betas=np.asarray(betas, dtype=np.float64),
        basis=basis,
        residual_norm=0.0 if breakdown else beta,
        breakdown=breakdown,
        info=info,
    )
