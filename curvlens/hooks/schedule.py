"""When to measure: every ``N`` steps, or adaptively so that monitoring costs a set fraction.

With ``overhead=f`` the schedule keeps cumulative accounts of training time ``T`` (the time
between monitor calls) and monitoring time ``M``, and holds the slowdown of training
``M / T`` (time with the monitor / time without - 1) at ``f``: it measures at a call when the
expected cost ``c`` of the next measurement still keeps ``M + c <= f T``. ``M`` includes
monitoring work outside records (:meth:`Schedule.charge`: the monitor's construction and its
pilot products), so the first record waits until training has paid for the setup too.

``c`` is the mean cost of the measurements so far, or the last one's when that was larger.
Before the first record ``c`` is a guess (:meth:`Schedule.expect`: the monitor passes one graph
rebuild plus the record's products at the timed cost of a product); without a guess the first
call measures. Since a measurement is only started when the budget already covers it, ``M / T``
is at most ``f`` after every record whose cost was not underestimated, and it stays within
``c / T`` of ``f`` (one record's share, which shrinks as records accumulate) over the run.
"""

from __future__ import annotations

import math

__all__ = ["Schedule"]


class Schedule:
    """Decide at each training step whether to measure.

    Args:
        every: measure when ``step % every == 0`` (ignored when ``overhead`` is given).
        overhead: target slowdown of training, ``monitoring time / training time``, in (0, 1).

    Example:
        >>> s = Schedule(every=10)
        >>> [t for t in range(1, 35) if s.due(t, now=0.0)]
        [10, 20, 30]
        >>> s = Schedule(overhead=0.1)  # training steps of 1 s, measurements of 2 s
        >>> now, steps = 0.0, []
        >>> for t in range(1, 82):
        ...     now += 1.0
        ...     if s.due(t, now):
        ...         now += 2.0
        ...         s.done(2.0, now)
        ...         steps.append(t)
        >>> steps, round(s.fraction, 3)
        ([1, 41, 61, 81], 0.1)
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
        self.setup_time = 0.0
        self.last_cost = math.nan
        self.guess = math.nan
        self.num_measured = 0
        self.record_time = 0.0
        self._last_exit: float | None = None

    @property
    def expected_cost(self) -> float:
        """Cost assumed for the next measurement: the mean so far, or the last one if larger."""
        if self.num_measured == 0:
            return self.guess
        return max(self.record_time / self.num_measured, self.last_cost)

    def due(self, step: int, now: float) -> bool:
        """Whether to measure at ``step``; ``now`` is the clock at entry of the monitor call."""
        if self._last_exit is not None:
            self.train_time += max(0.0, now - self._last_exit)
        self._last_exit = now
        if self.overhead is None:
            return step % self.every == 0
        c = self.expected_cost
        if not math.isfinite(c):
            return True
        return self.monitor_time + c <= self.overhead * self.train_time

    def charge(self, cost: float, now: float) -> None:
        """Count ``cost`` seconds of monitoring done outside a record (e.g. construction), ending at ``now``."""
        cost = max(0.0, float(cost))
        self.monitor_time += cost
        self.setup_time += cost
        self._last_exit = now

    def expect(self, cost: float) -> None:
        """Guess the cost of the first record (used until a record was measured)."""
        if math.isfinite(cost) and cost > 0:
            self.guess = float(cost)

    def done(self, cost: float, now: float) -> None:
        """Record a measurement that cost ``cost`` seconds, ending at clock ``now``."""
        cost = max(0.0, float(cost))
        self.monitor_time += cost
        self.record_time += cost
        self.last_cost = cost
        self.num_measured += 1
        self._last_exit = now

    @property
    def fraction(self) -> float:
        """Measured slowdown so far: monitoring time (setup included) / training time."""
        if self.train_time > 0:
            return self.monitor_time / self.train_time
        return math.inf if self.monitor_time > 0 else 0.0
