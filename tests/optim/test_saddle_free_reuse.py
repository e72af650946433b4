"""SaddleFreeNewton between refreshes with ``between_refreshes="first_order"``: the same step as
with the exact model, no products, and the predicted decrease of its stated model, on quadratics."""

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


def _problem(d=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=DT))
    H = Q @ torch.diag(torch.linspace(-1.5, 4.0, d, dtype=DT)) @ Q.T
    b = torch.randn(d, generator=g, dtype=DT)
    x0 = 0.3 * torch.randn(d, generator=g, dtype=DT)
    return H, b, x0, lambda model, batch: 0.5 * model.x @ H @ model.x - b @ model.x


@pytest.mark.parametrize("base", ["sgd", "adam"])
@pytest.mark.parametrize("radius", [1e6, 0.05])
def test_first_order_model_is_the_subspace_curvature_plus_the_gradient_term(base, radius):
    H, b, x0, loss = _problem()
    m = Vec(x0)
    opt = SaddleFreeNewton(m, loss, subspace=3, base=base, base_lr=0.05, refresh_every=3, trust_radius=radius,
                           max_trust_radius=radius, between_refreshes="first_order")
    seen = []
    for _ in range(5):
        x = m.x.detach().clone()
        V = opt.global_state.get("basis")
        opt.step(B0)
        r = opt.last_step
        seen.append((r.refreshed, r.matvecs))
        if r.refreshed or not r.accepted:
            continue
        s, g = m.x.detach() - x, H @ x - b
        sv = V @ (V.T @ s)  # the subspace part of the step
        assert r.predicted_decrease == pytest.approx(-float(g @ s + 0.5 * sv @ H @ sv), rel=1e-9, abs=1e-13)
        assert r.actual_decrease == pytest.approx(-float(g @ s + 0.5 * s @ H @ s), rel=1e-9, abs=1e-13)
        assert r.step_norm <= radius * (1 + 1e-12)
        assert radius < 1 or r.subspace_norm_fraction < 1 - 1e-8  # after a long step the base rule has work
    assert seen == [(True, 3), (False, 0), (False, 0), (True, 3), (False, 0)]


@pytest.mark.parametrize("base", ["sgd", "adam"])
def test_first_order_takes_the_same_step_as_the_exact_model(base):
    """Only the model of a reused-basis step differs (and with it rho); the step does not."""
    H, b, x0, loss = _problem(seed=1)
    runs = {}
    for between in ("exact", "first_order"):
        m = Vec(x0)
        opt = SaddleFreeNewton(m, loss, subspace=3, base=base, base_lr=0.02, refresh_every=2, trust_radius=1e6,
                               between_refreshes=between)
        opt.step(B0)
        opt.step(B0)
        runs[between] = (m.x.detach().clone(), opt.last_step)
    (xe, re), (xf, rf) = runs["exact"], runs["first_order"]
    assert torch.allclose(xe, xf, rtol=0, atol=1e-12)
    assert re.matvecs == 1 and rf.matvecs == 0 and not re.refreshed and not rf.refreshed
    assert re.actual_decrease == pytest.approx(rf.actual_decrease, rel=1e-9)
    assert re.predicted_decrease == pytest.approx(re.actual_decrease, rel=1e-9)  # exact on a quadratic


def test_first_order_on_a_network_round_trips_and_descends():
    g = torch.Generator().manual_seed(3)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 4)).double()
    x = torch.randn(32, 4, generator=g, dtype=DT)
    kw = dict(subspace=3, history=1, refresh_every=3, base="adam", base_lr=1e-2, between_refreshes="first_order",
              generator=5)
    opt = SaddleFreeNewton(model, nn.MSELoss(), **kw)
    first = float(opt.step((x, x)))
    for _ in range(3):
        opt.step((x, x))
    sd = copy.deepcopy(opt.state_dict())
    clone = copy.deepcopy(model)
    for _ in range(4):
        last = float(opt.step((x, x)))
    opt2 = SaddleFreeNewton(clone, nn.MSELoss(), **kw)
    opt2.load_state_dict(sd)
    for _ in range(4):
        opt2.step((x, x))
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), clone.parameters()))
    assert opt2.last_step == opt.last_step and last < first


def test_bad_between_refreshes_raises_one_clear_line():
    with pytest.raises(ValueError, match=r"^between_refreshes: expected 'exact', 'first_order' or 'base', got 'none'; pick"):
        SaddleFreeNewton(Vec([1.0]), lambda m, b: (m.x ** 2).sum(), between_refreshes="none")
