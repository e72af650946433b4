"""Rigorous bounds on a probe's distribution function from its Gauss quadrature rule.

Helper of :class:`curvlens.estimators.density.DensityResult`.

An ``n``-node Gauss rule (nodes ``x_1 < ... < x_n``, weights ``w_i``) of a measure ``mu`` does not
determine ``mu``'s distribution function ``F``, but it brackets it: the Chebyshev-Markov-
Stieltjes inequalities (Szegő, *Orthogonal Polynomials*, Thm. 3.41.1; Golub & Meurant, *Matrices,
Moments and Quadrature with Applications*, 2010, Sec. 6.1) state, for ``j = 1..n``,

    ``sum_{i<j} w_i  <=  mu((-inf, x_j))  <=  mu((-inf, x_j])  <=  sum_{i<=j} w_i``.

For a threshold ``s``, let ``k`` be the number of nodes ``< s`` and ``C_j = w_1 + ... + w_j``
(``C_0 = 0``). Since ``mu((-inf, s))`` is non-decreasing in ``s``:

* lower: ``mu((-inf, s)) >= mu((-inf, x_k]) >= mu((-inf, x_k)) >= C_{k-1}`` (0 when ``k = 0``),
  and ``>= C_k`` when ``s`` is itself the node ``x_{k+1}``;
* upper: ``mu((-inf, s)) <= mu((-inf, x_{k+1})) <= C_{k+1}`` (``C_n``, the total mass, when
  ``k = n``: no node at or above ``s``).

So ``s`` below every node gives ``[0, w_1]``, above every node ``[C_{n-1}, C_n]``, and between
``x_k`` and ``x_{k+1}`` the interval ``[C_{k-1}, C_{k+1}]`` of width ``w_k + w_{k+1}``: the
quadrature cannot say where inside that stretch of the spectrum the mass of two adjacent nodes
lies. Nodes whose mass is exact (deflated eigenvalues, or a probe whose Lanczos run found an
invariant subspace, where the rule *is* the measure) add their weight below ``s`` exactly.

Between nodes this is not the sharpest interval: the Markov-Krein bounds, from the rule through
``s`` exact to degree ``2n - 2`` (a Gauss-Radau modification of the Jacobi matrix), have the
Christoffel function at ``s`` as width, often a third of ``w_k + w_{k+1}``; computing them from
the stored nodes is ill-conditioned when ``s`` is near a converged Ritz value.
"""

from __future__ import annotations

import re

import numpy as np
import torch

#: ``node_kind`` codes: a Gauss quadrature node, a node whose mass is exact, a row whose
#: structure could not be recovered (only ``0 <= F <= row mass`` is claimed for it).
GAUSS, EXACT, UNKNOWN = 0, 1, -1


def _real_length(x: np.ndarray, w: np.ndarray) -> int:
    """Entries of a row before its padding (zero weights repeating the last node's value)."""
    n = len(x)
    while n > 1 and w[n - 1] == 0 and x[n - 1] == x[n - 2]:
        n -= 1
    return n


def slq_node_kinds(nodes: np.ndarray, weights: np.ndarray, *, dim: int, steps: int, deflated: int,
                   extra_probes: int, in_row: bool = False) -> np.ndarray:
    """Classify the nodes of SLQ rows (as laid out by :func:`curvlens.estimators.slq.run_slq`).

    Deflated eigenvalues carry weight exactly ``1/dim`` (bitwise). A row's Gauss part is exact
    when its run stopped on an invariant subspace: fewer nodes than the steps it was given
    (``min(steps, dim)``; the ``extra_probes`` last rows ran for the longest run seen, which is at
    least the largest Gauss part of any row, so for them only a shorter one counts), or as many
    as the dimension left after deflation. Anything else stays a Gauss node, which only widens
    the bounds. ``in_row``: the ``1/dim`` nodes are the single probe's own converged nodes (one
    probe, self-deflated), so its full run has ``steps - deflated`` Gauss nodes.

    Returns:
        ``(P, L)`` int8 array of :data:`GAUSS`, :data:`EXACT` (padding included, weight 0) or
        :data:`UNKNOWN` (a row whose count of ``1/dim`` weights differs from ``deflated``).
    """
    P, L = nodes.shape
    kinds = np.full((P, L), EXACT, dtype=np.int8)
    m = min(int(steps), int(dim))
    lengths = [_real_length(nodes[r], weights[r]) for r in range(P)]
    defl = weights == 1.0 / dim if deflated else np.zeros((P, L), dtype=bool)
    n_gauss = [lengths[r] - int(defl[r, : lengths[r]].sum()) for r in range(P)]
    longest = max(n_gauss, default=0)
    for r in range(P):
        if deflated and int(defl[r, : lengths[r]].sum()) != deflated:
            kinds[r] = UNKNOWN
            continue
        limit = m if r < P - extra_probes else longest
        if in_row:
            limit -= deflated
        if n_gauss[r] < limit or n_gauss[r] >= dim - deflated:
            continue  # invariant subspace: the row is its probe's measure
        kinds[r, : lengths[r]] = np.where(defl[r, : lengths[r]], EXACT, GAUSS)
    return kinds


def status_counts(status: str) -> tuple[int, int]:
    """``(deflated, extra_probes)`` as written into the status of an SLQ result."""
    d = re.search(r"(\d+) converged eigenpair\(s\) deflated", status)
    e = re.search(r"(\d+) extra probe\(s\)", status)
    return (int(d.group(1)) if d else 0), (int(e.group(1)) if e else 0)


def per_probe_bounds(nodes: np.ndarray, weights: np.ndarray, kinds: np.ndarray,
                     s: float) -> tuple[np.ndarray, np.ndarray]:
    """Per row, ``(lower, upper)`` bracketing the row's measure of ``(-inf, s)`` (module doc)."""
    P = nodes.shape[0]
    lower, upper = np.zeros(P), np.zeros(P)
    for r in range(P):
        x, w, kind = nodes[r], weights[r], kinds[r]
        if (kind == UNKNOWN).any():
            lower[r], upper[r] = 0.0, float(w.sum())
            continue
        exact = float(w[(kind == EXACT) & (x < s)].sum())
        g = kind == GAUSS
        xg, cg = x[g], np.concatenate([[0.0], np.cumsum(w[g])])
        n = len(xg)
        k = int(np.searchsorted(xg, s, side="left"))  # nodes < s (rows are ascending)
        lo = cg[k] if (k < n and xg[k] == s) else cg[max(k - 1, 0)]
        hi = cg[min(k + 1, n)]
        lower[r], upper[r] = exact + lo, exact + hi
    return lower, upper


def upgrade_schema_1(values: dict) -> dict:
    """Add ``node_kind`` to the fields of a schema-1 ``DensityResult`` (None for KPM)."""
    values = dict(values)
    values["node_kind"] = None
    if values.get("method") == "slq":
        deflated, extra = status_counts(values["info"].status)
        values["node_kind"] = torch.from_numpy(slq_node_kinds(
            np.asarray(values["nodes"]), np.asarray(values["weights"]), dim=int(values["dim"]),
            steps=int(values["num_steps"]), deflated=deflated, extra_probes=extra))
    return values
