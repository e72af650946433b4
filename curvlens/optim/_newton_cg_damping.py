"""Levenberg-Marquardt adaptation of the Tikhonov damping from the reduction ratio.

Reference: J. Martens, "Deep learning via Hessian-free optimization" (ICML 2010), Sec. 4.1;
J. Martens and I. Sutskever, "Training deep and recurrent networks with Hessian-free
optimization" (2012), Sec. 8.5. The reduction ratio compares the decrease of the objective
with the decrease the damped quadratic model predicted,
``rho = (f(theta + s) - f(theta)) / (q(s) - q(0))``; a poor prediction (``rho < 1/4``) means
the model is trusted too far and the damping grows, a good one (``rho > 3/4``) lets it shrink.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["DampingRule", "reduction_ratio"]


def reduction_ratio(actual: float, predicted: float) -> float:
    """``actual / predicted`` for a predicted decrease ``predicted < 0``; ``-inf`` for a
    non-finite actual change, 0 when the model predicts no decrease.

    Example:
        >>> reduction_ratio(-0.5, -1.0), reduction_ratio(float("nan"), -1.0)
        (0.5, -inf)
    """
    if not math.isfinite(actual):
        return -math.inf
    if not (predicted < 0) or not math.isfinite(predicted):
        return 0.0
    return actual / predicted


@dataclass(frozen=True)
class DampingRule:
    """``lambda <- boost * lambda`` when ``rho < low``, ``drop * lambda`` when ``rho > high``.

    The result is clamped to ``[minimum, maximum]``; a damping of exactly 0 stays 0 (an
    undamped run is not adapted). After a rejected step with a non-finite value the damping
    becomes ``max(nonfinite_boost * lambda, nonfinite_floor)``.

    Example:
        >>> rule = DampingRule()
        >>> rule.update(1.0, 0.1), rule.update(1.0, 0.5), round(rule.update(1.0, 0.9), 6)
        (1.5, 1.0, 0.666667)
    """

    low: float = 0.25
    high: float = 0.75
    boost: float = 1.5
    drop: float = 2.0 / 3.0
    minimum: float = 1e-8
    maximum: float = 1e8
    nonfinite_boost: float = 10.0
    nonfinite_floor: float = 1e-2

    def __post_init__(self):
        if not (0 <= self.low <= self.high):
            raise ValueError(f"damping_rule: expected 0 <= low <= high, got low={self.low!r}, high={self.high!r}; "
                             "Martens uses low=0.25, high=0.75")
        if not (self.boost >= 1 and 0 < self.drop <= 1):
            raise ValueError(f"damping_rule: expected boost >= 1 and 0 < drop <= 1, got boost={self.boost!r}, "
                             f"drop={self.drop!r}; Martens uses boost=1.5, drop=2/3")
        if not (0 <= self.minimum <= self.maximum):
            raise ValueError(f"damping_rule: expected 0 <= minimum <= maximum, got {self.minimum!r}, "
                             f"{self.maximum!r}; e.g. minimum=1e-8, maximum=1e8")

    def update(self, damping: float, rho: float) -> float:
        """The damping for the next step after a step with reduction ratio ``rho``."""
        if damping == 0.0:
            return 0.0
        if rho < self.low:
            damping *= self.boost
        elif rho > self.high:
            damping *= self.drop
        return min(max(damping, self.minimum), self.maximum)

    def after_nonfinite(self, damping: float) -> float:
        """The damping after a step rejected for a NaN / inf loss or curvature product."""
        return min(max(self.nonfinite_boost * damping, self.nonfinite_floor), self.maximum)
