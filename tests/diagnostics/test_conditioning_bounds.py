"""Honest extremes: a certified Ritz value is an eigenvalue near it, not proof of the smallest one."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from curvlens.diagnostics.conditioning import conditioning_from, resolve_bottom_float64
from curvlens.linalg import EigenResult, bottom_eigenpairs, top_eigenpairs
from curvlens.operators import DenseOperator, GGNOperator
from curvlens.recommend import RecommendationContext, recommend
from curvlens.results import RunInfo

DT = torch.float64


def _pair(A: torch.Tensor, v: torch.Tensor, which: str) -> EigenResult:
    """An EigenResult for the unit vector ``v`` with its Rayleigh quotient and true residual."""
    v = v / v.norm()
    theta = float(v @ A @ v)
    r = float((A @ v - theta * v).norm())
    info = RunInfo(seed=0, matvecs=1, wall_time=0.0, converged=True, status="certified", dtype=str(A.dtype))
    return EigenResult(eigenvalues=torch.tensor([theta], dtype=DT), eigenvectors=v[:, None],
                       residuals=torch.tensor([r], dtype=DT), tolerances=torch.tensor([1e-3 * abs(theta)], dtype=DT),
                       converged=torch.tensor([r <= 1e-3 * abs(theta)]), which=which, method="test", rtol=1e-3,
                       atol=0.0, info=info)


def test_certified_but_not_extreme_is_reported_as_a_bound():
    # hidden small eigenvalue 1e-3: the Ritz pair (0.5, e_1) is certified exactly, yet not the bottom
    evals = torch.tensor([1e-3, 0.5, 1.0, 2.0, 4.0], dtype=DT)
    A = torch.diag(evals)
    op = DenseOperator(A)
    top = top_eigenpairs(op, 1, generator=0)
    bottom = _pair(A, torch.eye(5, dtype=DT)[1], "smallest")
    assert bool(bottom.converged[0]) and float(bottom.residuals[0]) == 0.0
    c = conditioning_from(top, bottom)
    assert c.lambda_min_status == "resolved"  # never "verified" from a residual alone
    assert c.lambda_min_upper_bound == pytest.approx(0.5)
    assert c.condition_number_lower_bound == pytest.approx(8.0) and c.condition_number_lower_bound <= 4.0 / 1e-3
    assert any("may miss smaller ones" in n and "lambda_min <= theta_min" in n for n in c.notes)
    # the float64 dense check finds the hidden eigenvalue and makes the condition number exact
    exact = resolve_bottom_float64(op)
    assert exact == pytest.approx(1e-3)
    v = conditioning_from(top, bottom, verified_lambda_min=exact)
    assert v.lambda_min_status == "verified" and v.condition_number == pytest.approx(4000.0)


def test_unresolved_float32_bottom_keeps_the_bound_and_the_recommender_uses_it():
    gen = torch.Generator().manual_seed(0)
    n, d = 200, 8
    X = torch.randn(n, d, generator=gen, dtype=DT) * torch.logspace(0, -3.5, d, dtype=DT)
    y = X @ torch.randn(d, 1, generator=gen, dtype=DT)
    model = torch.nn.Linear(d, 1, bias=False)  # float32
    data = (X.float(), y.float())
    op = GGNOperator(model, torch.nn.MSELoss(), data)
    exact = np.linalg.eigvalsh((2 * X.T @ X / n).numpy())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        top = top_eigenpairs(op, 1, generator=0)
        bottom = bottom_eigenpairs(op, 1, generator=0, max_matvecs=60)
    c = conditioning_from(top, bottom, psd=True)
    theta, r = float(bottom.eigenvalues[0]), float(bottom.residuals[0])
    if c.lambda_min_status == "unresolved":
        assert c.condition_number is None and any("unresolved" in n for n in c.notes)
    assert c.condition_number_lower_bound is not None
    assert c.condition_number_lower_bound <= exact[-1] / exact[0] * (1 + 1e-3)  # a bound that holds
    assert theta >= exact[0] * (1 - 1e-3) or theta - r <= 0  # Ritz values lie inside the spectrum
    # float64 rebuild of the model operator resolves the bottom end
    assert resolve_bottom_float64(op) == pytest.approx(exact[0], rel=1e-6)
    # the recommender never turns an unresolved bottom into "well-conditioned" via another quantity
    summary = {"lambda_max": c.lambda_max, "lambda_min": theta, "lambda_min_certified": False,
               "condition_number": None, "condition_number_lower_bound": 2e5, "lambda_min_status": "unresolved",
               "effective_condition_number": 11.9, "num_samples": n, "num_params": d}
    rec = recommend(summary, RecommendationContext(batch_size=n))
    texts = [r for cand in rec.candidates for r in cand.reasons]
    assert any("condition number >= 2e+05 > 1e+04 (ill-conditioned)" in t for t in texts)
    assert not any("well-conditioned" in t or "effective condition number" in t for t in texts)
    # an unresolved positive bottom is a stated bound in the reasons, not a red warning
    assert any("lower bound" in t for t in texts)
    assert not any("bounded below" in w for w in rec.warnings)


def test_positive_unresolved_ritz_ratio_is_a_lower_bound_not_well_conditioned():
    rec = recommend({"lambda_max": 50.0, "lambda_min": 1.0, "lambda_min_certified": False,
                     "effective_condition_number": 3.0}, RecommendationContext(batch_size=32))
    texts = [r for cand in rec.candidates for r in cand.reasons]
    assert not any("well-conditioned" in t for t in texts)  # kappa >= 50 says nothing about "well"
    assert not any("effective condition number" in t for t in texts)


def test_bad_arguments_are_one_line_each():
    op = DenseOperator(torch.diag(torch.tensor([1.0, 2.0], dtype=DT)))
    with pytest.raises(TypeError, match=r"^top: expected an EigenResult"):
        conditioning_from("x")  # type: ignore[arg-type]
    assert resolve_bottom_float64(op, max_dim=1) is None  # too large for the dense route: says None
