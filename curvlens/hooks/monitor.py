"""``CurvatureMonitor``: curvature of a fixed monitoring subset, measured during training.

The monitor builds one live :class:`~curvlens.operators.HessianOperator` on the monitoring
subset at construction; after the optimizer changes the weights, its next product rebuilds
the retained graphs. Each measurement (see :mod:`curvlens.hooks.measure`) warm-starts
Lanczos from the previous eigenvector, is checked by the alert rules
(:mod:`curvlens.hooks.alerts`), and is appended to an HDF5 series
(:mod:`curvlens.io.series`) and to TensorBoard.

The monitor does not perturb training: products run inside the problem's state guard (the
train/eval flags, BatchNorm buffers, ``.grad`` and the global RNG are restored), all
randomness comes from the monitor's own generator, and the optimizer is only read.
"""

from __future__ import annotations

import gc
import logging
import math
import os
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from curvlens._rng import resolve_generator
from curvlens.hooks.alerts import CURVATURE_COLUMNS, Alert, AlertTracker
from curvlens.errors import NonFiniteLossError
from curvlens.hooks.measure import ESTIMATORS, METRICS, Measurer
from curvlens.hooks.optimizer_view import read_optimizer
from curvlens.hooks.schedule import Schedule
from curvlens.io.series import CurvatureSeries, SeriesWriter
from curvlens.operators import HessianOperator
from curvlens.problem import Problem

__all__ = ["CurvatureMonitor", "MonitorRecord"]

log = logging.getLogger("curvlens.hooks")


@dataclass(frozen=True)
class MonitorRecord:
    """One measurement: the training ``step``, ``values`` (column -> float) and its ``alerts``."""

    step: int
    values: dict
    alerts: tuple[Alert, ...]


def _clocks() -> tuple[Callable[[], float], Callable[[], float]]:
    """The clocks of the cost accounts: CPU time of this process (models on the CPU), wall time."""
    return time.process_time, time.perf_counter


def _check_metrics(metrics: Any) -> tuple[str, ...]:
    if isinstance(metrics, str) or not isinstance(metrics, (tuple, list)) or not metrics:
        raise ValueError(f"metrics: expected a non-empty tuple drawn from {METRICS}, got {metrics!r}; "
                         "pass e.g. metrics=('lambda_max',)")
    bad = [m for m in metrics if m not in METRICS]
    if bad:
        raise ValueError(f"metrics: expected names from {METRICS}, got {bad[0]!r}; pass e.g. metrics=('lambda_max',)")
    return tuple(dict.fromkeys(metrics))


def _check_count(value: Any, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name}: expected an int >= {low}, got {value!r}")
    return value


class CurvatureMonitor:
    """Track sharpness, trace and negative curvature of a fixed data subset during training.

    Args:
        model: the network being trained.
        loss_fn: its loss (a criterion, a loss name, or ``loss_fn(model, batch)``).
        data: the fixed monitoring subset: one ``(inputs, targets)`` batch or a list of them.
        every: measure when the step is a multiple of ``every``. A record costs the
            ``lanczos_steps`` products on ``data`` plus a graph rebuild; when that exceeds a
            quarter of the training time between records, a warning (once) says so.
        overhead: instead of ``every``: measure as often as keeps the slowdown of training,
            monitoring time / training time, at this fraction (e.g. 0.05), the monitor's setup
            included; see :mod:`curvlens.hooks.schedule`.
        metrics: any of ``"lambda_max"``, ``"trace"``, ``"negative_mass"``.
        per_layer: also record each block's top eigenvalue and trace.
        out: HDF5 file for the series (created, or appended to; see :mod:`curvlens.io.series`).
        tensorboard: a ``torch.utils.tensorboard.SummaryWriter`` or a log directory.
        generator: seed or ``torch.Generator`` of the probes and Lanczos starts.
        on_alert: called with each :class:`~curvlens.hooks.alerts.Alert`.
        rtol: certificate tolerance of the top eigenvalues.
        estimator: ``"shared"`` (default): one Lanczos run from a Rademacher probe per record
            serves all metrics, trace and negative mass pooled over the last ``pool`` records;
            ``"separate"``: independent estimates per record with within-record standard errors
            (see :mod:`curvlens.hooks.measure`).
        lanczos_steps: Lanczos steps of the shared run (``lanczos_steps`` products a record).
        pool: records pooled into the shared trace and negative mass.
        trace_matvecs, density_matvecs: product budgets of the separate trace and density estimates
            (the density's split into >= 3 probes: :func:`~curvlens.hooks.measure.density_split`).
        problem_kwargs: more :class:`~curvlens.Problem` options (``params``, ``mode``, ...).

    Example:
        >>> from torch import nn
        >>> g = torch.Generator().manual_seed(0)
        >>> x, y = torch.randn(32, 4, generator=g), torch.randn(32, 1, generator=g)
        >>> model = nn.Linear(4, 1)
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.05)
        >>> mon = CurvatureMonitor(model, nn.MSELoss(), (x, y), every=5, metrics=("lambda_max",))
        >>> handle = mon.attach(opt)
        >>> for _ in range(10):
        ...     opt.zero_grad(); nn.MSELoss()(model(x), y).backward(); opt.step()
        >>> [r.step for r in mon.records], mon.records[-1].values["eos_ratio"] < 1
        ([5, 10], True)
        >>> handle.remove()
    """

    def __init__(self, model, loss_fn, data, *, every: int = 100, overhead: float | None = None,
                 metrics=METRICS, per_layer: bool = False, out: str | os.PathLike | None = None,
                 tensorboard: Any = None, generator: torch.Generator | int | None = 0,
                 on_alert: Callable[[Alert], None] | None = None, rtol: float = 1e-3,
                 estimator: str = "shared", lanczos_steps: int = 20, pool: int = 4,
                 trace_matvecs: int = 30, density_matvecs: int = 60, **problem_kwargs):
        cpu_clock, wall_clock = _clocks()
        t0_cpu, t0_wall = cpu_clock(), wall_clock()
        self.schedule = Schedule(every, overhead)
        self.metrics = _check_metrics(metrics)
        if not isinstance(per_layer, bool):
            raise TypeError(f"per_layer: expected True or False, got {type(per_layer).__name__}")
        if on_alert is not None and not callable(on_alert):
            raise TypeError(f"on_alert: expected a callable taking an Alert, got {type(on_alert).__name__}")
        if isinstance(rtol, bool) or not isinstance(rtol, (int, float)) or not 0 < rtol < 1:
            raise ValueError(f"rtol: expected a tolerance in (0, 1), got {rtol!r}; pass e.g. rtol=1e-3")
        _check_count(trace_matvecs, "trace_matvecs", 4)
        _check_count(density_matvecs, "density_matvecs", 6)  # 3 probes of >= 2 steps
        if estimator not in ESTIMATORS:
            raise ValueError(f"estimator: expected one of {ESTIMATORS}, got {estimator!r}; pass estimator='shared' "
                             "(one Lanczos run a record) or 'separate' (independent estimates)")
        _check_count(lanczos_steps, "lanczos_steps", 2)
        _check_count(pool, "pool", 1)
        if out is not None and not isinstance(out, (str, os.PathLike)):
            raise TypeError(f"out: expected a file name for the HDF5 series, got {type(out).__name__}")
        self.tensorboard = self._tensorboard(tensorboard)
        self.gen = resolve_generator(generator)
        self.seed = int(self.gen.initial_seed())
        problem = Problem(model, loss_fn, data, **problem_kwargs)
        self.op = HessianOperator(problem)
        self.measurer = Measurer(self.op, metrics=self.metrics, per_layer=per_layer, rtol=float(rtol),
                                 trace_matvecs=trace_matvecs, density_matvecs=density_matvecs, generator=self.gen,
                                 estimator=estimator, lanczos_steps=lanczos_steps, pool=pool)
        # shared estimator: first and last of ``pool + 1`` pooled values have disjoint pools;
        # separate: independent records whose 3-probe errors are noisy, four rises in a row
        self.alerts = AlertTracker(window=pool + 1 if estimator == "shared" else 5)
        self.on_alert = on_alert
        self.records: list[MonitorRecord] = []
        self.optimizer = None
        self._count = 0
        self._skip = 0  # calls of step() that cannot be due (see _plan_skip): no clock read
        self._skipped = 0  # calls since the last clock read
        self._calls = 0  # calls of step(); the mean training time per call is per step
        self._last_look = 0
        self._handles: list[Any] = []
        self._cost_warned = False
        self._clock = cpu_clock if problem.device.type == "cpu" else wall_clock
        self.writer = None
        if out is not None:
            meta = {"metrics": ",".join(self.metrics), "per_layer": per_layer, "seed": self.seed,
                    "estimator": estimator, "lanczos_steps": lanczos_steps, "pool": pool,
                    "num_params": int(problem.dim), "num_samples": int(problem.num_samples),
                    "schedule": f"overhead={overhead}" if overhead is not None else f"every={every}"}
            self.writer = SeriesWriter(out, meta=meta)
        if overhead is not None:
            self.schedule.expect(self._pilot())
        start = t0_cpu if self._clock is cpu_clock else t0_wall
        now = self._clock()
        self.setup_seconds = now - start
        self.schedule.charge(self.setup_seconds, now)

    def _pilot(self) -> float:
        """Guess a record's cost from two timed products (NaN on overflow).

        The first product rebuilds the graphs, the second is a plain one: the guess is
        ``1.25 (rebuild + (P + 1) product)`` for the ``P`` products of a record and its loss.
        """
        v = torch.zeros(self.op.dim, dtype=self.op.dtype, device=self.op.device)
        try:
            with torch.enable_grad():
                t0 = self._clock()
                self.op.matvec(v)
                t1 = self._clock()
                self.op.matvec(v)
                t2 = self._clock()
        except NonFiniteLossError:
            return math.nan
        product = t2 - t1
        rebuild = max(0.0, t1 - t0 - product)
        return 1.25 * (rebuild + (self.measurer.products_per_record + 1) * product)

    @staticmethod
    def _tensorboard(tb: Any):
        if tb is None:
            return None
        if isinstance(tb, (str, os.PathLike)):
            from curvlens.integrations.tensorboard import TensorBoardLogger

            return TensorBoardLogger(tb)
        if callable(getattr(tb, "add_scalar", None)):
            from curvlens.integrations.tensorboard import TensorBoardLogger

            return TensorBoardLogger(tb)
        raise TypeError(f"tensorboard: expected a SummaryWriter or a log directory, got {type(tb).__name__}; "
                        "pass torch.utils.tensorboard.SummaryWriter(logdir) or a folder name")

    # ------------------------------------------------------------------ training-loop entry points
    def attach(self, optimizer, *, start_step: int = 0):
        """Measure after optimizer steps (``optimizer.register_step_post_hook``).

        The hook counts steps from ``start_step`` (pass the global step when resuming) and
        calls :meth:`step` after each. Returns the hook's removable handle.
        """
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer: expected a torch.optim.Optimizer, got {type(optimizer).__name__}")
        _check_count(start_step, "start_step", 0)
        last = self.writer.last_step if self.writer is not None else None
        if last is not None and start_step < last:
            raise ValueError(f"start_step: expected >= {last}, the last step recorded in {str(self.writer.path)!r}, "
                             f"got {start_step}; pass the global step of the resumed run, e.g. start_step={last}")
        self.optimizer, self._count = optimizer, start_step

        def hook(opt, args, kwargs):
            self._count += 1
            self.step(self._count, optimizer=opt)

        handle = optimizer.register_step_post_hook(hook)
        self._handles.append(handle)
        return handle

    def step(self, step: int | None = None, *, optimizer=None, lr: float | None = None) -> MonitorRecord | None:
        """Measure now if the schedule says so (call once per training step in hand-written loops).

        Args:
            step: the training step (default: one more than the last call's).
            optimizer: read the learning rate / preconditioner from it (default: the attached one).
            lr: the learning rate, for loops without a ``torch.optim`` optimizer.

        Returns:
            The new :class:`MonitorRecord`, or None when no measurement was due.
        """
        if step is None:
            step = self._count + 1
        _check_count(step, "step", 0)
        self._count = step
        self._calls += 1
        # calls that cannot be due return before reading the clock: a clock read and the
        # schedule's bookkeeping cost ~10-30 us right after an optimizer step (cold caches),
        # 1-2% of a 1 ms training step, uncharged; skipped calls' time is counted at the next look
        # (the first steps after a record are timed one by one: see Schedule.settling)
        if not self.schedule.settling and (
                self._skip > 0 or (self.schedule.overhead is None and step % self.schedule.every != 0)):
            self._skip = max(0, self._skip - 1)
            self._skipped += 1
            return None
        now = self._clock()
        calls, self._skipped, self._last_look = self._skipped + 1, 0, self._calls
        if not self.schedule.due(step, now, calls):
            self._plan_skip()
            return None
        return self.measure(step, optimizer=optimizer, lr=lr, _start=now)

    def _plan_skip(self) -> None:
        """After a look that was not due under ``overhead=``: skip half the calls the budget
        still needs at the mean training time per step so far (the looks approach the due step
        geometrically, and read the clock at every call in the last two steps before it)."""
        s, per_step = self.schedule, self._step_time()
        c = s.expected_cost
        if s.overhead is None or per_step <= 0 or not math.isfinite(c) or s.settling:
            return
        deficit = (s.monitor_time + c) / s.overhead - s.train_time
        self._skip = max(0, int(0.5 * deficit / per_step))

    def _step_time(self) -> float:
        """Mean training time per call of :meth:`step` up to the last clock read (0 before any)."""
        return self.schedule.train_time / self._last_look if self._last_look > 0 else 0.0

    def measure(self, step: int, *, optimizer=None, lr: float | None = None, _start: float | None = None
                ) -> MonitorRecord:
        """Measure at ``step`` regardless of the schedule; write, log and alert."""
        start = self._clock() if _start is None else _start
        _check_count(step, "step", 0)
        self._skip = 0
        opt = optimizer if optimizer is not None else self.optimizer
        view = read_optimizer(opt, self.op.params, lr=lr) if (opt is not None or lr is not None) else None
        mv0 = self.op.num_matvecs
        # no cyclic GC inside a record: its many short-lived temporaries would otherwise survive
        # young collections and trigger full collections later, in the training steps, whose
        # cost grows with the whole heap (measured: 0.3-0.4 s each with torch, scipy, sklearn
        # loaded). The collector's state is restored; temporaries are freed by reference count.
        gc_enabled = gc.isenabled()
        gc.disable()
        try:
            values = self.measurer.measure(view, int(step))
        finally:
            if gc_enabled:
                gc.enable()
        values["matvecs"] = float(self.op.num_matvecs - mv0)
        values["seconds"] = self._clock() - start
        measured = tuple(c for c in CURVATURE_COLUMNS if c in self.metrics
                         or (c == "preconditioned_sharpness" and c in values))
        alerts = tuple(self.alerts.update(step, values, measured=measured))
        rec = MonitorRecord(int(step), values, alerts)
        self.records.append(rec)
        for a in alerts:
            log.warning(a.message)
            if self.on_alert is not None:
                self.on_alert(a)
        if self.writer is not None:
            self.writer.append(int(step), values, [(a.kind, a.message) for a in alerts])
        if self.tensorboard is not None:
            self.tensorboard.write(int(step), values)
        self.schedule.done(self._clock() - start, self._clock())
        self._check_cost()
        return rec

    def _check_cost(self) -> None:
        """Warn once when a fixed ``every`` makes monitoring slow training down by more than 25%."""
        s = self.schedule
        if s.overhead is not None or self._cost_warned or s.num_measured < 2 or s.train_time <= 0:
            return
        share = s.record_time / s.train_time
        if share > 0.25:
            self._cost_warned = True
            log.warning("CurvatureMonitor: measuring every %d steps costs %.0f%% of the training time "
                        "(%.3g s a record); pass overhead=0.05 to cap the cost, or a larger every",
                        s.every, 100 * share, s.record_time / s.num_measured)

    # ------------------------------------------------------------------ results, lifetime
    def series(self) -> CurvatureSeries:
        """The records of this session as a :class:`~curvlens.io.series.CurvatureSeries`."""
        names = list(dict.fromkeys(k for r in self.records for k in r.values))
        alerts = [a for r in self.records for a in r.alerts]
        return CurvatureSeries(
            steps=np.array([r.step for r in self.records], dtype=np.int64),
            columns={k: np.array([r.values.get(k, np.nan) for r in self.records], dtype=np.float64) for k in names},
            alert_steps=np.array([a.step for a in alerts], dtype=np.int64),
            alert_kinds=np.array([a.kind for a in alerts], dtype=str),
            alert_messages=np.array([a.message for a in alerts], dtype=str),
            meta={"metrics": ",".join(self.metrics), "seed": self.seed})

    @property
    def overhead_fraction(self) -> float:
        """Slowdown of training by the monitor, by its own account: monitoring time
        (construction, pilot products, records, and the excess of the training steps right
        after records, see :mod:`curvlens.hooks.schedule`) / training time (between monitor calls).

        Calls that cannot be due do not read the clock; the training time of those since the
        last read is counted at the mean time per step."""
        s = self.schedule
        train = s.train_time + self._skipped * self._step_time()
        if train > 0:
            return s.monitor_time / train
        return s.fraction

    def close(self) -> None:
        """Remove the optimizer hooks and flush / close TensorBoard."""
        for h in self._handles:
            h.remove()
        self._handles.clear()
        if self.tensorboard is not None:
            self.tensorboard.close()

    def __enter__(self) -> "CurvatureMonitor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
