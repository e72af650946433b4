"""SaddleFreeNewton against closed forms: saddles, Newton steps, the quadratic model."""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch
from torch import nn

from curvlens.operators import DenseOperator
from curvlens.optim._base import OPTIMIZERS, build_optimizer
from curvlens.optim._krylov_subspace import krylov_subspace
from curvlens.optim.saddle_free import SaddleFreeNewton

DT = torch.float64
B0 = torch.zeros(1)  # a placeholder batch for loss_fn(model, batch)


class Vec(nn.Module):
    """Parameters ``x`` (a vector) and ``y`` (a scalar), float64."""

    def __init__(self, x, y=0.0):
        super().__init__()
        self.x = nn.Parameter(torch.as_tensor(x, dtype=DT).clone())
        self.y = nn.Parameter(torch.tensor(float(y), dtype=DT))


def saddle_loss(model, batch):
    return (model.x ** 2).sum() - model.y ** 2


def quadratic(H, b):
    """``1/2 theta^T H theta - b^T theta`` over the flat ``theta = (x, y)``."""

    def loss(model, batch):
        th = torch.cat([model.x.reshape(-1), model.y.reshape(1)])
        return 0.5 * th @ H @ th - b @ th

    return loss


def flat(m):
    return torch.cat([m.x.detach().reshape(-1), m.y.detach().reshape(1)])


def spd(d, eigs, seed=0):
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=DT))
    return Q @ torch.diag(torch.as_tensor(eigs, dtype=DT)) @ Q.T


# ---------------------------------------------------------------------- saddles
def test_leaves_the_saddle_that_damped_newton_converges_to():
    m = Vec([0.5], 1e-3)
    opt = SaddleFreeNewton(m, saddle_loss, subspace=2, damping=1e-3, trust_radius=0.5, negative="abs")
    opt.step(B0)
    assert opt.last_step.accepted and opt.last_step.num_negative == 1
    assert [round(e, 6) for e in opt.last_step.eigenvalues] == [-2.0, 2.0]
    for _ in range(13):  # |y| doubles per step: |1 + |lambda_y|^{-1} lambda_y|
        opt.step(B0)
        assert opt.last_step.accepted
    assert abs(m.y.item()) > 2.0 and abs(m.x.item()) < 1e-6  # away along y, downhill along x
    # damped Newton with the dense Hessian: theta <- theta - (H + lam I)^{-1} g converges to the saddle
    th = torch.tensor([0.5, 1e-3], dtype=DT)
    H = torch.diag(torch.tensor([2.0, -2.0], dtype=DT))
    for _ in range(8):
        th = th - torch.linalg.solve(H + 1e-3 * torch.eye(2, dtype=DT), H @ th)  # g = H theta
    assert float(th.norm()) < 1e-9


def test_escape_steps_keep_the_trust_radius_where_abs_lambda_steps_shrink():
    """Near the saddle |lambda|^-1 g is as small as the distance to it; the escape step is not."""
    far = {}
    for rule in ("abs", "escape"):
        m = Vec([0.5], 1e-6)
        opt = SaddleFreeNewton(m, saddle_loss, subspace=2, damping=1e-3, trust_radius=0.25, negative=rule)
        norms = []
        for _ in range(4):
            opt.step(B0)
            assert opt.last_step.accepted
            norms.append(opt.last_step.step_norm)
        far[rule] = abs(float(m.y.detach()))
        if rule == "escape":  # on the boundary with the downhill sign; the radius doubles on rho > 3/4
            assert opt.last_step.escape and norms == pytest.approx([0.25, 0.5, 1.0, 2.0], rel=1e-9)
            assert float(m.y.detach()) > 0  # y started at +1e-6: downhill is away from 0 on the same side
    assert far["abs"] < 1e-4 and far["escape"] > 3.0


def test_escape_step_is_the_exact_trust_region_solution():
    """Against scipy's root of the secular equation ||(D + mu I)^-1 a|| = r on the dense spectrum."""
    from scipy.optimize import brentq

    eigs = torch.tensor([-3.0, -1.0, 0.5, 2.0, 5.0], dtype=DT)
    H = spd(5, eigs, seed=1)
    b = torch.tensor([1.0, -2.0, 0.5, 0.3, 1.5], dtype=DT)
    m = Vec(torch.zeros(4), 0.0)
    opt = SaddleFreeNewton(m, quadratic(H, b), subspace=5, damping=0.25, trust_radius=0.3)
    opt.step(B0)
    lam, U = torch.linalg.eigh(H)
    a = U.T @ (-b)  # the gradient at 0 is -b
    D = torch.where(lam < -0.25, lam, lam.abs() + 0.25)
    t = brentq(lambda t: float(torch.linalg.vector_norm(a / (D + 3.0 + t))) - 0.3, 1e-12, 100.0, xtol=1e-15)
    expected = U @ (-a / (D + 3.0 + t))
    assert torch.allclose(flat(m), expected, atol=1e-9)
    assert opt.last_step.escape and opt.last_step.step_norm == pytest.approx(0.3, rel=1e-9)
    assert opt.last_step.predicted_decrease == pytest.approx(-float(-b @ expected + 0.5 * expected @ H @ expected))


def test_exact_saddle_point_leaves_along_negative_curvature_without_global_rng():
    m = Vec([0.0], 0.0)
    state = torch.random.get_rng_state()
    opt = SaddleFreeNewton(m, saddle_loss, subspace=2, trust_radius=0.1, generator=3)
    opt.step(B0)
    assert torch.equal(state, torch.random.get_rng_state())
    assert opt.last_step.accepted and abs(abs(float(m.y.detach())) - 0.1) < 1e-12 and abs(float(m.x.detach())) < 1e-12
    assert opt.last_step.predicted_decrease == pytest.approx(0.01, rel=1e-10)


def _faint_saddle(eps):
    def loss(model, batch):
        return (model.x ** 2).sum() - eps * model.y ** 2

    return loss


def test_faint_negative_curvature_far_below_the_damping_gets_the_escape_step():
    """x^2 - eps y^2 with eps = 1e-6 and damping 1: lambda_y = -2e-6 is 5e5 times smaller than the
    damping but 3e4 times above 2 sqrt(eps) max|lambda|, so it is escaped along; the step is the
    exact trust-region solution of the model with D = (lambda_y, |lambda_x| + damping)."""
    from scipy.optimize import brentq

    eps, damping, radius, x0, y0 = 1e-6, 1.0, 0.5, 0.5, 1e-3
    m = Vec([x0], y0)
    opt = SaddleFreeNewton(m, _faint_saddle(eps), subspace=2, damping=damping, trust_radius=radius)
    opt.step(B0)
    r = opt.last_step
    assert r.accepted and r.escape and r.num_negative == 1
    assert r.eigenvalues == pytest.approx([-2 * eps, 2.0], rel=1e-6)
    assert r.negative_threshold == pytest.approx(2 * math.sqrt(torch.finfo(DT).eps) * 2.0, rel=1e-9)
    a = torch.tensor([-2 * eps * y0, 2 * x0], dtype=DT)  # the gradient along (y, x)
    D = torch.tensor([-2 * eps, 2.0 + damping], dtype=DT)
    t = brentq(lambda t: float(torch.linalg.vector_norm(a / (D + t))) - radius, 2 * eps + 1e-300, 10.0, xtol=1e-30,
               rtol=1e-15)
    c = -a / (D + t)
    assert float(m.y.detach()) == pytest.approx(y0 + float(c[0]), rel=1e-7)
    assert float(m.x.detach()) == pytest.approx(x0 + float(c[1]), rel=1e-9)
    assert float(m.y.detach()) > 0.3 and r.step_norm == pytest.approx(radius, rel=1e-9)  # downhill: same side
    assert r.actual_decrease == pytest.approx(r.predicted_decrease, rel=1e-9)  # the model is exact
    for _ in range(4):  # it keeps leaving: the radius doubles after good boundary steps
        opt.step(B0)
    assert opt.last_step.escape and float(m.y.detach()) > 4.0


def test_faint_negative_curvature_was_flattened_when_the_threshold_was_the_damping():
    """The former rule (escape only below -damping) is negative_tol = damping / max|lambda|: y barely moves."""
    eps, damping, y0 = 1e-6, 1.0, 1e-3
    m = Vec([0.5], y0)
    opt = SaddleFreeNewton(m, _faint_saddle(eps), subspace=2, damping=damping, trust_radius=0.5, negative_tol=0.5)
    for _ in range(5):
        opt.step(B0)
        assert opt.last_step.accepted and not opt.last_step.escape
    assert abs(float(m.y.detach()) - y0) < 1e-7  # steps of 2e-9 / (2e-6 + damping) along y


def test_negative_tol_zero_counts_every_negative_eigenvalue_and_positive_directions_keep_the_damping():
    H = torch.diag(torch.tensor([4.0, 1.0, -1e-12], dtype=DT))
    b = torch.tensor([1.0, 1.0, 0.3], dtype=DT)
    for tol, escaped in ((0.0, True), (None, False)):  # -1e-12 / 4 is below 2 sqrt(eps): noise by default
        m = Vec(torch.zeros(2), 1e-3)
        opt = SaddleFreeNewton(m, quadratic(H, b), subspace=3, damping=0.5, trust_radius=1e6, max_trust_radius=1e6,
                               negative_tol=tol)
        opt.step(B0)
        assert opt.last_step.escape is escaped
        if not escaped:  # the saddle-free step -(|lambda| + damping)^{-1} g in every direction
            g = H @ torch.tensor([0.0, 0.0, 1e-3], dtype=DT) - b
            expected = torch.tensor([0.0, 0.0, 1e-3], dtype=DT) - g / (H.diagonal().abs() + 0.5)
            assert torch.allclose(flat(m), expected, atol=1e-12)


# ---------------------------------------------------------------------- quadratics
@pytest.mark.parametrize("subspace", [3, 5])
def test_convex_quadratic_takes_the_newton_step(subspace):
    H = spd(8, [1.0, 1.0, 1.0, 4.0, 4.0, 9.0, 9.0, 9.0])  # 3 distinct eigenvalues
    b = torch.linspace(-1.0, 1.0, 8, dtype=DT)
    m = Vec(torch.full((7,), 0.3), -0.2)
    th0 = flat(m)
    opt = SaddleFreeNewton(m, quadratic(H, b), subspace=subspace, damping=1e-12, trust_radius=1e6)
    opt.step(B0)
    newton = th0 - torch.linalg.solve(H, H @ th0 - b)
    assert torch.allclose(flat(m), newton, rtol=0, atol=1e-9)
    assert opt.last_step.num_negative == 0 and len(opt.last_step.eigenvalues) == 3


def test_damped_step_is_abs_lambda_plus_damping_inverted_in_the_subspace():
    eigs = [-3.0, -1.0, 0.5, 2.0, 5.0]
    H = spd(5, eigs, seed=1)
    b = torch.tensor([1.0, -2.0, 0.5, 0.3, 1.5], dtype=DT)
    m = Vec(torch.zeros(4), 0.0)
    opt = SaddleFreeNewton(m, quadratic(H, b), subspace=5, damping=0.25, trust_radius=1e6, negative="abs")
    opt.step(B0)
    lam, U = torch.linalg.eigh(H)
    expected = U @ ((U.T @ b) / (lam.abs() + 0.25))  # -|H + damping|^{-1} g with g = -b
    assert torch.allclose(flat(m), expected, atol=1e-10)
    assert opt.last_step.num_negative == 2


@pytest.mark.parametrize("base", ["sgd", "adam"])
@pytest.mark.parametrize("radius", [1e6, 0.05])
def test_predicted_decrease_equals_actual_on_a_quadratic(base, radius):
    H = spd(12, torch.linspace(-2.0, 6.0, 12), seed=2)
    b = torch.linspace(0.5, -0.5, 12, dtype=DT)
    m = Vec(torch.linspace(-0.3, 0.4, 11), 0.1)
    # refresh_every=2: the second step reuses the basis, so the gradient has a part outside it
    opt = SaddleFreeNewton(m, quadratic(H, b), subspace=4, base=base, trust_radius=radius, refresh_every=2,
                           max_trust_radius=radius)
    fractions = []
    for _ in range(4):
        opt.step(B0)
        r = opt.last_step
        assert r.accepted and r.predicted_decrease > 0
        assert r.actual_decrease == pytest.approx(r.predicted_decrease, rel=1e-9, abs=1e-13)
        assert r.rho == pytest.approx(1.0, rel=1e-6) and r.next_damping == pytest.approx(r.damping * 2 / 3)
        fractions.append(r.subspace_norm_fraction)
    assert fractions[0] == pytest.approx(1.0)
    assert radius < 1 or fractions[1] < 1 - 1e-8  # after a long step the base rule has something to do
    assert radius > 1 or opt.last_step.step_norm <= radius * (1 + 1e-12)


def test_refresh_every_reuses_the_basis_with_one_product():
    """A refresh costs `subspace` products (the model is exact in the subspace); a reuse costs H s."""
    H = spd(10, torch.linspace(0.5, 5.0, 10), seed=3)
    m = Vec(torch.ones(9), 1.0)
    opt = SaddleFreeNewton(m, quadratic(H, torch.zeros(10, dtype=DT)), subspace=3, refresh_every=3)
    rec = []
    for _ in range(4):
        opt.step(B0)
        rec.append((opt.last_step.refreshed, opt.last_step.matvecs))
    assert rec == [(True, 3), (False, 1), (False, 1), (True, 3)]


def test_history_enriches_the_subspace():
    H = spd(10, torch.linspace(-1.0, 5.0, 10), seed=4)
    m = Vec(torch.ones(9), 1.0)
    opt = SaddleFreeNewton(m, quadratic(H, torch.ones(10, dtype=DT)), subspace=4, history=2)
    for _ in range(3):
        opt.step(B0)
    assert opt.last_step.matvecs == 4 and len(opt.last_step.eigenvalues) == 4
    assert len(opt.global_state["history"]) == 2


def test_krylov_subspace_projects_exactly_and_drops_dependent_directions():
    A = spd(9, torch.linspace(-2.0, 3.0, 9), seed=5)
    op = DenseOperator(A)
    g = torch.linspace(1.0, 2.0, 9, dtype=DT)
    e = torch.zeros(9, dtype=DT)
    e[0] = 1.0
    sub = krylov_subspace(op, g, 5, extra=[e, 2.0 * e, g])
    V = sub.basis
    assert sub.num_krylov == 3 and sub.dim == 4 and sub.matvecs == 4  # 2e and g are dependent
    assert torch.allclose(V.T @ V, torch.eye(4, dtype=DT), atol=1e-12)
    assert torch.allclose(sub.projected, V.T @ A @ V, atol=1e-12)


# ---------------------------------------------------------------------- state, safety
class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Tanh(), nn.Linear(3, 4))

    def forward(self, x):
        return self.net(x)


def _tiny(seed=0):
    g = torch.Generator().manual_seed(seed)
    model = Tiny().double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=g, dtype=DT))
    x = torch.randn(16, 4, generator=g, dtype=DT)
    return model, (x, x)


@pytest.mark.parametrize("via", ["deepcopy", "torch.save"])
def test_state_dict_round_trip_continues_bit_identically(via):
    model, batch = _tiny()
    kw = dict(subspace=4, history=1, refresh_every=2, base="adam", base_lr=1e-2, generator=7)
    opt = SaddleFreeNewton(model, nn.MSELoss(), **kw)
    for _ in range(3):
        opt.step(batch)
    if via == "deepcopy":
        sd = copy.deepcopy(opt.state_dict())
    else:
        buf = io.BytesIO()
        torch.save(opt.state_dict(), buf)
        buf.seek(0)
        sd = torch.load(buf, weights_only=False)
    clone = copy.deepcopy(model)
    for _ in range(3):
        opt.step(batch)
    opt2 = SaddleFreeNewton(clone, nn.MSELoss(), **{**kw, "generator": 99})
    opt2.load_state_dict(sd)
    for _ in range(3):
        opt2.step(batch)
    for p, q in zip(model.parameters(), clone.parameters()):
        assert torch.equal(p, q)
    assert opt2.last_step == opt.last_step


def test_state_dict_keeps_negative_tol_and_loads_one_saved_without_it():
    model, batch = _tiny()
    opt = SaddleFreeNewton(model, nn.MSELoss(), subspace=3, negative_tol=1e-5)
    opt.step(batch)
    sd = copy.deepcopy(opt.state_dict())
    assert sd["param_groups"][0]["negative_tol"] == 1e-5
    opt2 = SaddleFreeNewton(copy.deepcopy(model), nn.MSELoss(), subspace=3, negative_tol=0.25)
    opt2.load_state_dict(sd)
    assert opt2.param_groups[0]["negative_tol"] == 1e-5
    del sd["param_groups"][0]["negative_tol"]  # saved before the option existed: the constructor's value
    opt3 = SaddleFreeNewton(copy.deepcopy(model), nn.MSELoss(), subspace=3, negative_tol=0.25)
    opt3.load_state_dict(sd)
    opt3.step(batch)
    lam = opt3.last_step.eigenvalues
    assert opt3.last_step.negative_threshold == pytest.approx(0.25 * max(abs(x) for x in lam), rel=1e-12)


def test_leaves_grad_mode_bn_stats_and_global_rng_alone():
    model, batch = _tiny(1)
    model.train()
    sentinel = [torch.full_like(p, 7.0) for p in model.parameters()]
    for p, s in zip(model.parameters(), sentinel):
        p.grad = s.clone()
    bn = model.net[1]
    stats = (bn.running_mean.clone(), bn.running_var.clone(), int(bn.num_batches_tracked))
    rng = torch.random.get_rng_state()
    opt = SaddleFreeNewton(model, nn.MSELoss(), subspace=3)
    losses = [float(opt.step(batch)) for _ in range(4)]
    assert model.training and losses[-1] < losses[0]
    assert torch.equal(rng, torch.random.get_rng_state())
    assert all(torch.equal(p.grad, s) for p, s in zip(model.parameters(), sentinel))
    assert torch.equal(bn.running_mean, stats[0]) and torch.equal(bn.running_var, stats[1])
    assert int(bn.num_batches_tracked) == stats[2]


def test_non_finite_loss_restores_exactly_and_raises_damping():
    def barrier(model, batch):  # NaN beyond |y| = 0.5
        return (model.x ** 2).sum() - model.y ** 2 + 1e-3 * torch.log(0.5 - model.y.abs())

    m = Vec([0.3], 0.45)
    opt = SaddleFreeNewton(m, barrier, subspace=2, damping=1e-2, trust_radius=1.0)
    before = [p.detach().clone() for p in m.parameters()]
    opt.step(B0)
    r = opt.last_step
    assert not r.accepted and "not finite" in r.status and "restored exactly" in r.status
    assert all(torch.equal(p, q) for p, q in zip(m.parameters(), before))
    assert r.next_damping == pytest.approx(1.5e-2) and opt.global_state["radius"] == pytest.approx(0.5 * r.step_norm)
    for _ in range(15):
        opt.step(B0)
        assert all(bool(torch.isfinite(p).all()) for p in m.parameters())
    assert abs(float(m.y.detach())) < 0.5 and math.isfinite(float(barrier(m, B0).detach()))


def test_float32_model_stays_float32():
    model = nn.Sequential(nn.Linear(3, 2), nn.Tanh(), nn.Linear(2, 1))
    x = torch.linspace(-1, 1, 24).reshape(8, 3)
    opt = SaddleFreeNewton(model, nn.MSELoss(), subspace=3)
    first = float(opt.step((x, x[:, :1])))
    for _ in range(3):
        last = float(opt.step((x, x[:, :1])))
    assert all(p.dtype == torch.float32 for p in model.parameters()) and last <= first


def test_registered_by_name():
    assert OPTIMIZERS["saddle_free_newton"] is SaddleFreeNewton
    opt = build_optimizer("saddle_free_newton", Vec([1.0]), saddle_loss, subspace=2)
    assert isinstance(opt, SaddleFreeNewton) and isinstance(opt, torch.optim.Optimizer)


# ---------------------------------------------------------------------- bad input
BAD = [
    (dict(subspace=0), ValueError, r"^subspace: expected an int >= 1, got 0; pass"),
    (dict(subspace=2.5), ValueError, r"^subspace: expected an int >= 1, got 2.5"),
    (dict(damping=-1.0), ValueError, r"^damping: expected a finite number > 0, got -1.0; pass e.g. damping"),
    (dict(damping=float("nan")), ValueError, r"^damping: expected a finite number > 0, got nan"),
    (dict(lr=0), ValueError, r"^lr: expected a finite number > 0, got 0; pass e.g. lr=1.0"),
    (dict(base="rmsprop"), ValueError, r"^base: expected 'sgd' or 'adam', got 'rmsprop'; pick"),
    (dict(base_lr=-1e-3), ValueError, r"^base_lr: expected a finite number > 0, got -0.001"),
    (dict(refresh_every=0), ValueError, r"^refresh_every: expected an int >= 1, got 0"),
    (dict(history=-1), ValueError, r"^history: expected an int >= 0, got -1"),
    (dict(subspace=3, history=3), ValueError, r"^history: expected fewer than subspace=3 previous steps, got 3"),
    (dict(trust_radius=float("inf")), ValueError, r"^trust_radius: expected a finite number > 0, got inf"),
    (dict(trust_radius=2.0, max_trust_radius=1.0), ValueError,
     r"^max_trust_radius: expected at least trust_radius=2, got 1; raise it"),
    (dict(max_trust_radius=0.0), ValueError, r"^max_trust_radius: expected a finite number > 0, got 0.0"),
    (dict(negative="flip"), ValueError, r"^negative: expected 'escape' or 'abs', got 'flip'; pick"),
    (dict(negative_tol=-1e-3), ValueError, r"^negative_tol: expected a finite number >= 0, got -0.001; pass e.g."),
    (dict(negative_tol=float("nan")), ValueError, r"^negative_tol: expected a finite number >= 0, got nan"),
    (dict(negative_tol=1.0), ValueError, r"^negative_tol: expected a number in \[0, 1\) \(relative to max\|lambda\|\), "
     r"got 1; .*use negative='abs' instead$"),
    (dict(generator="seed"), TypeError, r"^generator: expected a torch.Generator, an int seed or None, got str"),
]


@pytest.mark.parametrize("kwargs, exc, msg", BAD)
def test_bad_arguments_raise_one_clear_line(kwargs, exc, msg):
    with pytest.raises(exc, match=msg) as info:
        SaddleFreeNewton(Vec([1.0]), saddle_loss, **kwargs)
    assert "\n" not in str(info.value)


def test_bad_model_loss_and_step_calls():
    with pytest.raises(TypeError, match=r"^model: expected a torch.nn.Module, got str"):
        SaddleFreeNewton("net", saddle_loss)
    with pytest.raises(TypeError, match=r"^loss_fn: expected a criterion"):
        SaddleFreeNewton(Vec([1.0]), None)
    opt = SaddleFreeNewton(Vec([1.0]), saddle_loss)
    with pytest.raises(ValueError, match=r"^batch: expected the \(inputs, targets\) batch of this step, got None"):
        opt.step()
    with pytest.raises(TypeError, match=r"^closure: SaddleFreeNewton evaluates the loss itself"):
        opt.step(B0, closure=lambda: 0.0)

