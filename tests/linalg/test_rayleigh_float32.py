"""Reported eigenvalues are normalized Rayleigh quotients of unit vectors, also for float32 at D > 1M.

torch's float32 norm reductions lose about 3e-4 relative at D ~ 1e6 (curvlens.linalg._accurate):
a vector scaled by such a norm is no unit vector and ``v^T A v`` is biased by twice that. The
reference here is the same model in float64: the quotient of the returned float32 vector,
``v^T H v / v^T v`` with every sum in float64.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from curvlens.linalg import ConvergenceWarning, power_iteration, top_eigenpairs
from curvlens.linalg._accurate import column_norms64, rayleigh, unit, unit_columns
from curvlens.operators import HessianOperator

SIZES = (7, 13, 5, 11, 9, 3, 8, 4)  # uneven batches, 60 samples


@pytest.fixture(scope="module")
def big_mlp():
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)  # model init only, restored below
    state = torch.random.get_rng_state()
    model = nn.Sequential(nn.Linear(784, 1024), nn.Tanh(), nn.Linear(1024, 256), nn.Tanh(), nn.Linear(256, 10))
    torch.random.set_rng_state(state)
    batches = [(torch.randn(n, 784, generator=g), torch.randint(0, 10, (n,), generator=g)) for n in SIZES]
    dim = sum(p.numel() for p in model.parameters())
    assert dim > 1_000_000
    op32 = HessianOperator(model, nn.CrossEntropyLoss(), batches)
    m64 = copy.deepcopy(model).double()
    op64 = HessianOperator(m64, nn.CrossEntropyLoss(), [(x.double(), y) for x, y in batches])
    return op32, op64


def _reference(op64, V):
    V64 = V.double()
    th, res = rayleigh(V64, op64.matmat(V64))
    return th, res


def test_top_eigenpairs_float32_quotients_match_float64(big_mlp):
    op32, op64 = big_mlp
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        res = top_eigenpairs(op32, 2, max_matvecs=14, generator=0)
    V = res.eigenvectors
    assert V.dtype == torch.float32
    np.testing.assert_allclose(column_norms64(V).numpy(), 1.0, atol=1e-6)  # unit vectors (before: 1.0003)
    th, r = _reference(op64, V)
    np.testing.assert_allclose(res.eigenvalues.numpy(), th, rtol=1e-5)
    np.testing.assert_allclose(res.residuals.numpy(), r, rtol=1e-2, atol=1e-5 * np.abs(th).max())


def test_power_iteration_float32_quotient(big_mlp):
    op32, op64 = big_mlp
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        res = power_iteration(op32, 1, max_matvecs=4, generator=1)
    np.testing.assert_allclose(column_norms64(res.eigenvectors).numpy(), 1.0, atol=1e-6)
    th, _ = _reference(op64, res.eigenvectors)
    np.testing.assert_allclose(res.eigenvalues.numpy(), th, rtol=1e-5)


def test_unit_helpers_are_accurate_at_large_dim():
    g = torch.Generator().manual_seed(3)
    X = torch.randn(1_100_000, 3, generator=g)
    np.testing.assert_allclose(column_norms64(unit_columns(X)).numpy(), 1.0, atol=1e-6)
    assert abs(float(torch.linalg.vector_norm(unit(X[:, 0].contiguous()).double())) - 1.0) < 1e-6
    # quotient of a scaled vector is the quotient of the unit vector
    A = torch.linspace(0.5, 2.0, 1_100_000, dtype=torch.float32)
    th, res = rayleigh(3.0 * X, 3.0 * X * A[:, None])
    th1, res1 = rayleigh(unit_columns(X), unit_columns(X) * A[:, None])
    np.testing.assert_allclose(th, th1, rtol=1e-6)
    np.testing.assert_allclose(res, res1, rtol=1e-5)
