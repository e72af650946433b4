"""NewtonCG: state_dict round trip, backtracking, non-finite paths, truncated Newton, errors, side effects."""

import copy
import math

import pytest
import torch
from torch import nn

import curvlens.optim.newton_cg as ncg_mod
from curvlens.operators.base import CurvatureOperator
from curvlens.optim._newton_cg_damping import DampingRule
from curvlens.optim.newton_cg import NewtonCG

DT = torch.float64


def _data(seed=0, n=200, d=5):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=DT)
    y = (torch.rand(n, generator=g, dtype=DT) < torch.sigmoid(X @ torch.randn(d, generator=g, dtype=DT))).to(DT)
    return X, y[:, None]


def _mlp(seed=0, d=5):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(d, 6), nn.Tanh(), nn.Linear(6, 1)).double()


def test_state_dict_round_trip_continues_bit_identically():
    X, y = _data()
    a_model = _mlp()
    a = NewtonCG(a_model, nn.BCEWithLogitsLoss(), curvature_fraction=0.3, preconditioner="hutchinson", generator=5)
    for _ in range(2):
        a.step((X, y))
    b_model = copy.deepcopy(a_model)
    b = NewtonCG(b_model, nn.BCEWithLogitsLoss(), curvature_fraction=0.3, preconditioner="hutchinson", generator=99)
    b.load_state_dict(copy.deepcopy(a.state_dict()))
    assert b.damping == a.damping and b.global_state["step"] == 2
    for _ in range(2):
        la, lb = a.step((X, y)), b.step((X, y))
        assert torch.equal(la, lb)
    for pa, pb in zip(a_model.parameters(), b_model.parameters()):
        assert torch.equal(pa, pb)
    assert a.last_step == b.last_step


def test_backtracking_picks_the_best_kept_iterate(monkeypatch):
    X, y = _data(seed=1, n=300)
    model = _mlp(seed=1)
    captured = {}

    def spy(*args, **kwargs):
        res = ncg_mod.__dict__["_real_cg"](*args, **kwargs)
        captured["res"] = res
        return res

    monkeypatch.setitem(ncg_mod.__dict__, "_real_cg", ncg_mod.cg)
    monkeypatch.setattr(ncg_mod, "cg", spy)
    # an undamped model from 6 samples: late CG iterates overfit the curvature batch
    opt = NewtonCG(model, nn.BCEWithLogitsLoss(), damping=0.0, cg_progress_tol=None, cg_rtol=1e-14,
                   line_search=False, generator=0)
    theta0 = [p.detach().clone() for p in model.parameters()]
    loss_fn = nn.BCEWithLogitsLoss()
    opt.step((X, y), curvature_batch=(X[:6], y[:6]))
    res, rec = captured["res"], opt.last_step

    def f_at(x):
        m = copy.deepcopy(model)
        with torch.no_grad():
            i = 0
            for p, t in zip(m.parameters(), theta0):
                p.copy_(t + x[i : i + p.numel()].view_as(p))
                i += p.numel()
            return float(loss_fn(m(X), y))

    values = {it: f_at(x) for it, x in res.iterates.items()}
    best = min(values, key=values.get)
    assert len(values) > 3 and best != max(values)  # the last iterate is not the best here
    assert rec.iterate == best and rec.direction == "cg"
    assert rec.loss_after == pytest.approx(values[best], rel=1e-12)


class _NaNOperator(CurvatureOperator):
    is_psd = True

    def _matmat(self, V):
        return torch.full_like(V, math.nan)


def test_nonfinite_curvature_product_rejects_and_raises_damping(monkeypatch):
    X, y = _data(seed=2)
    model = _mlp(seed=2)
    before = [p.detach().clone() for p in model.parameters()]
    monkeypatch.setattr(ncg_mod, "_operator", lambda kind, pr, gen, mem: _NaNOperator(pr.dim, pr.dtype, pr.device))
    opt = NewtonCG(model, nn.BCEWithLogitsLoss(), damping=0.5, preconditioner=None, product="autograd", generator=0)
    loss = opt.step((X, y))
    rec = opt.last_step
    assert math.isfinite(float(loss)) and not rec.accepted and rec.cg_stop_reason == "nonfinite"
    assert "non-finite curvature product" in rec.status and "damping raised" in rec.status
    assert opt.damping == rec.next_damping == DampingRule().after_nonfinite(0.5) > 0.5
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))


def test_nonfinite_loss_before_the_step_is_rejected():
    X, y = _data(seed=3)
    X[0, 0] = math.nan
    model = _mlp(seed=3)
    before = [p.detach().clone() for p in model.parameters()]
    opt = NewtonCG(model, nn.BCEWithLogitsLoss(), damping=0.0, generator=0)
    loss = opt.step((X, y))
    assert math.isnan(float(loss)) and not opt.last_step.accepted
    assert "non-finite loss before the step" in opt.last_step.status
    assert opt.damping == DampingRule().nonfinite_floor  # an undamped run gets damping after a NaN
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))


def test_nan_at_every_trial_step_restores_weights_exactly():
    model = nn.Linear(3, 1, bias=False).double()
    with torch.no_grad():
        model.weight.fill_(0.1)
    before = model.weight.detach().clone()

    def loss_fn(model, batch):  # NaN beyond |w| > 0.5: every trial of a long step is NaN
        w = model.weight[0]
        bad = (w.abs().max() > 0.5).to(DT)
        return ((w - 10.0) ** 2).sum() + torch.log1p(-2 * bad) + 0.0 * batch[0].sum()

    opt = NewtonCG(model, loss_fn, curvature="hessian", damping=0.0, preconditioner=None, ls_max=3, generator=0)
    opt.step((torch.zeros(2, 1, dtype=DT), torch.zeros(2, 1, dtype=DT)))
    rec = opt.last_step
    assert not rec.accepted and "non-finite" in rec.status and opt.damping > 0
    assert torch.equal(model.weight.detach(), before) and bool(torch.isfinite(model.weight).all())


def test_hessian_mode_stops_at_negative_curvature_and_goes_downhill():
    A = torch.diag(torch.tensor([2.0, 1.0, -1.0, -3.0], dtype=DT))
    b = torch.tensor([1.0, -1.0, 0.5, 0.2], dtype=DT)
    model = nn.Linear(4, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.3, 0.1, 0.2, -0.1]], dtype=DT))

    def loss_fn(model, batch):
        w = model.weight[0]
        return 0.5 * w @ (A @ w) + b @ w + 0.0 * batch[0].sum()

    batch = (torch.zeros(2, 1, dtype=DT), torch.zeros(2, 1, dtype=DT))
    opt = NewtonCG(model, loss_fn, curvature="hessian", damping=0.0, preconditioner=None, generator=0)
    for _ in range(3):
        opt.step(batch)
        rec = opt.last_step
        assert rec.negative_curvature and rec.cg_stop_reason == "negative_curvature"
        assert rec.accepted and rec.loss_after < rec.loss_before  # never uphill


def test_never_touches_global_rng_grad_mode_or_batchnorm_stats():
    X, y = _data(seed=4, n=64)
    model = nn.Sequential(nn.Linear(5, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Linear(6, 1)).double().train()
    grads = [torch.full_like(p, 7.0) for p in model.parameters()]
    for p, g in zip(model.parameters(), grads):
        p.grad = g.clone()
    bufs = [b.clone() for b in model.buffers()]
    torch.manual_seed(123)
    rng = torch.get_rng_state()
    opt = NewtonCG(model, nn.BCEWithLogitsLoss(), curvature_fraction=0.5, preconditioner="hutchinson",
                   curvature="fisher", generator=3)
    opt.step((X, y))
    assert opt.last_step.accepted
    assert torch.equal(torch.get_rng_state(), rng)
    assert model.training and all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads))
    assert all(torch.equal(a, b) for a, b in zip(model.buffers(), bufs))


class _Once(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 2 * x * g


class _OnceModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 1).double()

    def forward(self, x):
        return _Once.apply(self.lin(x))


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"lr": 0.0}, ValueError, r"^lr: expected a finite number > 0, got 0\.0; pass e\.g\. lr=1\.0"),
    ({"lr": -1}, ValueError, r"^lr: expected a finite number > 0, got -1"),
    ({"damping": -0.1}, ValueError, r"^damping: expected a finite number >= 0, got -0\.1; pass e\.g\. damping=1\.0"),
    ({"damping": float("nan")}, ValueError, r"^damping: expected a finite number >= 0, got nan"),
    ({"curvature": "gn"}, ValueError, r"^curvature: expected one of 'ggn', 'hessian', 'fisher', 'empirical_fisher', "
                                      r"got 'gn'; pass curvature='ggn'"),
    ({"preconditioner": "jacobi"}, ValueError, r"^preconditioner: expected one of .*got 'jacobi'; pass"),
    ({"curvature_fraction": 1.5}, ValueError, r"^curvature_fraction: expected a fraction in \(0, 1\], got 1\.5"),
    ({"cg_maxiter": 0}, ValueError, r"^cg_maxiter: expected a positive integer, got 0; pass e\.g\. cg_maxiter=10"),
    ({"warm_start": 2.0}, ValueError, r"^warm_start: expected a value <= 1, got 2\.0"),
    ({"damping_rule": {"boost": 2}}, TypeError, r"^damping_rule: expected a curvlens\.optim\.newton_cg\.DampingRule"),
])
def test_bad_arguments_raise_one_clear_line(kwargs, exc, match):
    with pytest.raises(exc, match=match) as info:
        NewtonCG(nn.Linear(2, 1), nn.MSELoss(), **kwargs)
    assert "\n" not in str(info.value)


def test_bad_models_and_losses_raise_one_clear_line():
    frozen = nn.Linear(2, 1).requires_grad_(False)
    with pytest.raises(ValueError, match=r"^model: NewtonCG needs trainable parameters, got a Linear with none .*"
                                         r"unfreeze some"):
        NewtonCG(frozen, nn.MSELoss())
    with pytest.raises(ValueError, match=r"^loss_fn: curvature='ggn' needs a criterion .*got a loss_fn\(model, batch\); "
                                         r"pass curvature='hessian'"):
        NewtonCG(nn.Linear(2, 1), lambda model, batch: model(batch[0]).sum())
    with pytest.raises(TypeError, match=r"^closure: NewtonCG evaluates the loss itself"):
        NewtonCG(nn.Linear(2, 1), nn.MSELoss()).step(lambda: 0.0)
    opt = NewtonCG(_OnceModel(), nn.MSELoss(), generator=0)
    with pytest.raises(ValueError, match=r"^model: NewtonCG\(curvature='ggn'\) needs second derivatives, but the model "
                                         r"contains an operation that can only be differentiated once") as info:
        opt.step((torch.randn(4, 3, dtype=DT, generator=torch.Generator().manual_seed(0)), torch.zeros(4, 1, dtype=DT)))
    assert "\n" not in str(info.value)


class _FakeAnalysis:
    curvature = "hessian"

    def __init__(self, **s):
        self._s = s

    def summary(self):
        return dict(self._s)


def test_from_analysis_sets_damping_and_cg_budget_with_reasons():
    model = nn.Linear(3, 1).double()
    res = _FakeAnalysis(lambda_max=50.0, lambda_max_certified=True, lambda_min=-2.0, trace=8.0, num_params=4)
    opt = NewtonCG.from_analysis(res, model, nn.MSELoss(), curvature="hessian", generator=0)
    assert opt.damping == pytest.approx(3.0)  # 1.5 |lambda_min| > 1e-2 lambda_max = 0.5
    kappa = (50.0 + 3.0) / 3.0
    assert opt.cg_maxiter == max(10, math.ceil(0.5 * math.sqrt(kappa) * math.log(2e3)))
    assert opt.param_groups[0]["lr"] == 1.0
    assert any("0.01 lambda_max" in r for r in opt.analysis_reasons)
    assert any("lambda_min" in r for r in opt.analysis_reasons)
    assert any("curvature='hessian': given by the caller" in r for r in opt.analysis_reasons) is False
    ggn = NewtonCG.from_analysis(res, model, nn.MSELoss(), damping=0.1, generator=0)
    assert ggn.damping == 0.1 and any(r.startswith("damping=0.1: given by the caller") for r in ggn.analysis_reasons)
    uncert = NewtonCG.from_analysis(_FakeAnalysis(lambda_max=5.0, lambda_max_certified=False, num_params=4),
                                    model, nn.MSELoss(), generator=0)
    assert uncert.damping == pytest.approx(5e-2) and uncert.param_groups[0]["lr"] == 0.5
    no_lmax = NewtonCG.from_analysis(_FakeAnalysis(trace=8.0, num_params=4), model, nn.MSELoss(), generator=0)
    assert no_lmax.damping == pytest.approx(2.0) and any("trace/D" in r for r in no_lmax.analysis_reasons)
    with pytest.raises(TypeError, match=r"^result: expected a curvlens AnalysisResult"):
        NewtonCG.from_analysis({"lambda_max": 1.0}, model, nn.MSELoss())
