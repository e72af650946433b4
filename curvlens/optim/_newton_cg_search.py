"""Choosing the Newton-CG update: backtracking over the kept CG iterates, then an Armijo search.

References: J. Martens, "Deep learning via Hessian-free optimization" (ICML 2010), Sec. 4.6
(CG-backtracking: later CG iterates can overfit the curvature mini-batch, so the objective is
evaluated at kept iterates from the last one backwards while it improves); J. Nocedal and
S. Wright, *Numerical Optimization*, 2nd ed., Sec. 3.5 (backtracking with a safeguarded
quadratic interpolation of ``phi(a) = f(theta + a s)`` from ``phi(0)``, ``phi'(0)`` and the
failed trial).

Every objective evaluation is a full loss on the step's batch, usually the largest cost of a
step after the curvature, so both searches stop as early as their rule allows:

- backtracking walks back only when the last kept iterate predicts poorly: it is taken at the
  cost of one evaluation when its reduction ratio ``r = (f(theta + x) - f(theta)) / q(x)`` is at
  least ``accept_rho`` *and* its actual decrease is at least the decrease the model predicts for
  the previous kept iterate, ``r >= q(x_prev) / q(x)`` (``q(x)`` is the damped quadratic model,
  whose value CG records; ``q`` decreases along CG, so the earlier iterates promise less). The
  second test is what a walk back could gain where the model holds at the earlier iterate: late
  CG iterates add long components along directions of small curvature, where the model is
  worst, and then ``r`` drops below 1 while the earlier iterates still have ``r`` near 1. On an
  exact quadratic ``r = 1`` and the last iterate is always taken;
- the Armijo search shrinks ``a`` to the minimizer of the quadratic through ``phi(0)``,
  ``phi'(0)`` and ``phi(a)``, kept within ``[low a, shrink a]``.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

__all__ = ["backtrack_kept", "armijo_search", "interpolated_step"]

#: ``trial(s, alpha)``: the objective at ``theta + alpha s`` (inf where not finite)
Trial = Callable[[torch.Tensor, float], float]


def backtrack_kept(trial: Trial, kept: list[tuple[int, torch.Tensor]], phi: dict, f0: float,
                   accept_rho: float | None) -> tuple[int, torch.Tensor, float]:
    """(iteration, iterate, objective there) chosen among the kept CG iterates (ascending).

    ``phi[i]`` is the quadratic model's change at iteration ``i`` (negative for a decrease).
    The last one is taken without walking back when its ratio ``r`` is at least ``accept_rho``
    and at least ``phi[previous] / phi[last]``; with ``accept_rho=None`` the walk back always runs
    (Martens 2010).

    Example:
        >>> xs = [(1, torch.tensor([1.0])), (2, torch.tensor([2.0])), (3, torch.tensor([3.0]))]
        >>> f = lambda s, a: float((a * s - 2.0) ** 2)  # best at the second kept iterate
        >>> backtrack_kept(f, xs, {1: -3.0, 2: -4.0, 3: -4.5}, 4.0, None)[0]
        2
    """
    j = len(kept) - 1
    fj = trial(kept[j][1], 1.0)
    pj = phi[kept[j][0]]
    if accept_rho is not None and pj < 0 and math.isfinite(fj):
        r = (fj - f0) / pj
        promised = phi[kept[j - 1][0]] / pj if j > 0 else 0.0  # the previous iterate's share of q
        if r >= accept_rho and r >= promised:
            return kept[j][0], kept[j][1], fj
    while j > 0:
        fprev = trial(kept[j - 1][1], 1.0)
        if not fprev < fj:
            break
        j, fj = j - 1, fprev
    return kept[j][0], kept[j][1], fj


def interpolated_step(alpha: float, f: float, f0: float, gts: float, low: float, shrink: float) -> float:
    """The next trial length after ``phi(alpha) = f`` failed the Armijo test: the minimizer of
    the quadratic interpolating ``phi(0) = f0``, ``phi'(0) = gts < 0`` and ``phi(alpha)``, kept
    in ``[low alpha, shrink alpha]`` (``shrink alpha`` for a non-finite ``f``).

    Example:
        >>> round(interpolated_step(1.0, 1.0, 1.0, -1.0, 0.1, 0.8), 6)  # phi(a) = 1 - a + a^2
        0.5
    """
    if not math.isfinite(f):
        return shrink * alpha
    curv = f - f0 - gts * alpha  # > 0 when the Armijo test failed
    a = -gts * alpha * alpha / (2.0 * curv) if curv > 0 else shrink * alpha
    return min(max(a, low * alpha), shrink * alpha)


def armijo_search(trial: Trial, s: torch.Tensor, f0: float, gts: float, lr: float, f_first: float | None, *,
                  c: float, shrink: float, low: float | None, max_iter: int) -> tuple[float, float]:
    """(alpha, objective at ``theta + alpha s``) with ``f <= f0 + c alpha g^T s``, or ``(0, f)``
    when ``max_iter`` shrinks found none. ``f_first`` is the objective at ``alpha = lr`` when
    already known; ``low=None`` shrinks by the constant factor ``shrink``."""
    alpha = lr
    f = f_first if f_first is not None else trial(s, alpha)
    for _ in range(max_iter):
        if f <= f0 + c * alpha * gts:
            return alpha, f
        alpha = shrink * alpha if low is None else interpolated_step(alpha, f, f0, gts, low, shrink)
        f = trial(s, alpha)
    return (alpha, f) if f <= f0 + c * alpha * gts else (0.0, f)
