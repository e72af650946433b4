"""Shared one-probe Lanczos estimator, pooling, honest cost accounting and the noise-robust alert."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from curvlens.estimators._probes import probe_vectors
from curvlens.hooks import AlertTracker, CurvatureMonitor
from curvlens.hooks.pooling import ProbePool
from curvlens.hooks.probe_lanczos import probe_lanczos
from curvlens.operators import HessianOperator


def _regression(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(40, 4, generator=g, dtype=torch.float64)
    y = torch.randn(40, 2, generator=g, dtype=torch.float64)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 2)).double()  # D = 37
    return model, x, y


def _negative_mass(ev):
    return (ev.clamp(max=0).abs().sum() / ev.abs().sum()).item()


def test_probe_lanczos_equals_dense_quantities_of_the_same_probe():
    model, x, y = _regression()
    op = HessianOperator(model, nn.MSELoss(), (x, y))
    H = op.to_dense()
    ev, U = torch.linalg.eigh(H)
    r = probe_lanczos(op, op.dim, generator=torch.Generator().manual_seed(3))  # m = D: exact quadrature
    z = probe_vectors(op.dim, 1, dtype=op.dtype, generator=torch.Generator().manual_seed(3))[:, 0]
    assert r.trace == pytest.approx((z @ H @ z).item(), rel=1e-10)
    assert torch.allclose(r.diag_terms, z * (H @ z), atol=1e-10)
    c2 = (U.T @ z) ** 2  # the probe's spectral weights
    want = ((c2 * ev.clamp(max=0).abs()).sum() / (c2 * ev.abs()).sum()).item()
    assert r.negative_mass == pytest.approx(want, abs=1e-8)
    assert r.lambda_max == pytest.approx(ev[-1].item(), rel=1e-10) and r.residual < 1e-8
    assert r.matvecs == r.steps == op.dim  # the certificate reuses the stored products


def test_shared_monitor_at_fixed_weights_matches_dense_within_its_stderr():
    model, x, y = _regression(1)
    H = HessianOperator(model, nn.MSELoss(), (x, y)).to_dense()
    ev = torch.linalg.eigvalsh(H)
    mon = CurvatureMonitor(model, nn.MSELoss(), (x, y), lanczos_steps=37, pool=60, generator=11)
    recs = [mon.measure(t, lr=0.1) for t in range(1, 61)]
    v = recs[-1].values
    assert v["pooled_records"] == 60 and v["pooled_from_step"] == 1
    assert v["lambda_max_converged"] == 1.0 and v["lambda_max"] == pytest.approx(ev[-1].item(), rel=1e-8)
    assert v["matvecs"] == 37  # one Lanczos run serves all three metrics and the certificate
    exact_tr = torch.trace(H).item()
    assert abs(v["trace"] - exact_tr) < 4 * v["trace_stderr"]
    # the pooled stderr is the one-probe spread / sqrt(k): compare with Var(z^T H z) = 2 sum_{i!=j} H_ij^2
    sd = math.sqrt(2 * ((H**2).sum() - (torch.diag(H) ** 2).sum()).item())
    assert v["trace_stderr"] * math.sqrt(60) == pytest.approx(sd, rel=0.35)
    assert abs(v["negative_mass"] - _negative_mass(ev)) < 4 * v["negative_mass_stderr"] + 0.01
    assert np.isnan(recs[2].values["trace_stderr"]) and np.isfinite(recs[4].values["trace_stderr"])
    assert recs[2].values["trace"] == pytest.approx(np.mean([r.values["trace_probe"] for r in recs[:3]]))


def test_uncertified_ritz_value_is_finished_by_warm_started_top_eigenpairs():
    model, x, y = _regression(2)
    ev = torch.linalg.eigvalsh(HessianOperator(model, nn.MSELoss(), (x, y)).to_dense())
    mon = CurvatureMonitor(model, nn.MSELoss(), (x, y), lanczos_steps=2, rtol=1e-6)
    v = mon.measure(1, lr=0.1).values
    assert v["lambda_max_converged"] == 1.0 and v["lambda_max"] == pytest.approx(ev[-1].item(), rel=1e-6)
    assert v["matvecs"] > 3  # the two-step probe run was not enough; the eigensolver finished it


def test_pool_noise_estimate_ignores_a_slow_trend():
    g = np.random.default_rng(0)
    p = ProbePool(4, noise_window=400, min_records=5)
    for t in range(400):
        p.add(t, 0.05 * t + g.normal(0.0, 2.0))  # trend of 20 sd over the run
    assert p.sigma == pytest.approx(2.0, rel=0.1)
    assert np.std([0.05 * t for t in range(400)]) > 2.0  # a plain sample std would be inflated


def _rotated_quadratic(D=30, seed=0):
    """loss = 1/2 w^T U diag(a) U^T w; ``a`` is edited in place between records."""
    g = torch.Generator().manual_seed(seed)
    U, _ = torch.linalg.qr(torch.randn(D, D, generator=g, dtype=torch.float64))
    a = torch.ones(D, dtype=torch.float64)
    model = nn.Linear(D, 1, bias=False).double()

    def loss(m, batch):
        w = m.weight.reshape(-1)
        return 0.5 * w @ (U @ (a * (U.T @ w)))

    return model, loss, a


def test_negative_curvature_alert_ignores_noise_and_fires_on_real_growth():
    model, loss, a = _rotated_quadratic()
    x = torch.zeros(1, 30, dtype=torch.float64)
    got = []
    mon = CurvatureMonitor(model, loss, (x, x[:, :1]), metrics=("negative_mass",), lanczos_steps=30,
                           on_alert=got.append, generator=4, loss_form="model_batch")
    a[:3] = -1.0  # a fixed saddle: negative mass 0.1, estimated with one-probe noise
    step = 0
    for _ in range(40):
        step += 1
        with torch.no_grad():
            model.weight.add_(0.0)  # a new weight version: the live operator rebuilds
        mon.measure(step, lr=0.1)
    assert got == []  # 40 noisy records of a constant negative mass: no alert
    assert mon.alerts.window == 5  # pool 4 + 1: the compared pooled values share no record
    for k in range(5, 30, 2):  # real growth: 5, 7, .., 29 of 30 eigenvalues at -1
        a[:k] = -1.0
        step += 1
        with torch.no_grad():
            model.weight.add_(0.0)
        mon.measure(step, lr=0.1)
    assert [al.kind for al in got][:1] == ["negative_curvature"]
    assert "standard errors" in got[0].message


def test_unknown_stderr_never_alerts_and_z_is_validated():
    t = AlertTracker()
    assert not any(t.update(s, {"negative_mass": m, "negative_mass_stderr": math.nan})
                   for s, m in enumerate([0.02, 0.2, 0.5, 0.9]))
    with pytest.raises(ValueError, match="z: expected a positive number of standard errors, got 0"):
        AlertTracker(z=0)


def test_bad_new_arguments():
    model, x, y = _regression()
    with pytest.raises(ValueError, match=r"estimator: expected one of \('shared', 'separate'\), got 'fast'"):
        CurvatureMonitor(model, nn.MSELoss(), (x, y), estimator="fast")
    with pytest.raises(ValueError, match="lanczos_steps: expected an int >= 2, got 1"):
        CurvatureMonitor(model, nn.MSELoss(), (x, y), lanczos_steps=1)
    with pytest.raises(ValueError, match="pool: expected an int >= 1, got 0"):
        CurvatureMonitor(model, nn.MSELoss(), (x, y), pool=0)
