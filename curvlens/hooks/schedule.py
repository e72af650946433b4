"""When to measure: every ``N`` steps, or adaptively so that monitoring costs a set fraction.

With ``overhead=f`` the schedule keeps cumulative accounts of training time ``T`` (the time
between monitor calls) and monitoring time ``M``, and holds the slowdown of training
``M / T`` (time with the monitor / time without - 1) at ``f``: it measures at a call when the
expected cost ``c`` of the next measurement still keeps ``M + c <= f T``. ``M`` includes
monitoring work outside records (:meth:`Schedule.charge`: the monitor's construction and its
pilot products), so the first record waits until training has paid for the setup too.

Training steps right after a record can be slower than the others (the record displaced the
model's working set from the caches), a cost of monitoring that lands in ``T``: measured on the
digits MLP of ``benchmarks/monitor_overhead.py`` on a loaded machine, against the same steps of
an unmonitored copy, the first step after a record took 0.5-1.2 ms longer (steps of 1.6-1.9 ms)
and the next four 0.0-0.6 ms, together 2-4% of a record's cost. The schedule times the first
``settle_steps`` steps after each record one by one and charges their excess over the mean
ordinary step (training time per step outside those windows) to ``M``, moving it out of ``T``;
it is added to that record's cost, so ``c`` includes it. The charge is signed: a window faster
than the mean is credited back, so timing noise averages out instead of accumulating.

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
        settle_steps: training steps timed one by one after each record (0: none); while
            :attr:`settling`, the caller must report every step (``due`` with ``calls=1``).

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

    def __init__(self, every: int = 100, overhead: float | None = None, *, settle_steps: int = 4):
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every: expected an int >= 1 (steps between measurements), got {every!r}; "
                             "pass e.g. every=100")
        if overhead is not None:
            if isinstance(overhead, bool) or not isinstance(overhead, (int, float)) or not 0 < overhead < 1:
                raise ValueError(f"overhead: expected a fraction of training time in (0, 1), got {overhead!r}; "
                                 "pass e.g. overhead=0.05 for at most 5%")
            overhead = float(overhead)
        if isinstance(settle_steps, bool) or not isinstance(settle_steps, int) or settle_steps < 0:
            raise ValueError(f"settle_steps: expected an int >= 0 (steps timed after each record), got "
                             f"{settle_steps!r}; pass e.g. settle_steps=4")
        self.every, self.overhead, self.settle_steps = every, overhead, settle_steps
        self.train_time = 0.0
        self.monitor_time = 0.0
        self.setup_time = 0.0
        self.last_cost = math.nan
        self.guess = math.nan
        self.num_measured = 0
        self.record_time = 0.0
        self._last_exit: float | None = None
        self.settle_time = 0.0  # excess of the steps right after records, charged to monitoring
        self.base_time = 0.0  # training time and steps outside the post-record windows
        self.base_steps = 0
        self._settle_left = 0
        self._settle_sum = 0.0
        self._settle_n = 0

    @property
    def settling(self) -> bool:
        """Whether the steps after the last record are being timed one by one."""
        return self._settle_left > 0

    @property
    def step_time(self) -> float:
        """Mean time of an ordinary training step (outside post-record windows; 0 before any)."""
        return self.base_time / self.base_steps if self.base_steps > 0 else 0.0

    @property
    def expected_cost(self) -> float:
        """Cost assumed for the next measurement: the mean so far, or the last one if larger."""
        if self.num_measured == 0:
            return self.guess
        return max(self.record_time / self.num_measured, self.last_cost)

    def due(self, step: int, now: float, calls: int = 1) -> bool:
        """Whether to measure at ``step``; ``now`` is the clock at entry of the monitor call,
        ``calls`` the training steps since the previous ``due``/``done`` (this one included)."""
        if self._last_exit is not None:
            dt = max(0.0, now - self._last_exit)
            self.train_time += dt
            if self._settle_left > 0:
                self._settle_sum += dt
                self._settle_n += calls
                self._settle_left -= calls
                if self._settle_left <= 0:
                    self._settle()
            else:
                self.base_time += dt
                self.base_steps += calls
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
        if self._settle_n > 0:  # the previous window was cut short by this record
            self._settle()
        cost = max(0.0, float(cost))
        self.monitor_time += cost
        self.record_time += cost
        self.last_cost = cost
        self.num_measured += 1
        self._last_exit = now
        self._settle_left, self._settle_sum, self._settle_n = self.settle_steps, 0.0, 0

    def _settle(self) -> None:
        """Charge the closed window's excess over the mean ordinary step to monitoring."""
        n, total = self._settle_n, self._settle_sum
        self._settle_left, self._settle_sum, self._settle_n = 0, 0.0, 0
        if self.base_steps == 0:  # no ordinary step to compare with yet: count them as ordinary
            self.base_time += total
            self.base_steps += n
            return
        delta = total - n * self.step_time
        self.settle_time += delta
        self.monitor_time += delta
        self.train_time -= delta
        self.record_time += delta
        if math.isfinite(self.last_cost):
            self.last_cost = max(0.0, self.last_cost + delta)

    @property
    def fraction(self) -> float:
        """Measured slowdown so far: monitoring time (setup included) / training time."""
        if self.train_time > 0:
            return self.monitor_time / self.train_time
        return math.inf if self.monitor_time > 0 else 0.0
