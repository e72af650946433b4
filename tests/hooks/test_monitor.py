"""CurvatureMonitor: non-perturbation, certified warm starts, Adam preconditioned sharpness."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from curvlens.hooks import CurvatureMonitor
from curvlens.hooks.optimizer_view import PreconditionedOperator, read_optimizer
from curvlens.linalg import top_eigenpairs
from curvlens.operators import DenseOperator, HessianOperator


def _data(n=96, d=6, c=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = torch.randint(0, c, (n,), generator=g)
    return x, y


def _net():
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(6, 12), nn.BatchNorm1d(12), nn.ReLU(), nn.Dropout(0.3), nn.Linear(12, 3))


def _train(opt_name, monitor_kwargs, steps=50):
    x, y = _data()
    model = _net()
    opt = (torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9) if opt_name == "sgd"
           else torch.optim.Adam(model.parameters(), lr=0.01))
    mon = None
    if monitor_kwargs is not None:
        mon = CurvatureMonitor(model, nn.CrossEntropyLoss(), (x[:24], y[:24]), **monitor_kwargs)
        mon.attach(opt)
    torch.manual_seed(123)  # dropout draws from the global RNG
    loss_fn = nn.CrossEntropyLoss()
    for t in range(steps):
        idx = torch.arange(t % 6 * 16, t % 6 * 16 + 16)
        opt.zero_grad()
        loss_fn(model(x[idx]), y[idx]).backward()
        opt.step()
    state = {
        "params": [p.detach().clone() for p in model.parameters()],
        "buffers": [b.clone() for b in model.buffers()],
        "grads": [p.grad.clone() for p in model.parameters()],
        "training": [m.training for m in model.modules()],
        "rng": torch.get_rng_state(),
        "opt": copy.deepcopy(opt.state_dict()),
    }
    return state, mon


@pytest.mark.parametrize("opt_name, kwargs", [
    ("sgd", dict(every=10, per_layer=True)),
    ("adam", dict(every=25, metrics=("lambda_max",))),
])
def test_bit_identical_training_with_dropout_and_batchnorm(opt_name, kwargs):
    off, _ = _train(opt_name, None)
    on, mon = _train(opt_name, kwargs)
    assert [r.step for r in mon.records] == list(range(kwargs["every"], 51, kwargs["every"]))
    for key in ("params", "buffers", "grads"):
        assert all(torch.equal(a, b) for a, b in zip(off[key], on[key])), key
    assert off["training"] == on["training"] and all(off["training"])
    assert torch.equal(off["rng"], on["rng"])
    sa, sb = off["opt"]["state"], on["opt"]["state"]
    assert all(torch.equal(sa[i][k], sb[i][k]) for i in sa for k in sa[i] if isinstance(sa[i][k], torch.Tensor))
    if opt_name == "adam":
        assert np.isfinite(mon.records[-1].values["preconditioned_sharpness"])


def _regression(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(40, 5, generator=g, dtype=torch.float64)
    y = torch.randn(40, 2, generator=g, dtype=torch.float64)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 2)).double()
    return model, x, y


def test_warm_started_lambda_max_equals_cold_certified_and_dense():
    model, x, y = _regression()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    mon = CurvatureMonitor(model, nn.MSELoss(), (x, y), every=3, metrics=("lambda_max",), rtol=1e-6)
    mon.attach(opt)
    for _ in range(9):
        opt.zero_grad()
        nn.MSELoss()(model(x), y).backward()
        opt.step()
    assert mon.measurer.warm and "full" in mon.measurer._v0  # later records started from the previous vector
    rec = mon.records[-1].values
    cold = top_eigenpairs(HessianOperator(model, nn.MSELoss(), (x, y)), 1, rtol=1e-6, generator=5)
    assert rec["lambda_max_converged"] == 1.0 and bool(cold.converged[0])
    dense = torch.linalg.eigvalsh(HessianOperator(model, nn.MSELoss(), (x, y)).to_dense())[-1].item()
    assert rec["lambda_max"] == pytest.approx(float(cold.eigenvalues[0]), rel=2e-6)
    assert rec["lambda_max"] == pytest.approx(dense, rel=2e-6)
    assert rec["threshold"] == pytest.approx(2 / 0.05) and rec["eos_ratio"] == pytest.approx(rec["lambda_max"] * 0.025)


def test_preconditioned_sharpness_matches_dense_adam_formula():
    model, x, y = _regression(1)
    opt = torch.optim.Adam(model.parameters(), lr=0.01, betas=(0.9, 0.99), eps=1e-8)
    mon = CurvatureMonitor(model, nn.MSELoss(), (x, y), every=4, metrics=("lambda_max",), rtol=1e-6)
    mon.attach(opt)
    for _ in range(8):
        opt.zero_grad()
        nn.MSELoss()(model(x), y).backward()
        opt.step()
    H = HessianOperator(model, nn.MSELoss(), (x, y)).to_dense()
    P = []
    for p in model.parameters():
        st = opt.state[p]
        t = float(st["step"])
        P.append(((1 - 0.9**t) * ((st["exp_avg_sq"] / (1 - 0.99**t)).sqrt() + 1e-8)).reshape(-1))
    P = torch.cat(P)
    want = torch.linalg.eigvals(torch.diag(1 / P) @ H).real.max().item()
    rec = mon.records[-1].values
    assert rec["preconditioned_sharpness"] == pytest.approx(want, rel=1e-5)
    assert rec["preconditioned_threshold"] == pytest.approx((2 + 2 * 0.9) / (0.1 * 0.01))
    assert rec["eos_ratio"] == pytest.approx(want / rec["preconditioned_threshold"], rel=1e-5)


def test_preconditioned_operator_and_optimizer_thresholds():
    A = torch.tensor([[2.0, 1.0], [1.0, 3.0]], dtype=torch.float64)
    d = torch.tensor([0.5, 4.0], dtype=torch.float64)
    S = PreconditionedOperator(DenseOperator(A), d).to_dense()
    assert torch.allclose(torch.linalg.eigvalsh(S), torch.linalg.eigvals(torch.diag(1 / d) @ A).real.sort().values)
    p = nn.Parameter(torch.zeros(2))
    assert read_optimizer(torch.optim.SGD([p], lr=0.5)).threshold == 4.0
    assert read_optimizer(None, lr=0.25).threshold == 8.0
    with pytest.raises(ValueError, match="diag: expected a positive"):
        PreconditionedOperator(DenseOperator(A), torch.tensor([1.0, 0.0], dtype=torch.float64))


def test_hand_written_loop_context_manager_and_measure():
    model, x, y = _regression()
    with CurvatureMonitor(model, nn.MSELoss(), (x, y), every=2, metrics=("trace", "negative_mass"),
                          estimator="separate", density_matvecs=300) as mon:
        got = [mon.step(t, lr=0.1) is not None for t in range(1, 6)]
        rec = mon.measure(7, lr=0.1)
    assert got == [False, True, False, True, False]
    dense = HessianOperator(model, nn.MSELoss(), (x, y)).to_dense()
    assert abs(rec.values["trace"] - torch.trace(dense).item()) <= 1e-6 * abs(torch.trace(dense).item()) + 4 * \
        rec.values["trace_stderr"]
    ev = torch.linalg.eigvalsh(dense)
    exact_neg = (ev.clamp(max=0).abs().sum() / ev.abs().sum()).item()
    assert abs(rec.values["negative_mass"] - exact_neg) < 4 * rec.values["negative_mass_stderr"] + 0.02
    assert np.isnan(rec.values.get("lambda_max", np.nan))
