"""The separate estimator's negative mass: >= 3 probes at the record's budget, a finite, calibrated error."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from curvlens.hooks import CurvatureMonitor
from curvlens.hooks.alerts import AlertTracker
from curvlens.hooks.measure import DENSITY_PROBES, density_split
from curvlens.operators import HessianOperator


def test_density_split_keeps_the_budget_and_three_probes():
    assert DENSITY_PROBES == 3
    for budget, dim in ((60, 8970), (60, 248), (61, 1000), (300, 13), (6, 100), (7, 2)):
        probes, steps = density_split(budget, dim)
        assert probes >= 3 and 1 <= steps <= dim
        assert probes * steps <= max(budget, 3 * steps)  # never more products than asked
    assert density_split(60, 8970) == (3, 20) and density_split(300, 13) == (23, 13)


def _indefinite_net():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 6, generator=g, dtype=torch.float64)
    y = torch.randn(64, 8, generator=g, dtype=torch.float64)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 8)).double()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(2.0)
    return model, x, y


def test_stderr_is_finite_and_calibrated_where_one_probe_would_have_none():
    model, x, y = _indefinite_net()  # D = 248: the density's own rule gives 1 probe at 60 products
    ev = torch.linalg.eigvalsh(HessianOperator(model, nn.MSELoss(), (x, y)).to_dense())
    exact = float(ev.clamp(max=0).abs().sum() / ev.abs().sum())
    got = []
    mon = CurvatureMonitor(model, nn.MSELoss(), (x, y), metrics=("negative_mass",), estimator="separate",
                           on_alert=got.append, generator=1)
    est, se = [], []
    for k in range(16):
        v = mon.measure(k + 1).values
        est.append(v["negative_mass"])
        se.append(v["negative_mass_stderr"])
        assert v["matvecs"] == 60  # the record's product budget is unchanged
    est, se = np.array(est), np.array(se)
    assert mon.op.dim == 248 and np.isfinite(se).all() and (se > 0).all()
    assert mon.alerts.window == 5  # independent records with noisy 3-probe errors: four rises in a row
    spread, rms = est.std(ddof=1), math.sqrt(float(np.mean(se ** 2)))
    assert 0.5 < rms / spread < 2.0  # the reported error matches the records' actual scatter
    assert abs(est.mean() - exact) < 4 * spread / math.sqrt(len(est)) + 0.01
    assert got == []  # fixed weights: noise with its own error bars does not alert


def test_alert_noise_uses_every_error_in_the_window():
    t = AlertTracker(window=3)
    # a small error at the first and last record alone would make the rise 0.06 look like 4 sigma
    recs = [(0.20, 0.01), (0.23, 0.05), (0.26, 0.01)]
    assert not any(t.update(s, {"negative_mass": m, "negative_mass_stderr": e}) for s, (m, e) in enumerate(recs))
    t = AlertTracker(window=3)
    recs = [(0.20, 0.005), (0.23, 0.005), (0.26, 0.005)]
    assert [s for s, (m, e) in enumerate(recs) if t.update(s, {"negative_mass": m, "negative_mass_stderr": e})] == [2]
    t = AlertTracker(window=3)
    recs = [(0.20, 0.005), (0.23, math.nan), (0.26, 0.005)]
    assert not any(t.update(s, {"negative_mass": m, "negative_mass_stderr": e}) for s, (m, e) in enumerate(recs))


def test_density_budget_too_small_for_three_probes_is_one_line():
    model, x, y = _indefinite_net()
    with pytest.raises(ValueError, match=r"^density_matvecs: expected an int >= 6, got 5$"):
        CurvatureMonitor(model, nn.MSELoss(), (x, y), estimator="separate", density_matvecs=5)
