"""How trial runs are compared: loss decrease per second to a common deep loss.

A trial run is a curve of (CPU seconds, full-data loss) points. Comparing runs by the loss they
have reached at a common time favours whatever falls fastest at the start, even a run that then
stalls on a plateau or on its noise floor; training is a race to a low loss. So runs are compared
at a common *loss*, the comparison level

    ``level = best * (initial / best) ** (1 - DEPTH)``

(:data:`DEPTH` of the way from the initial loss down to the lowest loss any compared run reached,
on a log scale, as losses fall by factors), by the time each run takes to get there: their loss
decrease per second ``(initial - level) / t(level)``. A run that never gets there ranks after every
run that does, by its final loss; a diverged run ranks last. The time at which a curve crosses the
level is interpolated between its recorded points, linearly in time and in log loss.
"""

from __future__ import annotations

import math
from typing import Sequence

__all__ = ["DEPTH", "comparison_level", "time_to_level", "rank_key"]

#: the comparison level lies this fraction of the way from the initial loss to the lowest loss reached (log scale)
DEPTH = 0.9


def comparison_level(initial: float, best: float) -> float:
    """``best * (initial / best) ** (1 - DEPTH)`` for positive losses below ``initial``; an arithmetic
    ``best + (1 - DEPTH) (initial - best)`` when ``best <= 0``; ``initial`` when nothing fell below it.

    Example:
        >>> round(comparison_level(1.0, 1e-4), 6)  # 90% of four decades: 1e-4 * 10**0.4
        0.000251
    """
    if not (math.isfinite(initial) and math.isfinite(best)) or best >= initial:
        return initial
    if best > 0:
        return best * (initial / best) ** (1.0 - DEPTH)
    return best + (1.0 - DEPTH) * (initial - best)


def time_to_level(seconds: Sequence[float], losses: Sequence[float], level: float) -> float:
    """First time the curve reaches ``level`` (``inf`` if never), interpolated between recorded points.

    Example:
        >>> time_to_level([0.0, 1.0, 2.0], [1.0, 0.1, 0.01], 0.01)
        2.0
        >>> round(time_to_level([0.0, 1.0], [1.0, 0.01], 0.1), 6)  # halfway in log loss
        0.5
    """
    prev_t = prev_l = None
    for t, loss in zip(seconds, losses):
        if not math.isfinite(loss):
            return math.inf
        if loss <= level:
            if prev_t is None or prev_l <= level:
                return float(t)
            if prev_l > 0 and loss > 0 and level > 0:
                f = math.log(prev_l / level) / math.log(prev_l / loss)
            else:
                f = (prev_l - level) / (prev_l - loss)
            return float(prev_t + f * (t - prev_t))
        prev_t, prev_l = t, loss
    return math.inf


def rank_key(seconds: Sequence[float], losses: Sequence[float], level: float, diverged: bool) -> tuple:
    """Sort key of one run (smaller is better): diverged runs last, then the time to ``level``,
    then the final loss (which orders the runs that never reach it)."""
    if diverged or not losses or not math.isfinite(losses[-1]):
        return (1, math.inf, math.inf)
    return (0, time_to_level(seconds, losses, level), float(losses[-1]))
