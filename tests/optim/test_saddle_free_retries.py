"""SaddleFreeNewton with ``retries``: a rejected try is re-solved on the same basis, exactly as the
rejected steps of ``retries=0`` would be, without rebuilding the basis."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from curvlens.optim.saddle_free import SaddleFreeNewton

DT = torch.float64
B0 = torch.zeros(1)


class XY(nn.Module):
    def __init__(self, x, y):
        super().__init__()
        self.x = nn.Parameter(torch.tensor(float(x), dtype=DT))
        self.y = nn.Parameter(torch.tensor(float(y), dtype=DT))


def quartic_saddle(model, batch):
    """``x^2 - y^2 + y^4``: a saddle at 0, minima at ``y = +-1/sqrt(2)`` (loss -1/4)."""
    return model.x ** 2 - model.y ** 2 + model.y ** 4


def _weights(m):
    return torch.stack([m.x.detach(), m.y.detach()])


def test_one_step_with_retries_equals_the_rejected_steps_without_them():
    """An escape of radius 64 along y overshoots (y^4 wins); with retries=0 each rejected step
    rebuilds the same basis at the same weights; retries makes the same tries inside one step."""
    ref = XY(0.5, 1e-3)
    opt0 = SaddleFreeNewton(ref, quartic_saddle, subspace=2, trust_radius=64.0, damping=1e-2)
    rejected = 0
    while True:
        opt0.step(B0)
        if opt0.last_step.accepted:
            break
        rejected += 1
        assert opt0.last_step.matvecs == 2  # every rejected step rebuilt the 2-vector basis
    assert rejected >= 3
    m = XY(0.5, 1e-3)
    opt = SaddleFreeNewton(m, quartic_saddle, subspace=2, trust_radius=64.0, damping=1e-2, retries=rejected)
    opt.step(B0)
    r, r0 = opt.last_step, opt0.last_step
    assert r.accepted and r.retries == rejected and r.matvecs == 2  # the basis once, the products once
    assert torch.equal(_weights(m), _weights(ref))  # bit-identical to the rejected steps' end point
    assert (r.damping, r.trust_radius, r.step_norm, r.escape) == (r0.damping, r0.trust_radius, r0.step_norm, r0.escape)
    assert r.next_damping == r0.next_damping
    assert opt.global_state["radius"] == opt0.global_state["radius"]
    assert r.loss_after < r.loss_before and r.escape
    # and the following steps continue identically
    for _ in range(4):
        opt.step(B0)
        opt0.step(B0)
        assert torch.equal(_weights(m), _weights(ref))


def test_too_few_retries_end_the_step_rejected_with_the_last_try_recorded():
    m = XY(0.5, 1e-3)
    opt = SaddleFreeNewton(m, quartic_saddle, subspace=2, trust_radius=64.0, damping=1e-2, retries=1)
    before = _weights(m).clone()
    opt.step(B0)
    r = opt.last_step
    assert not r.accepted and r.retries == 1 and r.matvecs == 2
    assert torch.equal(_weights(m), before)  # restored exactly
    assert r.trust_radius == pytest.approx(32.0, rel=1e-12) and r.step_norm == pytest.approx(32.0, rel=1e-12)
    assert r.damping == pytest.approx(1.5e-2, rel=1e-12) and r.next_damping == pytest.approx(2.25e-2, rel=1e-12)
    assert opt.global_state["radius"] == pytest.approx(16.0, rel=1e-12)


def test_accepted_first_try_records_no_retry_and_the_model_stays_exact_on_a_quadratic():
    g = torch.Generator().manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=DT))
    H = Q @ torch.diag(torch.tensor([3.0, 2.0, 1.0, 0.5, 0.2, 0.1], dtype=DT)) @ Q.T
    b = torch.randn(6, generator=g, dtype=DT)

    class V(nn.Module):
        def __init__(self):
            super().__init__()
            self.x = nn.Parameter(torch.zeros(6, dtype=DT))

    def loss(model, batch):
        return 0.5 * model.x @ H @ model.x - b @ model.x

    m = V()
    opt = SaddleFreeNewton(m, loss, subspace=6, damping=1e-12,
                           trust_radius=1e3, retries=5)
    opt.step(B0)
    r = opt.last_step
    assert r.accepted and r.retries == 0
    assert r.predicted_decrease == pytest.approx(r.actual_decrease, rel=1e-9)  # exact on a quadratic
    assert torch.allclose(m.x.detach(), torch.linalg.solve(H, b), rtol=0, atol=1e-8)  # the Newton step


@pytest.mark.parametrize("between", ["exact", "first_order"])
def test_retries_on_a_reused_basis_cost_one_product_each_only_with_the_exact_model(between):
    m = XY(0.5, 1e-3)
    opt = SaddleFreeNewton(m, quartic_saddle, subspace=2, trust_radius=64.0, damping=1e-2, refresh_every=3,
                           between_refreshes=between, retries=8)
    opt.step(B0)  # the refresh step, with its retries
    assert opt.last_step.refreshed and opt.last_step.accepted
    opt.global_state["radius"] = 64.0  # the reused-basis step overshoots too
    opt.step(B0)
    r = opt.last_step
    assert not r.refreshed and r.accepted and r.retries >= 1
    assert r.matvecs == (r.retries + 1 if between == "exact" else 0)
    assert r.loss_after < r.loss_before


def test_state_dict_keeps_retries_and_resumes_bit_identically():
    g = torch.Generator().manual_seed(2)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    x = torch.randn(24, 3, generator=g, dtype=DT)
    kw = dict(subspace=3, history=1, trust_radius=8.0, damping=1e-4, retries=3)
    opt = SaddleFreeNewton(model, nn.MSELoss(), **kw)
    for _ in range(3):
        opt.step((x, x))
    sd = copy.deepcopy(opt.state_dict())
    assert sd["param_groups"][0]["retries"] == 3
    clone = copy.deepcopy(model)
    for _ in range(3):
        opt.step((x, x))
    opt2 = SaddleFreeNewton(clone, nn.MSELoss(), **{**kw, "retries": 0})
    opt2.load_state_dict(sd)
    assert opt2.param_groups[0]["retries"] == 3
    for _ in range(3):
        opt2.step((x, x))
    for p, q in zip(model.parameters(), clone.parameters()):
        assert torch.equal(p, q)
    assert opt2.last_step == opt.last_step
    del sd["param_groups"][0]["retries"]  # saved before the option existed: the constructor's value
    opt3 = SaddleFreeNewton(copy.deepcopy(model), nn.MSELoss(), **{**kw, "retries": 0})
    opt3.load_state_dict(sd)
    opt3.step((x, x))
    assert opt3.last_step.retries == 0


@pytest.mark.parametrize("value, shown", [(-1, "-1"), (1.5, "1.5"), (True, "True"), ("3", "'3'")])
def test_bad_retries_raise_one_clear_line(value, shown):
    with pytest.raises(ValueError, match=rf"^retries: expected an int >= 0, got {shown}; pass e.g. retries=3") as info:
        SaddleFreeNewton(XY(0.0, 0.0), quartic_saddle, retries=value)
    assert "\n" not in str(info.value)
