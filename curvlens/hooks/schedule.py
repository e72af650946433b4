"""When to measure: every ``N`` steps, or adaptively so that monitoring costs a set fraction.

With ``overhead=f`` the schedule keeps cumulative accounts of training time ``T`` (between
monitor calls) and monitoring time ``M``, and measures at a call when the expected cost ``c``
of the next measurement (the last one's) still keeps ``(M + c) / (T + M + c) <= f``. ``M``
includes monitoring work outside records (:meth:`Schedule.charge`: the monitor's
construction, a pilot product). Before the first record, ``c`` is a conservative guess
(:meth:`Schedule.expect`: the monitor passes 1.5 x the products of a record x the time of
its first, graph-building, product); without a guess the first call measures. Since a
measurement is only started when the budget already covers it, the fraction stays at or below
``f`` after every record except when a record costs more than the last one, and approaches
``f`` over a run of many records.
"""

from __future__ import annotations

import math

__all__ = ["Schedule"]


class Schedule:
    """Decide at each training step whether to measure.

    Args:
        every: measure when ``step % every == 0`` (ignored when ``overhead`` is given).
        overhead: target fraction of total time spent measuring, in (0, 1).

    Example:
        >>> s = Schedule(every=10)
        >>> [t for t in range(1, 35) if s.due(t, now=0.0)]
        [10, 20, 30]
    """

    def __init__(self, every: int = 100, overhead: float | None = None):
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every: expected an int >= 1 (steps between measurements), got {every!r}; "
                             "pass e.g. every=100")
        if overhead is not None:
            if isinstance(overhead, bool) or not isinstance(overhead, (int, float)) or not 0 < overhead < 1:
                raise ValueError(f"overhead: expected a fraction of training time in (0, 1), got {overhead!r}; "
                                 "pass e.g. overhead=0.05 for at most 5%")
            overhead = float(overhead)
        self.every, self.overhead = every, overhead
        self.train_time = 0.0
        self.monitor_time = 0.0
        self.last_cost = math.nan
        self._last_exit: float | None = None

    def due(self, step: int, now: float) -> bool:
        """Whether to measure at ``step``; ``now`` is the clock at entry of the monitor call."""
        if self._last_exit is not None:
            self.train_time += max(0.0, now - self._last_exit)
        self._last_exit = now
        if self.overhead is None:
            return step % self.every == 0
        if not math.isfinite(self.last_cost):
            return True
        c, f = self.last_cost, self.overhead
        return self.monitor_time + c <= f * (self.train_time + self.monitor_time + c)

    def charge(self, cost: float, now: float) -> None:
        """Count ``cost`` seconds of monitoring done outside a record (e.g. construction), ending at ``now``."""
        self.monitor_time += max(0.0, float(cost))
        self._last_exit = now

    def expect(self, cost: float) -> None:
        """Guess the cost of the first record (used until a record was measured)."""
        if not math.isfinite(self.last_cost) and math.isfinite(cost) and cost > 0:
            self.last_cost = float(cost)

    def done(self, cost: float, now: float) -> None:
        """Record a measurement that cost ``cost`` seconds, ending at clock ``now``."""
        self.monitor_time += cost
        self.last_cost = cost
        self._last_exit = now

    @property
    def fraction(self) -> float:
        """Measured fraction of time spent monitoring so far."""
        total = self.train_time + self.monitor_time
        return self.monitor_time / total if total > 0 else 0.0
