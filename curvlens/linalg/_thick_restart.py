"""Block thick-restart Lanczos: the engine behind :func:`top_eigenpairs` / :func:`bottom_eigenpairs`.

References:
    K. Wu and H. Simon, "Thick-restart Lanczos method for large symmetric eigenvalue
    problems", SIAM J. Matrix Anal. Appl. 22(2), 2000 (the restart).
    G. Golub and R. Underwood, "The block Lanczos method for computing eigenvalues", 1977
    (the block recurrence, used so that one ``op.matmat`` feeds several vectors and so that
    an eigenvalue of multiplicity up to the block size is found from a random start).

State kept between steps (``V``: orthonormal basis, ``n`` columns; ``P``: next block,
orthonormal and orthogonal to ``V``)::

    A V = V H + P C        H = V^T A V (n x n, float64),   C = P^T A V (r x n, float64)

Expanding multiplies ``P`` by ``A`` once (one ``matmat``), appends it to ``V`` and
orthogonalizes the new directions twice against the whole basis (full reorthogonalization).
A restart replaces ``V`` by the ``l`` best Ritz vectors ``Y = V S_l``: then
``A Y = Y Theta_l + P (C S_l)``, so no product is needed, and the estimated residual of the
Ritz pair ``i`` is ``||C s_i||``. A column of the new block that vanishes (an invariant
subspace: breakdown) is replaced by a random vector from ``generator`` orthogonal to
everything so far, with zero coupling, so degenerate eigenspaces that the start missed are
still reached. The residuals used to *stop* are these estimates; the caller certifies the
returned vectors with true residuals (from the stored products ``A V`` with ``keep_products``:
``A (V S) = (A V) S`` needs no product, and is computed from the products actually taken, so it
holds whether or not ``V`` stayed orthonormal).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from curvlens.linalg._accurate import norm64, unit

logger = logging.getLogger(__name__)


@dataclass
class KrylovState:
    """Outcome of :func:`thick_restart` (internal)."""

    theta: np.ndarray  # Ritz values, wanted end first (sign * theta descending)
    est_residuals: np.ndarray  # ||C s_i||
    exact: bool  # basis is an invariant subspace (or the whole space)
    restarts: int
    certificate: Any  # what ``finish`` returned for the returned Ritz vectors
    norm_estimate: float
    ritz_values: np.ndarray  # all Ritz values of the last Rayleigh-Ritz, wanted end first
    ritz_estimates: np.ndarray  # their residual estimates ||C s_i||


def _random_block(D, r, dtype, device, generator) -> torch.Tensor:
    gdev = generator.device
    X = torch.randn(D, r, generator=generator, dtype=torch.float64 if dtype not in (torch.float32, torch.float64) else dtype, device=gdev)
    return X.to(dtype=dtype, device=device)


def _orth_against(X: torch.Tensor, W: torch.Tensor | None) -> torch.Tensor:
    """Classical Gram-Schmidt of the columns of ``X`` (``D x b``) against the orthonormal *rows*
    of ``W`` (``m x D``), with a second pass only when a column lost more than ~30% of its norm
    (the DGKS criterion: Daniel, Gragg, Kaufman & Stewart 1976), which is when the first pass
    can leave components along W. A pass reads the whole basis (memory-bound for large D), so
    skipping it halves the cost.

    The basis is stored by rows because ``W @ X`` and ``(C^T W)^T`` are plain GEMMs; with a
    column-stored ``V`` (``D x m``) the transposed product ``V.T @ X`` took 12x longer for a
    block of two vectors (measured: D = 1.07M, m = 60, 511 ms against 42 ms).
    """
    if W is None or W.shape[0] == 0:
        return X
    before = torch.linalg.vector_norm(X, dim=0)
    X = X - ((W @ X).T @ W).T
    if bool((torch.linalg.vector_norm(X, dim=0) < DGKS_ETA * before).any()):
        X = X - ((W @ X).T @ W).T
    return X


class _RowBasis:
    """Orthonormal Krylov basis kept as the rows of one preallocated ``(capacity, D)`` buffer:
    appending copies only the new block (``torch.cat`` copied the whole basis every step)."""

    def __init__(self, D: int, capacity: int, dtype, device):
        self.buf = torch.empty(capacity, D, dtype=dtype, device=device)
        self.n = 0

    @property
    def rows(self) -> torch.Tensor:
        return self.buf[: self.n]

    def append(self, P: torch.Tensor) -> None:
        r = P.shape[1]
        self.buf[self.n : self.n + r].copy_(P.T)
        self.n += r

    def combine(self, S: torch.Tensor) -> torch.Tensor:
        """``V S`` as a contiguous ``D x m`` block."""
        return (S.T @ self.rows).T.contiguous()

    def restart(self, S: torch.Tensor) -> None:
        """Replace the basis by ``V S`` (orthonormal when ``S`` has orthonormal columns)."""
        new = S.T @ self.rows
        self.buf[: new.shape[0]].copy_(new)
        self.n = new.shape[0]


DGKS_ETA = 1 / 2**0.5  # second Gram-Schmidt pass when ||x_after|| < eta ||x_before||


def _orthonormalize(R, V, norm_scale, generator, *, fill_to: int, room: int):
    """Column-wise Gram-Schmidt of ``R`` against the rows of ``V`` and itself; fill vanished
    columns randomly.

    Returns the orthonormal block ``P`` (``D x r``, ``r <= fill_to``) and the number of
    columns that were replaced by random vectors (breakdowns).
    """
    D, dtype, device = R.shape[0], R.dtype, R.device
    eps = float(torch.finfo(dtype).eps)
    drop_tol = 100.0 * eps * max(norm_scale, 1e-300)
    cols: list[torch.Tensor] = []
    R = _orth_against(R, V)

    def accept(x, tol, against_v: bool):
        # R's columns were already orthogonalized against V twice ("twice is enough"), and
        # removing components along ``cols`` (orthogonal to V) keeps them so: the expensive
        # pass over the whole basis V is repeated only for new random fills, or when the norm
        # collapsed (DGKS criterion), which signals cancellation.
        before = norm64(x)
        Pm = torch.stack(cols, 0) if cols else None
        x = _orth_against(x.reshape(D, 1), Pm).reshape(D)
        if V is not None and (against_v or norm64(x) < 0.5 * before):
            x = _orth_against(x.reshape(D, 1), V).reshape(D)
            x = _orth_against(x.reshape(D, 1), Pm).reshape(D)
        nrm = norm64(x)
        if nrm > tol and np.isfinite(nrm):
            cols.append(unit(x))
            return True
        return False

    for j in range(R.shape[1]):
        if len(cols) >= room:
            break
        accept(R[:, j], drop_tol, against_v=False)
    fills = 0
    tries = 0
    while len(cols) < min(fill_to, room) and tries < 3 * fill_to:
        tries += 1
        x = _random_block(D, 1, dtype, device, generator).reshape(D)
        x = unit(x)
        if accept(x, float(np.sqrt(eps)), against_v=True):
            fills += 1
    if not cols:
        return torch.empty(D, 0, dtype=dtype, device=device), fills
    return torch.stack(cols, 1), fills


def _ritz(H: np.ndarray, C: np.ndarray, sign: float):
    """Ritz values (wanted end first), vectors of ``H`` and residual estimates ``||C s_i||``."""
    theta, S = np.linalg.eigh(H)
    order = np.argsort(-sign * theta, kind="stable")
    theta, S = theta[order], S[:, order]
    est = np.linalg.norm(C @ S, axis=0) if C.shape[0] else np.zeros(len(theta))
    return theta, S, est


def thick_restart(
    op,
    k: int,
    *,
    largest: bool,
    block_size: int,
    basis_size: int,
    max_matvecs: int,
    tol: Callable[[np.ndarray, float], np.ndarray],
    generator: torch.Generator,
    matmat: Callable[[torch.Tensor], torch.Tensor] | None = None,
    cost_per_column: int = 1,
    spent: Callable[[], int],
    callback: Callable[[int, int], None] | None = None,
    start: torch.Tensor | None = None,
    warm: bool = False,
    finish: Callable[..., tuple[bool, Any]],
    keep_products: bool = False,
) -> KrylovState:
    """Run block thick-restart Lanczos until the ``k`` wanted Ritz pairs meet ``tol`` or ``max_matvecs`` is reached.

    Args:
        op: operator (``dim``, ``dtype``, ``device``, ``matmat``).
        k: number of wanted pairs.
        largest: True for the largest algebraic eigenvalues, False for the smallest.
        block_size: columns per product block.
        basis_size: maximum basis size before a restart (``>= k + block_size``).
        max_matvecs: hard ceiling of products for the iteration (as counted by ``spent``).
        tol: ``tol(theta, norm_estimate) -> per-pair residual tolerance``.
        matmat: product to use instead of ``op.matmat`` (e.g. a polynomial filter).
        cost_per_column: products of ``op`` one column of ``matmat`` costs.
        spent: products spent so far in this call.
        start: start block (``D x r``, ``r <= block_size``; completed with random columns from
            ``generator`` and orthonormalized); default random.
        warm: ``start`` is a caller's warm start (e.g. eigenvectors of a nearby operator). A
            breakdown (the start spans an invariant subspace, as exact eigenvectors do) then
            does not postpone the early exit: the pairs found are returned once they meet
            ``tol`` instead of filling the basis with random directions first.
        finish: ``finish(theta, Y, norm_estimate) -> (certified, certificate)`` computes true
            residuals of the candidate Ritz vectors ``Y``. When the estimates said converged
            but the true residuals disagree (loss of orthogonality), the iteration goes on
            with ten times tighter estimates while the budget lasts.
        keep_products: store the products ``A v`` of the basis vectors next to the basis (as
            much memory again; only for ``matmat=None``) and call ``finish(theta, Y,
            norm_estimate, AY)`` with ``AY = (A V) S = A Y``, the products of the candidates
            computed from the stored ones: the true residuals then cost no product.
    """
    D, dtype, device = op.dim, op.dtype, op.device
    mm = matmat if matmat is not None else op.matmat
    sign = 1.0 if largest else -1.0
    b = max(1, min(block_size, D))
    nmax = max(min(basis_size, D), min(D, k + b))
    basis = _RowBasis(D, nmax + b, dtype, device)
    keep_products = keep_products and matmat is None
    prods = _RowBasis(D, nmax + b, dtype, device) if keep_products else None  # rows: A v of the basis rows
    H = np.zeros((0, 0))
    X0 = _random_block(D, b, dtype, device, generator) if start is None else start
    P, _ = _orthonormalize(X0, None, 1.0, generator, fill_to=b, room=D)
    C = np.zeros((P.shape[1], 0))
    norm_est = 0.0
    restarts = 0
    exact = False
    factor = 1.0
    # After a breakdown the random refill may reach copies of an eigenvalue that the start
    # missed: then the early exit is skipped and the basis is filled before Rayleigh-Ritz.
    refilled = False
    while True:
        # ---------------------------------------------------------------- expand
        while P.shape[1] > 0 and basis.n < nmax:
            r = P.shape[1]
            if basis.n > 0 and spent() + r * cost_per_column > max_matvecs:
                break
            AP = mm(P)
            Hpp = (P.T @ AP).double().cpu().numpy()
            Hpp = 0.5 * (Hpp + Hpp.T)
            n = basis.n
            Hn = np.zeros((n + r, n + r))
            Hn[:n, :n], Hn[n:, :n], Hn[:n, n:], Hn[n:, n:] = H, C, C.T, Hpp
            H = Hn
            basis.append(P)
            if prods is not None:
                prods.append(AP)
            norm_est = max(norm_est, float(np.abs(np.linalg.eigvalsh(Hpp)).max()) if r else 0.0)
            room = D - basis.n
            if room <= 0:
                P, C = P[:, :0], np.zeros((0, basis.n))
                break
            Pn, fills = _orthonormalize(AP, basis.rows, norm_est, generator, fill_to=b, room=room)
            if fills:
                refilled = refilled or not warm
                logger.debug("block Lanczos: %d breakdown column(s) refilled at basis size %d", fills, basis.n)
            Cl = (Pn.T @ AP).double().cpu().numpy()
            C = np.zeros((Pn.shape[1], basis.n))
            C[:, basis.n - r :] = Cl
            P = Pn
            if callback is not None:
                callback(spent(), max_matvecs)
            if basis.n >= k and not refilled:  # early exit: a small dense eigh, negligible next to products
                th, _, es = _ritz(H, C, sign)
                if bool((es[:k] <= factor * tol(th[:k], norm_est)).all()):
                    break
        # ---------------------------------------------------------------- Rayleigh-Ritz
        theta, S, est = _ritz(H, C, sign)
        norm_est = max(norm_est, float(np.abs(theta).max()))
        exact = P.shape[1] == 0
        kk = min(k, len(theta))
        ok = est[:kk] <= factor * tol(theta[:kk], norm_est)
        done = exact or (kk == k and bool(ok.all()))
        out_of_budget = spent() + max(P.shape[1], 1) * cost_per_column > max_matvecs
        if done or out_of_budget:
            Sk = torch.as_tensor(S[:, :kk], dtype=dtype, device=device)
            Y = basis.combine(Sk)
            if prods is not None:
                certified, cert = finish(theta[:kk], Y, norm_est, prods.combine(Sk))
            else:
                certified, cert = finish(theta[:kk], Y, norm_est)
            logger.debug("thick restart: stop after %d restarts, basis %d, certified=%s", restarts, basis.n, certified)
            again = done and not certified and not exact and factor > 1e-3
            if not again or spent() + P.shape[1] * cost_per_column > max_matvecs:
                return KrylovState(theta[:kk].copy(), est[:kk].copy(), exact, restarts, cert, norm_est,
                                   theta.copy(), est.copy())
            factor *= 0.1
        # ---------------------------------------------------------------- thick restart
        n = basis.n
        keep = max(k, min(n - b, max(k + b, k + (nmax - k) // 2)))
        Sl = S[:, :keep]
        basis.restart(torch.as_tensor(Sl, dtype=dtype, device=device))
        if prods is not None:
            prods.restart(torch.as_tensor(Sl, dtype=dtype, device=device))  # A (V S) = (A V) S
        H = np.diag(theta[:keep])
        C = C @ Sl
        restarts += 1
