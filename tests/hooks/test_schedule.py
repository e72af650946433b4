"""The cost accounts of the adaptive schedule, with injected clocks (no real timing)."""

import logging
import math

import numpy as np
import pytest
import torch
from torch import nn

import curvlens.hooks.monitor as monitor_module
from curvlens.hooks import CurvatureMonitor, Schedule
from curvlens.operators import HessianOperator


def _simulate(s, steps, step_cost, record_cost, rng=None, noise=0.0):
    """Train ``steps`` steps on a fake clock; returns the measured steps and the clock."""
    now, measured, after = 0.0, [], []
    for t in range(1, steps + 1):
        now += step_cost * (1 + noise * rng.uniform(-1, 1)) if rng is not None else step_cost
        if s.due(t, now):
            c = record_cost(len(measured))
            now += c
            s.done(c, now)
            measured.append(t)
            after.append(s.fraction)
    return measured, after, now


def test_slowdown_holds_within_a_point_with_setup_and_noisy_costs():
    rng = np.random.default_rng(0)
    s = Schedule(overhead=0.05)
    s.charge(1.0, now=0.0)  # construction and pilot products, before any training
    s.expect(0.75)
    costs = 0.5 * (1 + 0.3 * rng.uniform(-1, 1, size=100))
    measured, after, _ = _simulate(s, 20000, 0.01, lambda k: float(costs[k]), rng, noise=0.5)
    assert len(measured) >= 10
    # monitoring time (setup included) / training time: (time with / time without) - 1
    # (+ the signed excess of the steps timed after records: here pure step noise, averaging out)
    assert s.monitor_time == pytest.approx(1.0 + costs[: len(measured)].sum() + s.settle_time)
    assert abs(s.settle_time) < 0.002 * s.monitor_time
    assert abs(s.fraction - 0.05) <= 0.01
    assert max(after) <= 0.05 * 1.35  # at most one record's cost noise above the target after a record


def test_first_record_waits_until_training_paid_for_setup_and_the_guess():
    s = Schedule(overhead=0.1)
    s.charge(1.0, now=0.0)
    s.expect(0.5)
    assert s.expected_cost == 0.5 and s.setup_time == 1.0
    assert not s.due(1, now=14.9)  # 1 + 0.5 > 0.1 * 14.9
    assert s.due(2, now=15.0)  # 1 + 0.5 <= 0.1 * 15
    s.done(0.7, now=15.7)
    assert s.expected_cost == 0.7 and s.fraction == pytest.approx(1.7 / 15.0)


def test_an_underestimated_first_record_is_paid_back():
    s = Schedule(overhead=0.05)
    s.charge(0.5, now=0.0)
    s.expect(0.5)  # the guess; each record really costs 2 s
    measured, after, _ = _simulate(s, 60000, 0.01, lambda k: 2.0)
    assert after[0] > 0.05  # the first record overshoots: its cost was not known
    assert all(f <= 0.05 + 1e-12 for f in after[1:])  # afterwards the true cost is charged in advance
    assert abs(s.fraction - 0.05) <= 0.01 and len(measured) >= 10


def test_expected_cost_is_the_mean_or_the_last_if_larger():
    s = Schedule(overhead=0.5)
    assert math.isnan(s.expected_cost) and s.due(1, now=0.0)  # no guess: the first call measures
    for c in (1.0, 3.0, 1.0):
        s.done(c, now=0.0)
    assert s.expected_cost == pytest.approx(5.0 / 3.0)
    s.done(4.0, now=0.0)
    assert s.expected_cost == 4.0
    assert Schedule(every=7).fraction == 0.0


class _FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def _fake_costs(monkeypatch, product_seconds):
    """Every product advances the fake clock by ``product_seconds``; the monitor reads it."""
    clock = _FakeClock()
    monkeypatch.setattr(monitor_module, "_clocks", lambda: (clock, clock))
    real = HessianOperator._matmat

    def timed(self, V):
        clock.now += product_seconds * V.shape[1]
        return real(self, V)

    monkeypatch.setattr(HessianOperator, "_matmat", timed)
    return clock


def _problem():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(24, 3, generator=g, dtype=torch.float64), torch.randn(24, 1, generator=g, dtype=torch.float64)
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)).double(), x, y


def test_monitor_charges_its_setup_and_holds_the_target_on_an_injected_clock(monkeypatch):
    clock = _fake_costs(monkeypatch, 1.0)
    model, x, y = _problem()
    mon = CurvatureMonitor(model, nn.MSELoss(), (x, y), overhead=0.05, lanczos_steps=10)
    assert mon.setup_seconds == 2.0 and mon.schedule.monitor_time == 2.0  # the two pilot products
    assert mon.schedule.expected_cost == pytest.approx(1.25 * (10 + 1))  # no rebuild time on this clock
    first = None
    for t in range(1, 8001):
        clock.now += 0.5  # a training step
        rec = mon.step(t, lr=0.1)
        first = first or (rec and rec.step)
    assert first == math.ceil((2.0 + 13.75) / 0.05 / 0.5)  # training paid for setup + guess (0.5 s a step)
    assert len(mon.records) >= 10
    assert all(r.values["seconds"] == r.values["matvecs"] for r in mon.records)  # records charged in full
    assert abs(mon.overhead_fraction - 0.05) <= 0.01
    assert mon.overhead_fraction == pytest.approx(mon.schedule.monitor_time / (8000 * 0.5))


def test_fixed_every_warns_once_when_monitoring_dominates(monkeypatch, caplog):
    clock = _fake_costs(monkeypatch, 1.0)
    model, x, y = _problem()
    mon = CurvatureMonitor(model, nn.MSELoss(), (x, y), every=10, lanczos_steps=10)
    with caplog.at_level(logging.WARNING, logger="curvlens.hooks"):
        for t in range(1, 51):
            clock.now += 0.1
            mon.step(t, lr=0.01)
    msgs = [r.getMessage() for r in caplog.records if "costs" in r.getMessage()]
    assert len(msgs) == 1 and "measuring every 10 steps costs 1000% of the training time" in msgs[0]
    assert "pass overhead=0.05" in msgs[0]


def test_cheap_fixed_every_does_not_warn(monkeypatch, caplog):
    clock = _fake_costs(monkeypatch, 0.001)
    model, x, y = _problem()
    mon = CurvatureMonitor(model, nn.MSELoss(), (x, y), every=10, lanczos_steps=10)
    with caplog.at_level(logging.WARNING, logger="curvlens.hooks"):
        for t in range(1, 51):
            clock.now += 0.1
            mon.step(t, lr=0.01)
    assert len(mon.records) == 5 and not [r for r in caplog.records if "costs" in r.getMessage()]


def test_records_run_without_cyclic_gc_and_restore_its_state():
    import gc

    model, x, y = _problem()
    mon = CurvatureMonitor(model, nn.MSELoss(), (x, y), lanczos_steps=10)
    seen = []
    real = mon.measurer.measure
    enabled = gc.isenabled()
    try:
        mon.measurer.measure = lambda view, step: (seen.append(gc.isenabled()), real(view, step))[1]
        gc.enable()
        mon.measure(1, lr=0.1)
        assert seen == [False] and gc.isenabled()  # off inside the record, back on after
        gc.disable()
        mon.measure(2, lr=0.1)
        assert seen == [False, False] and not gc.isenabled()  # a disabled collector stays disabled
    finally:
        (gc.enable if enabled else gc.disable)()


class _CountingClock(_FakeClock):
    def __init__(self):
        super().__init__()
        self.reads = 0

    def __call__(self):
        self.reads += 1
        return self.now


def _run_counting(monkeypatch, steps, step_seconds, skip=True, **kw):
    """Drive a monitor step by step on a counting fake clock; returns it, the measured steps and
    the clock reads made by calls that did not measure."""
    clock = _CountingClock()
    monkeypatch.setattr(monitor_module, "_clocks", lambda: (clock, clock))
    real = HessianOperator._matmat

    def timed(self, V):
        clock.now += 1.0 * V.shape[1]
        return real(self, V)

    monkeypatch.setattr(HessianOperator, "_matmat", timed)
    model, x, y = _problem()
    mon = CurvatureMonitor(model, nn.MSELoss(), (x, y), lanczos_steps=10, **kw)
    if not skip:
        mon._plan_skip = lambda: None
    idle_reads = 0
    for t in range(1, steps + 1):
        clock.now += step_seconds
        before = clock.reads
        if mon.step(t, lr=0.1) is None:
            idle_reads += clock.reads - before
    return mon, [r.step for r in mon.records], idle_reads


def test_fixed_every_reads_no_clock_between_records(monkeypatch):
    mon, steps, idle_reads = _run_counting(monkeypatch, 50, 0.1, every=10)
    # only the 4 steps after each record are timed (the post-record excess, see Schedule)
    assert steps == [10, 20, 30, 40, 50] and idle_reads == 4 * 4


def test_adaptive_schedule_reads_the_clock_rarely_and_measures_the_same_steps(monkeypatch):
    mon, steps, idle_reads = _run_counting(monkeypatch, 8000, 0.5, overhead=0.05)
    ref, ref_steps, ref_reads = _run_counting(monkeypatch, 8000, 0.5, skip=False, overhead=0.05)
    assert len(steps) >= 10 and steps == ref_steps  # skipping calls changes no decision
    assert ref_reads == 8000 - len(ref_steps)  # without skipping: one read per idle call
    assert idle_reads < 0.05 * ref_reads
    assert mon.overhead_fraction == pytest.approx(ref.overhead_fraction)  # skipped calls counted at the mean


def _simulate_slow_after(s, steps, step_cost, record_cost, extra):
    """Like ``_simulate``; the ``k``-th step after a record costs ``extra[k - 1]`` more."""
    now, since, measured, paid = 0.0, None, [], 0.0
    for t in range(1, steps + 1):
        now += step_cost
        if since is not None:
            since += 1
            if since <= len(extra):
                now += extra[since - 1]
                paid += extra[since - 1]
        if s.due(t, now):
            now += record_cost
            s.done(record_cost, now)
            measured.append(t)
            since = 0
    return measured, paid


@pytest.mark.parametrize("overhead", [None, 0.05])
def test_slow_steps_after_a_record_are_charged_to_monitoring(overhead):
    extra = (0.05, 0.02, 0.01)  # the first three steps after each record are slower
    s = Schedule(every=100, overhead=overhead)
    s.charge(0.0, now=0.0)  # the clock starts with training
    measured, paid = _simulate_slow_after(s, 30000, 0.01, 0.5, extra)
    assert len(measured) >= 10
    base = 30000 * 0.01  # training time without the monitor
    true = (len(measured) * 0.5 + paid) / base  # (time with / time without) - 1
    assert s.settle_time == pytest.approx(paid)
    assert s.fraction == pytest.approx(true, rel=1e-9) and s.train_time == pytest.approx(base)
    assert s.step_time == pytest.approx(0.01)
    if overhead is not None:
        assert abs(true - 0.05) <= 0.01
        uncharged = Schedule(overhead=overhead, settle_steps=0)
        uncharged.charge(0.0, now=0.0)
        m0, paid0 = _simulate_slow_after(uncharged, 30000, 0.01, 0.5, extra)
        assert uncharged.fraction == pytest.approx(len(m0) * 0.5 / (base + paid0))  # the excess counts as training
        assert (len(m0) * 0.5 + paid0) / base - 0.05 > 0.006  # and the true slowdown overshoots the target


def test_settle_charge_is_signed():
    s = Schedule(every=10, settle_steps=2)
    now = 0.0
    for t in range(1, 10):  # ordinary steps of 1 s
        now += 1.0
        s.due(t, now)
    now += 1.0
    assert s.due(10, now)
    s.done(3.0, now + 3.0)
    now += 3.0
    assert s.settling
    for dt in (0.5, 0.7):  # faster than usual after the record: credited back
        now += dt
        s.due(11, now)
    assert not s.settling and s.settle_time == pytest.approx(-0.8)
    assert s.monitor_time == pytest.approx(2.2) and s.record_time == pytest.approx(2.2)
    assert s.last_cost == pytest.approx(2.2)
    assert s.train_time == pytest.approx(8.0 + 1.0 + 2.0)  # steps 2-10, the window at the mean step
    for t, dt in ((12, 1.0), (13, 1.0)):
        now += dt
        s.due(t, now)
    assert s.base_steps == 11 and s.step_time == pytest.approx(1.0)  # the window is not an ordinary step
    with pytest.raises(ValueError, match=r"^settle_steps: expected an int >= 0 .*got -1; pass e.g. settle_steps=4$"):
        Schedule(settle_steps=-1)


def test_monitor_charges_slow_steps_after_records_on_an_injected_clock(monkeypatch):
    clock = _CountingClock()
    monkeypatch.setattr(monitor_module, "_clocks", lambda: (clock, clock))
    real = HessianOperator._matmat

    def timed(self, V):
        clock.now += 1.0 * V.shape[1]
        return real(self, V)

    monkeypatch.setattr(HessianOperator, "_matmat", timed)
    model, x, y = _problem()
    mon = CurvatureMonitor(model, nn.MSELoss(), (x, y), overhead=0.05, lanczos_steps=10)
    extra, paid, since, idle_reads = (3.0, 1.0), 0.0, None, 0
    start = clock.now - mon.setup_seconds
    for t in range(1, 12001):
        clock.now += 0.5
        if since is not None:
            since += 1
            if since <= len(extra):
                clock.now += extra[since - 1]
                paid += extra[since - 1]
        before = clock.reads
        rec = mon.step(t, lr=0.1)
        if rec is not None:
            since = 0
        else:
            idle_reads += clock.reads - before
    true = (clock.now - start) / (12000 * 0.5) - 1  # (time with / time without) - 1
    assert len(mon.records) >= 10
    assert mon.schedule.settle_time == pytest.approx(paid)
    assert mon.overhead_fraction == pytest.approx(true, rel=1e-6)
    assert abs(true - 0.05) <= 0.01
    assert idle_reads < 0.05 * 12000  # the timed steps add 4 clock reads a record
