"""Stochastic Lanczos quadrature runs, optionally deflating converged Ritz pairs.

Helper of :func:`curvlens.estimators.density.spectral_density`.

Each probe ``q`` (unit norm, ``E[q q^T] = I/D``) gives the Gauss quadrature of its spectral
measure from ``m`` fully re-orthogonalized Lanczos steps: Ritz values and squared first
eigenvector components of ``T_m`` (Ubaru, Chen & Saad 2017).

Deflation (variance reduction, in the spirit of Hutch++ and of deflated SLQ; Meyer et al.
2021, Bhattacharjee et al. 2022): a probe's Krylov space usually contains the outlying
eigenvectors of a curvature matrix to working precision. The Ritz pairs of the probes run so
far with residual ``<= tol * ||A||`` form an orthonormal ``Y`` with known eigenvalues
``theta_Y`` (at most ``2 m`` of them, twice the memory of one Lanczos basis). Writing
``P = I - Y Y^T``, ``(1/D) tr f(A) = (1/D) sum_y f(theta_y) + (1/D) tr(P f(A) P)``, and the second
term is estimated without bias by ``q^T P f(A) P q`` with the later probes, independent of
``Y`` (which depends on earlier probes only). The first probe is a pilot: when its run
converged eigenpairs, its own quadrature (in which the outliers carry noisy weights, and
which ``Y`` depends on) is not averaged, as the sketch of Hutch++ is not. Each later probe's
measure is then: the deflated eigenvalues with weight ``1/D`` each,
plus the Gauss quadrature of ``P A P`` from ``P q`` with weights scaled by ``||P q||^2``. Outliers
then carry their exact mass in every probe instead of a noisy one, which is where most of the
transport cost (the Wasserstein error) of plain SLQ comes from.
"""

from __future__ import annotations

import numpy as np
import torch

from curvlens.linalg.lanczos import lanczos
from curvlens.operators.base import CurvatureOperator


class _Projected(CurvatureOperator):
    """``P A P`` with ``P = I - Y Y^T`` (products count on the parent operator)."""

    def __init__(self, op, Y: torch.Tensor):
        super().__init__(op.dim, op.dtype, op.device)
        self.op, self.Y = op, Y

    def _project(self, V: torch.Tensor) -> torch.Tensor:
        return V - self.Y @ (self.Y.T @ V)

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        return self._project(self.op.matmat(self._project(V)))


def _converged_ritz(op, res, tol_abs: float, Y: torch.Tensor | None, cap: int):
    """Append the run's Ritz pairs with residual ``<= tol_abs`` to the deflation basis ``Y``."""
    theta, S = res.ritz()
    r = res.residual_norm * np.abs(S[-1, :])
    have = 0 if Y is None else Y.shape[1]
    keep = np.nonzero(r <= tol_abs)[0][: max(cap - have, 0)]
    if keep.size == 0 or res.basis is None:
        return Y, np.zeros(0)
    Yn = res.basis @ torch.as_tensor(S[:, keep], dtype=op.dtype, device=op.device)
    if Y is not None and have:
        Yn = Yn - Y @ (Y.T @ Yn)
    Yn, _ = torch.linalg.qr(Yn)  # re-orthonormalize (Ritz vectors are orthonormal up to rounding)
    return (Yn if Y is None else torch.cat([Y, Yn], dim=1)), theta[keep]


def run_slq(op, V: torch.Tensor, num_steps: int, *, deflate: bool, fill_budget: bool = True, draw=None,
            callback=None, total: int = 0):
    """Run SLQ from the probe columns of ``V``.

    Args:
        op: the operator.
        V: ``(D, P)`` probes.
        num_steps: Lanczos steps per probe (capped at ``D``).
        deflate: deflate the converged Ritz pairs of earlier probes from later probes (at
            most ``2 * num_steps`` vectors are kept).
        fill_budget: when every probe so far found an invariant subspace after fewer than
            ``num_steps`` steps, spend the unused products (of the ``P * num_steps`` budget) on
            extra probes drawn with ``draw(1)``.
        draw: ``draw(k) -> (D, k)`` probes (needed for ``fill_budget``).
        callback: ``callback(done, total)`` in products.

    Returns:
        ``(nodes, weights, info)`` with nodes/weights ``(P', L)`` float64 arrays (rows sorted,
        zero-weight padding; ``P' = P - 1`` when the pilot is dropped, more with extra
        probes) and a dict with ``breakdowns``, ``deflated`` (eigenpairs deflated),
        ``extra_probes`` and ``pilot`` (whether the first probe was used as a pilot only).
    """
    P = V.shape[1]
    D = op.dim
    m = min(num_steps, D)
    budget = P * m
    eps = float(torch.finfo(op.dtype).eps)
    tol_rel = max(eps**0.5, 1e-6)
    rows: list[tuple[np.ndarray, np.ndarray]] = []
    breakdowns = used = longest = 0
    Y, theta_y, target = None, np.zeros(0), op
    cap = 2 * m  # deflation basis: at most twice the memory of one Lanczos basis
    norm_est = 0.0
    pilot_found = False
    p = 0
    while True:
        if p < P:
            steps, v = m, V[:, p]
        elif (fill_budget and draw is not None and 0 < longest < m and budget - used >= longest
              and theta_y.size < D and p < P + budget):
            steps, v = min(m, budget - used), draw(1)[:, 0]
        else:
            break
        base = used

        def cb(step, _n, base=base):
            if callback is not None:
                callback(base + step, total)

        q = v / torch.linalg.vector_norm(v)
        if Y is not None and Y.shape[1] > 0:
            q = q - Y @ (Y.T @ q)
        scale = float(torch.linalg.vector_norm(q)) ** 2
        x_defl, w_defl = theta_y, np.full(theta_y.size, 1.0 / D)
        p += 1
        if scale <= 1e3 * eps or D - theta_y.size == 0:
            rows.append((x_defl, w_defl))  # the deflated part is the whole spectrum
            continue
        store = deflate and P > 1 and (Y is None or Y.shape[1] < cap)
        res = lanczos(target, steps, v0=q, reorth=True, store_basis=store, callback=cb)
        breakdowns += int(res.breakdown)
        used += res.num_steps
        longest = max(longest, res.num_steps)
        theta, S = res.ritz()
        rows.append((np.concatenate([x_defl, theta]), np.concatenate([w_defl, scale * S[0, :] ** 2])))
        norm_est = max(norm_est, float(np.abs(theta).max()))
        if store:
            Y, new = _converged_ritz(op, res, tol_rel * (norm_est or 1.0), Y, cap)
            if new.size:
                pilot_found = pilot_found or p == 1
                theta_y = np.concatenate([theta_y, new])
                target = _Projected(op, Y)
            if Y is not None and Y.shape[1] == D:  # every eigenpair converged: the measure is exact
                exact = (theta_y, np.full(D, 1.0 / D))
                rows = [exact for _ in rows]
    pilot = bool(deflate and pilot_found and len(rows) > 1)
    if pilot:  # the pilot found the deflation basis; its own quadrature carries their noise
        rows = rows[1:]
    L = max(len(x) for x, _ in rows)
    nodes = np.zeros((len(rows), L))
    weights = np.zeros((len(rows), L))
    for i, (x, w) in enumerate(rows):
        order = np.argsort(x, kind="mergesort")
        k = len(x)
        nodes[i, :k], weights[i, :k] = x[order], w[order]
        nodes[i, k:] = x[order][-1] if k else 0.0
    info = {"breakdowns": breakdowns, "deflated": int(theta_y.size), "extra_probes": len(rows) + pilot - P,
            "pilot": pilot}
    return nodes, weights, info
