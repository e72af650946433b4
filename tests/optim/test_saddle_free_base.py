"""SaddleFreeNewton with ``between_refreshes="base"``: a saddle-free step every ``refresh_every``
steps and, in between, exactly the base rule's step on the whole gradient."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from curvlens.optim.saddle_free import SaddleFreeNewton

DT = torch.float64
B0 = torch.zeros(1)


class Vec(nn.Module):
    def __init__(self, x):
        super().__init__()
        self.x = nn.Parameter(torch.as_tensor(x, dtype=DT).clone())


def _quadratic(d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=DT))
    H = Q @ torch.diag(torch.linspace(-1.0, 3.0, d, dtype=DT)) @ Q.T
    b = torch.randn(d, generator=g, dtype=DT)
    calls = []

    def loss(model, batch):
        calls.append(1)
        return 0.5 * model.x @ H @ model.x - b @ model.x

    return H, b, 0.2 * torch.randn(d, generator=g, dtype=DT), loss, calls


def test_sgd_base_steps_are_minus_lr_times_the_gradient_with_one_loss_call_and_no_product():
    H, b, x0, loss, calls = _quadratic()
    m = Vec(x0)
    opt = SaddleFreeNewton(m, loss, subspace=3, refresh_every=4, base="sgd", base_lr=0.05,
                           between_refreshes="base", trust_radius=0.01)
    opt.step(B0)
    assert opt.last_step.refreshed and opt.last_step.matvecs == 3
    for _ in range(3):
        x, damping, radius = m.x.detach().clone(), opt.global_state["damping"], opt.global_state["radius"]
        del calls[:]
        opt.step(B0)
        r = opt.last_step
        g = H @ x - b
        assert torch.allclose(m.x.detach(), x - 0.05 * g, rtol=0, atol=1e-15)  # the whole gradient, unbounded
        assert r.step_norm == pytest.approx(0.05 * float(g.norm()), rel=1e-12) and r.step_norm > 0.01
        assert r.accepted and not r.refreshed and r.matvecs == 0 and r.loss_after is None and len(calls) == 1
        assert r.loss_before == pytest.approx(float(0.5 * x @ H @ x - b @ x), rel=1e-12)
        assert r.predicted_decrease == pytest.approx(0.05 * float(g @ g), rel=1e-12)
        assert (opt.global_state["damping"], opt.global_state["radius"]) == (damping, radius)
    opt.step(B0)
    assert opt.last_step.refreshed and opt.last_step.matvecs == 3


def test_adam_base_steps_equal_torch_adam_on_the_same_gradients():
    H, b, x0, loss, _ = _quadratic(seed=1)
    m = Vec(x0)
    opt = SaddleFreeNewton(m, loss, subspace=3, refresh_every=10 ** 6, base="adam", base_lr=0.01,
                           between_refreshes="base")
    opt.step(B0)  # the one refresh (a saddle-free step)
    ref = Vec(m.x.detach())
    adam = torch.optim.Adam(ref.parameters(), lr=0.01, betas=(0.9, 0.999), eps=1e-8)
    for _ in range(12):
        opt.step(B0)
        adam.zero_grad()
        loss(ref, B0).backward()
        adam.step()
        assert torch.allclose(m.x.detach(), ref.x.detach(), rtol=0, atol=1e-13)


def test_base_steps_undo_non_finite_weights_exactly():
    def nearly_linear(model, batch):  # gradient ~1, curvature 2e-400 (underflows to 0)
        return model.x.sum() + ((1e-200 * model.x) ** 2).sum()

    m = Vec([-1.5e308])
    opt = SaddleFreeNewton(m, nearly_linear, subspace=1, refresh_every=10 ** 6, base="sgd", base_lr=1e308,
                           between_refreshes="base")
    opt.step(B0)  # the refresh: a trust-radius step of 1, lost in rounding at -1.5e308
    assert opt.last_step.accepted and opt.last_step.refreshed
    before = m.x.detach().clone()
    opt.step(B0)  # -1.5e308 - 1e308 = -inf
    r = opt.last_step
    assert not r.accepted and "not finite" in r.status
    assert torch.equal(m.x.detach(), before)


def test_base_mode_round_trips_bit_identically_and_descends_on_a_network():
    g = torch.Generator().manual_seed(4)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 4)).double()
    x = torch.randn(32, 4, generator=g, dtype=DT)
    kw = dict(subspace=3, history=1, refresh_every=3, base="adam", base_lr=1e-2, between_refreshes="base",
              retries=2)
    opt = SaddleFreeNewton(model, nn.MSELoss(), **kw)
    first = float(opt.step((x, x)))
    for _ in range(3):
        opt.step((x, x))
    sd = copy.deepcopy(opt.state_dict())
    clone = copy.deepcopy(model)
    for _ in range(5):
        opt.step((x, x))
    opt2 = SaddleFreeNewton(clone, nn.MSELoss(), **{**kw, "between_refreshes": "exact"})
    opt2.load_state_dict(sd)
    for _ in range(5):
        opt2.step((x, x))
    for p, q in zip(model.parameters(), clone.parameters()):
        assert torch.equal(p, q)
    assert opt2.last_step == opt.last_step
    with torch.no_grad():
        assert float(nn.MSELoss()(model(x), x)) < first
