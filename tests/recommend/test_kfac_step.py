"""K-FAC's measured first step (kfac_step.py) and the learning-rate rule built on it (hyperparams.kfac_lr)."""

from __future__ import annotations

import importlib
import math

import pytest
import torch

from curvlens.recommend import RecommendationContext, recommend
from curvlens.recommend.evidence import Measurements
from curvlens.recommend.hyperparams import kfac_lr, suggest
from curvlens.recommend.kfac_step import MIN_REDUCTION_RATIO, kfac_model_step

importlib.import_module("curvlens.optim.kfac")  # registers K-FAC with the recommender's builder


def _linear(seed: int = 0, n: int = 96):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 4, generator=g, dtype=torch.float64) * torch.tensor([3.0, 1.0, 0.3, 0.1], dtype=torch.float64)
    Y = torch.randn(n, 3, generator=g, dtype=torch.float64)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = torch.nn.Linear(4, 3).double()
    return model, torch.nn.MSELoss(), (X, Y)


def _line_losses(model, loss_fn, data, d, alphas):
    w = [p.detach().clone() for p in model.parameters()]
    out = []
    for a in alphas:
        with torch.no_grad():
            for p, w0, t in zip(model.parameters(), w, d):
                p.copy_(w0 - a * t)
            out.append(float(loss_fn(model(data[0]), data[1])))
    with torch.no_grad():
        for p, w0 in zip(model.parameters(), w):
            p.copy_(w0)
    return out


def test_undamped_type2_kfac_on_a_linear_mse_layer_is_the_exact_ggn():
    # one linear layer with MSE: the type-2 factors are exact, P = G^-1, so alpha* = 1 and P G = I
    model, loss_fn, data = _linear()
    # (the pi-corrected damping adds O(sqrt(damping)) to each factor: 1e-7 here)
    m = kfac_model_step(model, loss_fn, data, damping=1e-14, fisher="type2")
    assert m["kfac_model_step"] == pytest.approx(1.0, rel=1e-4)
    assert m["kfac_lambda_max"] == pytest.approx(1.0, rel=1e-4)
    # the loss is exactly quadratic: the model's prediction holds (rho = 1) and the step is kept
    assert m["kfac_reduction_ratio"] == pytest.approx(1.0, rel=1e-6)
    assert m["kfac_trusted_step"] == m["kfac_model_step"]


def test_damped_step_is_the_exact_line_minimiser_of_the_quadratic_loss():
    # with damping, P != G^-1 and alpha* != 1; the loss along -P g is quadratic, so alpha* must be its minimiser
    model, loss_fn, data = _linear(1)
    damping = 0.5
    m = kfac_model_step(model, loss_fn, data, damping=damping, fisher="type2")
    a = m["kfac_model_step"]
    assert not a == pytest.approx(1.0, abs=1e-3)
    from curvlens.optim.kfac import KFACPreconditioner

    pre = KFACPreconditioner(model, loss_fn=loss_fn, damping=damping, fisher="type2", kl_clip=None,
                             update_every=1, inverse_every=1)
    model.zero_grad()
    loss_fn(model(data[0]), data[1]).backward()
    pre.step(lr=1.0)
    d = [p.grad.detach().clone() for p in model.parameters()]
    pre.remove()
    model.zero_grad(set_to_none=True)
    lo, mid, hi = _line_losses(model, loss_fn, data, d, [0.97 * a, a, 1.03 * a])
    assert mid < lo and mid < hi
    # and it is the closed form -g^T d / (d^T H d) from the dense Hessian (float64)
    p0 = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    shapes = [p.shape for p in model.parameters()]

    def f(flat):
        w, b = flat[:12].reshape(shapes[0]), flat[12:].reshape(shapes[1])
        return loss_fn(data[0] @ w.T + b, data[1])

    H = torch.autograd.functional.hessian(f, p0)
    g = torch.autograd.functional.jacobian(f, p0)
    dv = torch.cat([t.reshape(-1) for t in d])
    assert a == pytest.approx(float(g @ dv / (dv @ H @ dv)), rel=1e-8)
    assert m["kfac_trusted_step"] == a and m["kfac_reduction_ratio"] == pytest.approx(1.0, rel=1e-6)


def test_nonquadratic_loss_halves_until_the_reduction_ratio_holds():
    g = torch.Generator().manual_seed(3)
    X = torch.randn(64, 2, generator=g)
    Y = torch.sin(3 * X[:, :1])
    with torch.random.fork_rng():
        torch.manual_seed(3)
        model = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    m = kfac_model_step(model, torch.nn.MSELoss(), (X, Y), damping=1e-4)
    ratio = m["kfac_model_step"] / m["kfac_trusted_step"]
    k = round(torch.log2(torch.tensor(ratio)).item())
    assert k >= 0 and ratio == pytest.approx(2.0 ** k, rel=1e-9)
    assert m["kfac_reduction_ratio"] >= MIN_REDUCTION_RATIO


def test_mini_batch_measurement_is_seeded_and_leaves_model_grad_and_rng_alone():
    model, loss_fn, data = _linear(2, n=128)
    model.weight.grad = torch.ones_like(model.weight)
    before = [p.detach().clone() for p in model.parameters()]
    hooks = len(model._forward_hooks)
    rng = torch.get_rng_state()
    a = kfac_model_step(model, loss_fn, data, damping=1e-3, batch_size=16, generator=5)
    b = kfac_model_step(model, loss_fn, data, damping=1e-3, batch_size=16, generator=5)
    c = kfac_model_step(model, loss_fn, data, damping=1e-3, batch_size=16, generator=6)
    full = kfac_model_step(model, loss_fn, data, damping=1e-3)
    assert a == b and a != c
    # mini-batch noise adds tr(P G P Sigma)/B to the curvature along the step: a shorter expected step
    assert a["kfac_model_step"] < full["kfac_model_step"]
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))
    assert torch.equal(model.weight.grad, torch.ones_like(model.weight)) and model.bias.grad is None
    assert len(model._forward_hooks) == hooks


@pytest.mark.parametrize("kwargs, exc, msg", [
    ({"damping": 0.0}, ValueError, "damping: expected a positive number, got 0.0"),
    ({"damping": 1e-3, "generator": torch.Generator()}, TypeError, "generator: expected an int seed"),
])
def test_bad_values_are_one_clear_line(kwargs, exc, msg):
    model, loss_fn, data = _linear()
    with pytest.raises(exc, match=msg):
        kfac_model_step(model, loss_fn, data, **kwargs)


def test_kfac_lr_rule_momentum_cap_and_prior():
    lr, why = kfac_lr(Measurements({"kfac_trusted_step": 0.4, "kfac_lambda_max": 2.0, "kfac_reduction_ratio": 0.6}),
                      0.9)
    assert lr == pytest.approx(0.04) and "1/(1 - momentum)" in why and "0.6" in why
    lr, why = kfac_lr(Measurements({"kfac_trusted_step": 2.0, "kfac_lambda_max": 50.0}), 0.5)
    assert lr == pytest.approx(0.5 * 3.0 / 50.0 / 2.0) and "stability limit" in why  # cap < 2 x 0.5
    lr, why = kfac_lr(Measurements({}), 0.9)
    assert lr == pytest.approx(0.1) and "prior" in why
    hp, _, notes = suggest("kfac", Measurements({"lambda_max": 10.0, "kfac_trusted_step": 0.3}),
                           RecommendationContext())
    assert hp["lr"] == pytest.approx(0.03) and any("K-FAC's own first direction" in n for n in notes)


def test_recommend_with_the_model_measures_kfac_lr():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(64, 5, generator=g)
    y = (X[:, 0] > 0).long()
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    summary = {"num_params": 66, "num_samples": 64, "curvature": "ggn", "lambda_max": 2.0, "lambda_min": 1e-3,
               "hvp_cost": 1.5}
    ctx = RecommendationContext(batch_size=64, dataset_size=64, layer_types="linear,tanh", memory_bytes="1GB")
    rec = recommend(summary, ctx, model=model, loss_fn=torch.nn.CrossEntropyLoss(), data=(X, y))
    kfac = [c for c in rec.candidates if c.optimizer == "kfac"]
    assert kfac, [c.optimizer for c in rec.candidates]
    m = kfac_model_step(model, torch.nn.CrossEntropyLoss(), (X, y), damping=kfac[0].hyperparameters["damping"])
    assert kfac[0].hyperparameters["lr"] == pytest.approx(kfac_lr(Measurements(m), 0.9)[0])
    assert any("K-FAC's own first direction" in r for r in kfac[0].reasons)


def test_kfac_fit_rule_opposes_kfac_when_its_unit_step_overshoots_at_full_batch():
    from curvlens.recommend.rules import RULES, run_rule

    rule = next(r for r in RULES if r.name == "kfac_fit")

    def weight(lam, batch):
        out = run_rule(rule, Measurements({"kfac_lambda_max": lam, "num_samples": 256}),
                       RecommendationContext(batch_size=batch))
        return sum(e.weight for e in out.evidence if e.optimizer == "kfac"), out

    w, out = weight(4.4, 256)
    assert w == pytest.approx(-0.5 * math.log10(2.2)) and "lambda_max(P G) = 4.4 > 2" in out.evidence[0].reason
    assert weight(1.7, 256)[0] == 0.0  # a unit step is stable: no evidence
    assert weight(10.0, 32)[0] == 0.0  # mini-batch: the first step's factors carry one batch's noise
