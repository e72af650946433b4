"""Alerts (edge of stability, negative curvature, non-finite), schedule, and bad inputs."""

import logging
import math

import pytest
import torch
from torch import nn

from curvlens.hooks import AlertTracker, CurvatureMonitor, read_optimizer
from curvlens.io.series import load_series


def _linear_problem():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=g, dtype=torch.float64)
    y = torch.randn(64, 1, generator=g, dtype=torch.float64)
    torch.manual_seed(0)
    model = nn.Linear(4, 1).double()
    # MSE of a linear model: H = 2/N [x 1]^T [x 1], constant
    X1 = torch.cat([x, torch.ones(64, 1, dtype=torch.float64)], 1)
    H = 2.0 / 64 * X1.T @ X1
    return model, x, y, torch.linalg.eigvalsh(H)[-1].item()


def _gd_run(lr_factor, tmp_path, caplog):
    model, x, y, lam = _linear_problem()
    lr = lr_factor * 2.0 / lam
    opt = torch.optim.SGD(model.parameters(), lr=lr)  # full-batch gradient descent
    got = []
    out = tmp_path / f"run{lr_factor}.h5"
    mon = CurvatureMonitor(model, nn.MSELoss(), (x, y), every=2, metrics=("lambda_max",), out=out,
                           on_alert=got.append)
    mon.attach(opt)
    with caplog.at_level(logging.WARNING, logger="curvlens.hooks"):
        for _ in range(10):
            opt.zero_grad()
            nn.MSELoss()(model(x), y).backward()
            opt.step()
    alerts = [r for r in caplog.records if not r.getMessage().startswith("CurvatureMonitor: measuring every")]
    return mon, got, load_series(out), lam, lr, alerts  # (every=2 on a tiny model also warns of its cost)


def test_edge_of_stability_alert_fires_above_2_over_lr(tmp_path, caplog):
    mon, got, series, lam, lr, logs = _gd_run(1.2, tmp_path, caplog)
    assert [a.kind for a in got] == ["edge_of_stability"] and got[0].step == 2  # once, at the first record
    assert got[0].value == pytest.approx(lr * lam / 2, rel=1e-3)
    assert "edge of stability" in logs[0].getMessage() and len(logs) == 1
    assert series.alert_kinds.tolist() == ["edge_of_stability"] and series.alert_steps.tolist() == [2]
    assert series.columns["eos_ratio"] == pytest.approx([1.2] * 5, rel=1e-3)


def test_no_alert_on_a_stable_run(tmp_path, caplog):
    mon, got, series, lam, lr, logs = _gd_run(0.8, tmp_path, caplog)
    assert got == [] and not logs and len(series.alert_steps) == 0 and len(series) == 5
    assert max(series.columns["eos_ratio"]) == pytest.approx(0.8, rel=1e-3)


def test_nonfinite_curvature_alert(tmp_path):
    model, x, y, _ = _linear_problem()
    got = []
    mon = CurvatureMonitor(model, nn.MSELoss(), (x, y), metrics=("lambda_max", "trace"), on_alert=got.append)
    with torch.no_grad():
        model.weight.mul_(1e200)  # the loss overflows to inf
    rec = mon.measure(1, lr=0.1)
    assert math.isnan(rec.values["lambda_max"]) and math.isnan(rec.values["trace"])
    assert [a.kind for a in got] == ["nonfinite"] and "lambda_max, trace" in got[0].message


def test_growing_negative_curvature_rule():
    t = AlertTracker(window=3)
    seq = [0.02, 0.03, 0.05, 0.08, 0.04, 0.05, 0.09]
    fired = [s for s, m in enumerate(seq) if t.update(s, {"negative_mass": m, "negative_mass_stderr": 0.001})]
    assert fired == [2, 6]  # rising three records in a row; re-armed by the drop at 4
    quiet = AlertTracker()
    assert not any(quiet.update(s, {"negative_mass": m, "negative_mass_stderr": 0.05})
                   for s, m in enumerate([0.02, 0.03, 0.05]))  # within the noise


def test_bad_inputs_one_clear_line(tmp_path):
    model, x, y, _ = _linear_problem()
    mk = lambda **kw: CurvatureMonitor(model, nn.MSELoss(), (x, y), **kw)  # noqa: E731
    table = [
        (dict(every=0), ValueError, r"every: expected an int >= 1 \(steps between measurements\), got 0"),
        (dict(overhead=1.5), ValueError, r"overhead: expected a fraction of training time in \(0, 1\), got 1.5"),
        (dict(metrics=("sharpness",)), ValueError, r"metrics: expected names from .*got 'sharpness'"),
        (dict(metrics="trace"), ValueError, r"metrics: expected a non-empty tuple"),
        (dict(per_layer="yes"), TypeError, "per_layer: expected True or False, got str"),
        (dict(tensorboard=5), TypeError, "tensorboard: expected a SummaryWriter or a log directory, got int"),
        (dict(out=3), TypeError, "out: expected a file name for the HDF5 series, got int"),
        (dict(on_alert=1), TypeError, "on_alert: expected a callable taking an Alert, got int"),
        (dict(rtol=2.0), ValueError, r"rtol: expected a tolerance in \(0, 1\), got 2.0"),
        (dict(trace_matvecs=1), ValueError, "trace_matvecs: expected an int >= 4, got 1"),
        (dict(generator="x"), TypeError, "generator: expected a torch.Generator, an int seed or None"),
    ]
    for kw, exc, msg in table:
        with pytest.raises(exc, match=msg):
            mk(**kw)
    mon = mk(out=tmp_path / "r.h5", metrics=("lambda_max",))
    with pytest.raises(TypeError, match="optimizer: expected a torch.optim.Optimizer, got str"):
        mon.attach("sgd")
    with pytest.raises(ValueError, match="step: expected an int >= 0, got -1"):
        mon.step(-1)
    with pytest.raises(ValueError, match="lr: expected a learning rate when no optimizer is attached"):
        read_optimizer(None)
    mon.measure(10, lr=0.1)
    again = mk(out=tmp_path / "r.h5", metrics=("lambda_max",))
    with pytest.raises(ValueError, match=r"start_step: expected >= 10, the last step recorded in .*start_step=10"):
        again.attach(torch.optim.SGD(model.parameters(), lr=0.1), start_step=3)
