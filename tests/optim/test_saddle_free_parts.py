"""The parts of SaddleFreeNewton: one-graph products, the subspace trust-region step, settings
from a measured spectrum."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from curvlens import Problem
from curvlens.operators import HessianOperator
from curvlens.optim._step_hessian import StepHessian
from curvlens.optim._subspace_trust_region import default_negative_tol, negative_threshold, subspace_step
from curvlens.optim.saddle_free import SaddleFreeNewton

DT = torch.float64


def _net_and_batches():
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=g, dtype=DT))
    x, y = torch.randn(10, 3, generator=g, dtype=DT), torch.randn(10, 2, generator=g, dtype=DT)
    return model, [(x[:6], y[:6]), (x[6:], y[6:])]  # two batches of unequal size: weights 6/10, 4/10


# ---------------------------------------------------------------------- one-graph products
def test_step_hessian_matches_problem_and_hessian_operator_over_weighted_batches():
    model, batches = _net_and_batches()
    problem = Problem(model, nn.MSELoss(), batches)
    h = StepHessian(problem, validate=True)
    loss, grad = problem.loss_and_gradient(flat=True)
    assert float(h.loss) == pytest.approx(float(loss), rel=1e-14)
    assert torch.allclose(h.gradient, grad, rtol=0, atol=1e-14)
    V = torch.randn(problem.dim, 3, generator=torch.Generator().manual_seed(1), dtype=DT)
    ref = HessianOperator(problem).matmat(V)
    assert torch.allclose(h.matmat(V), ref, rtol=0, atol=1e-12)
    assert torch.allclose(h.matvec(V[:, 0]), ref[:, 0], rtol=0, atol=1e-12)
    assert h.num_matvecs == 4 and h.dim == problem.dim and h.dtype == DT


def test_step_hessian_parameter_that_does_not_reach_the_loss_gets_zeros():
    model = nn.ModuleDict({"used": nn.Linear(2, 1), "unused": nn.Linear(2, 1)}).double()
    x = torch.ones(4, 2, dtype=DT)
    problem = Problem(model, lambda model, batch: (model["used"](batch) ** 2).mean(), x)
    h = StepHessian(problem)
    V = torch.ones(problem.dim, 1, dtype=DT)
    dense = HessianOperator(problem).matmat(V)
    assert torch.allclose(h.matmat(V), dense, atol=1e-13)
    assert float(h.gradient.abs().sum()) > 0 and torch.allclose(h.gradient, problem.gradient(flat=True))


def test_step_hessian_refuses_once_differentiable_models():
    class OnceTanh(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            y = torch.tanh(x)
            ctx.save_for_backward(y)
            return y

        @staticmethod
        @torch.autograd.function.once_differentiable
        def backward(ctx, go):
            (y,) = ctx.saved_tensors
            return go * (1 - y * y)

    a, b = nn.Linear(2, 3).double(), nn.Linear(3, 1).double()
    model = nn.ModuleList([a, b])
    problem = Problem(model, lambda model, batch: (model[1](OnceTanh.apply(model[0](batch))) ** 2).mean(),
                      torch.ones(3, 2, dtype=DT))
    with pytest.raises(ValueError, match=r"^model: SaddleFreeNewton needs second derivatives"):
        StepHessian(problem, validate=True)


# ---------------------------------------------------------------------- the subspace trust-region step
LAM = torch.tensor([-2.0, -0.5, 1.0, 4.0], dtype=DT)


def _model(lam, a, c):
    return float(a @ c + 0.5 * (lam * c * c).sum())


def test_interior_step_is_the_saddle_free_newton_step():
    a = torch.tensor([0.1, -0.2, 0.3, -0.4], dtype=DT)
    st = subspace_step(LAM, a, damping=0.1, radius=100.0, lr=0.5, negative="abs")
    assert not st.on_boundary and st.shift == 0.0
    assert torch.allclose(st.coefficients, -0.5 * a / (LAM.abs() + 0.1), atol=1e-15)
    assert st.predicted_decrease == pytest.approx(-_model(LAM, a, st.coefficients), rel=1e-14)


@pytest.mark.parametrize("negative", ["abs", "escape"])
@pytest.mark.parametrize("radius", [1e-3, 0.1, 2.0])
def test_boundary_step_minimizes_its_model_over_the_sphere(negative, radius):
    """Against 20,000 random points of the sphere ||c|| = radius (the solution is no worse than any)."""
    a = torch.tensor([1e-3, -0.2, 0.3, -0.4], dtype=DT)
    d = (LAM.abs() + 0.1) if negative == "abs" else torch.where(LAM < -0.1, LAM, LAM.abs() + 0.1)
    st = subspace_step(LAM, a, damping=0.1, radius=radius, negative=negative)
    if negative == "abs" and radius == 2.0:  # the saddle-free step fits inside
        assert not st.on_boundary
        return
    assert st.on_boundary and float(st.coefficients.norm()) == pytest.approx(radius, rel=1e-10)
    assert st.escape == (negative == "escape")
    pts = torch.randn(20000, 4, generator=torch.Generator().manual_seed(0), dtype=DT)
    pts = radius * pts / pts.norm(dim=1, keepdim=True)
    vals = pts @ a + 0.5 * (pts * pts) @ d
    c = st.coefficients
    assert float(a @ c + 0.5 * (d * c * c).sum()) <= float(vals.min()) + 1e-12 * max(1.0, radius ** 2)


def test_escape_goes_downhill_along_the_most_negative_direction_however_small_the_gradient():
    for sign in (1.0, -1.0):
        a = torch.tensor([sign * 1e-12, 0.0, 0.0, 0.0], dtype=DT)
        st = subspace_step(LAM, a, damping=1e-3, radius=0.7)
        assert float(st.coefficients[0]) == pytest.approx(-sign * 0.7, rel=1e-9)
        assert st.predicted_decrease == pytest.approx(0.5 * 2.0 * 0.49, rel=1e-9)
    hard = subspace_step(LAM, torch.tensor([0.0, 0.0, 0.5, 0.0], dtype=DT), damping=1e-3, radius=1.0)
    c = hard.coefficients  # hard case: the rest of the length goes along the most negative direction
    assert float(c.norm()) == pytest.approx(1.0) and abs(float(c[0])) > 0.9 and float(c[2]) < 0


def test_negative_curvature_is_detected_relative_to_max_abs_lambda_not_to_the_damping():
    lam = torch.tensor([-1e-3, 1.0], dtype=DT)
    a = torch.tensor([1e-3, 0.1], dtype=DT)
    st = subspace_step(lam, a, damping=1e-2, radius=10.0)  # -1e-3 > -damping, yet clearly negative
    assert st.escape and st.on_boundary and float(st.coefficients.norm()) == pytest.approx(10.0, rel=1e-10)
    assert float(st.coefficients[0]) < -9.9  # downhill along the negative direction
    for tol in (1e-3, 0.5):  # at or above the threshold tol * max|lambda|: flat, |lambda| + damping
        st = subspace_step(lam, a, damping=1e-2, radius=10.0, negative_tol=tol)
        assert not st.escape and torch.allclose(st.coefficients, -a / (lam.abs() + 1e-2), rtol=0, atol=1e-15)
    scaled = subspace_step(1e-6 * lam, 1e-6 * a, damping=1e-2, radius=10.0)  # the rule is scale-free
    assert scaled.escape and float(scaled.coefficients[0]) < -9.9


def test_default_negative_tol_is_twice_sqrt_eps_of_the_dtype():
    assert default_negative_tol(torch.float64) == 2 * math.sqrt(2.0 ** -52)
    assert default_negative_tol(torch.float32) == 2 * math.sqrt(2.0 ** -23)
    lam = torch.tensor([-1e-9, 1.0], dtype=DT)  # below 2 sqrt(eps) = 3e-8 in float64: rounding noise, flat
    assert not subspace_step(lam, torch.tensor([1e-6, 0.1], dtype=DT), damping=1e-2, radius=10.0).escape
    assert subspace_step(lam, torch.tensor([1e-6, 0.1], dtype=DT), damping=1e-2, radius=10.0, negative_tol=0.0).escape
    assert negative_threshold(lam) == pytest.approx(default_negative_tol(DT)) and negative_threshold(lam, 0.5) == 0.5


# ---------------------------------------------------------------------- settings from a measured spectrum
class _FakeAnalysis:
    def __init__(self, grad_norm_sq=None, **summary):
        self._s = summary
        self.curvature = summary.get("curvature", "hessian")
        self.gradient_noise = None if grad_norm_sq is None else SimpleNamespace(grad_norm_sq=grad_norm_sq)

    def summary(self):
        return dict(self._s)


def test_from_analysis_at_a_saddle_escapes_with_damping_below_the_negative_curvature():
    res = _FakeAnalysis(curvature="hessian", lambda_max=50.0, lambda_min=-2.0, trace=40.0, num_params=4,
                        negative_mass=0.2, grad_norm_sq=9.0)
    opt = SaddleFreeNewton.from_analysis(res, nn.Linear(3, 1).double(), nn.MSELoss(), generator=0)
    hp = opt.param_groups[0]
    assert opt.global_state["damping"] == pytest.approx(1.0)  # min(trace/D = 10, |lambda_min|/2 = 1)
    assert hp["negative"] == "escape" and hp["lr"] == 1.0
    assert hp["trust_radius"] == pytest.approx(3.0 / (2.0 + 1.0))  # ||g|| / (|lambda_min| + damping)
    assert hp["max_trust_radius"] == pytest.approx(100.0 * hp["trust_radius"])
    text = " ".join(opt.analysis_reasons)
    assert "|lambda_min|/2" in text and "negative mass 0.2 > 0.05" in text and "||g|| / (|lambda_min|" in text


def test_from_analysis_near_a_minimum_uses_abs_and_overrides_win():
    res = _FakeAnalysis(curvature="hessian", lambda_max=8.0, lambda_min=1e-4, trace=4.0, num_params=4,
                        negative_mass=0.0, grad_norm_sq=4.0)
    opt = SaddleFreeNewton.from_analysis(res, nn.Linear(3, 1).double(), nn.MSELoss(), damping=0.3, subspace=2)
    hp = opt.param_groups[0]
    assert hp["negative"] == "abs" and opt.global_state["damping"] == 0.3 and hp["subspace"] == 2
    assert hp["trust_radius"] == pytest.approx(2.0 / (8.0 + 1.0))  # Cauchy-like: ||g|| / (lambda_max + trace/D)
    assert any(r.startswith("damping=0.3: given by the caller") for r in opt.analysis_reasons)
    assert not any(r.startswith("damping=1:") for r in opt.analysis_reasons)


def test_from_analysis_of_a_psd_curvature_or_without_gradient_says_what_it_could_not_set():
    res = _FakeAnalysis(curvature="ggn", lambda_max=8.0, lambda_min=0.0, trace=None, num_params=4)
    opt = SaddleFreeNewton.from_analysis(res, nn.Linear(3, 1).double(), nn.MSELoss())
    assert opt.global_state["damping"] == pytest.approx(8e-3) and opt.param_groups[0]["trust_radius"] == 1.0
    text = " ".join(opt.analysis_reasons)
    assert "PSD by construction" in text and "gradient norm was not measured" in text
    with pytest.raises(TypeError, match=r"^result: expected a curvlens AnalysisResult .* got dict; run"):
        SaddleFreeNewton.from_analysis({"lambda_max": 1.0}, nn.Linear(3, 1), nn.MSELoss())
    assert math.isfinite(opt.global_state["radius"])


def test_at_a_minimum_with_zero_gradient_nothing_moves_and_the_radius_stays():
    class Bowl(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(3, dtype=DT))

    m = Bowl()
    opt = SaddleFreeNewton(m, lambda model, batch: (model.w ** 2).sum(), subspace=2, trust_radius=0.5, generator=0)
    for _ in range(3):
        opt.step(torch.zeros(1))
    assert torch.equal(m.w.detach(), torch.zeros(3, dtype=DT)) and opt.global_state["radius"] == 0.5
    assert not opt.last_step.escape and opt.last_step.num_negative == 0
