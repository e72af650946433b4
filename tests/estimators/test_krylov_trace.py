"""Krylov-deflated trace estimation: the basis, exactness, accuracy against the other estimators,
and a network Hessian against ``torch.func.hessian``. The shared behaviour (unbiasedness, blocks,
seeds, adaptive mode, bad input) is covered with the other estimators in ``test_trace.py``."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from curvlens import DenseOperator, HessianOperator
from curvlens.estimators import hutchinson_trace, hutchpp_trace, krylov_trace, xtrace
from curvlens.estimators.krylov_trace import krylov_basis
from tests.estimators._b_matrices import MATRICES, with_spectrum
from tests.operators._models import data, dense_hessian, mlp


@pytest.mark.parametrize("block_size", [1, 2, 3])
def test_basis_is_orthonormal_and_products_are_exact(block_size):
    A = MATRICES["indefinite"]()
    op = DenseOperator(A)
    Q, Z = krylov_basis(op, 10, block_size, probe="rademacher", chunk=64, gen=torch.Generator().manual_seed(0))
    assert Q.shape == Z.shape == (24, 10)
    assert op.num_matvecs == 10  # one product per basis vector
    assert torch.allclose(Q.T @ Q, torch.eye(10, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(Z, A @ Q, atol=1e-12)
    # a Krylov space: the first block's images lie in the span of the first two blocks
    b = block_size
    if 2 * b <= 10:
        P2 = Q[:, : 2 * b] @ Q[:, : 2 * b].T
        assert torch.allclose(P2 @ Z[:, :b], Z[:, :b], atol=1e-10)


def test_invariant_space_is_topped_up_with_fresh_directions():
    # two distinct eigenvalues: the Krylov space of one start vector is invariant after 2 steps
    A = torch.diag(torch.tensor([3.0] * 12 + [1.0] * 12, dtype=torch.float64))
    op = DenseOperator(A)
    Q, Z = krylov_basis(op, 9, 1, probe="rademacher", chunk=64, gen=torch.Generator().manual_seed(1))
    assert Q.shape[1] == 9 and op.num_matvecs == 9
    assert torch.allclose(Q.T @ Q, torch.eye(9, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(Z, A @ Q, atol=1e-12)


def test_basis_spanning_the_whole_space_is_exact_and_spends_no_product_on_zero_vectors():
    A = with_spectrum([4.0, -1.0, 0.5])
    op = DenseOperator(A)
    r = krylov_trace(op, 20, krylov_fraction=0.5, generator=0)
    assert abs(r.estimate - float(A.trace())) < 1e-12 and r.stderr == 0.0
    assert r.num_matvecs == op.num_matvecs == 3


def test_exact_when_distinct_eigenvalues_fit_the_krylov_part():
    # 1 + 3 distinct eigenvalues (0 has multiplicity 60): a single start vector finds them all
    A = with_spectrum([7.0, 2.0, -0.5] + [0.0] * 61)
    r = krylov_trace(DenseOperator(A), 12, block_size=1, generator=2)
    assert abs(r.estimate - float(A.trace())) < 1e-10 and r.stderr < 1e-10


def _hessian_like(dim=300, seed=0):
    """Outliers over a wide bulk with a few small negatives: the shape of a trained net's Hessian."""
    g = torch.Generator().manual_seed(seed)
    bulk = 0.05 * torch.rand(dim - 8, generator=g, dtype=torch.float64) ** 3
    neg = -0.004 * torch.rand(4, generator=g, dtype=torch.float64)
    eigs = torch.cat([torch.tensor([2.0, 1.1, 0.6, 0.3], dtype=torch.float64), neg, bulk])
    return with_spectrum(eigs.tolist(), seed=seed)


def test_lower_error_than_hutchpp_xtrace_and_hutchinson_on_a_hessian_like_spectrum():
    A = _hessian_like()
    op, truth = DenseOperator(A), float(A.trace())

    def rmse(f):  # 100 seeds: the RMSEs carry about 7% sampling error (40 were too few for the 0.85 margin)
        return math.sqrt(np.mean([(f(op, 40, generator=s).estimate - truth) ** 2 for s in range(100)]))

    kr, xt, hpp, h = rmse(krylov_trace), rmse(xtrace), rmse(hutchpp_trace), rmse(hutchinson_trace)
    assert kr < 0.85 * min(xt, hpp) and kr < 0.2 * h


def test_stderr_is_calibrated():
    A = _hessian_like(seed=1)
    op, truth = DenseOperator(A), float(A.trace())
    res = [krylov_trace(op, 40, generator=s) for s in range(150)]
    z = np.array([(r.estimate - truth) / r.stderr for r in res])
    assert abs(z.mean()) < 4 / math.sqrt(len(z))  # unbiased
    assert 0.75 < z.std() < 1.3  # the residual samples are i.i.d. given Q: honest error bars


def test_bad_krylov_arguments_name_the_argument():
    op = DenseOperator(MATRICES["indefinite"]())
    with pytest.raises(ValueError, match=r"krylov_fraction: expected a float in \(0, 1\).*got 1.0"):
        krylov_trace(op, 10, krylov_fraction=1.0)
    with pytest.raises(ValueError, match=r"krylov_fraction: .*got True"):
        krylov_trace(op, 10, krylov_fraction=True)
    with pytest.raises(ValueError, match=r"block_size: expected an int >= 1, got 0"):
        krylov_trace(op, 10, block_size=0)


def test_network_hessian_trace_and_blocks_against_torch_func_hessian():
    model, (x, y) = mlp(), data(12)
    crit = nn.CrossEntropyLoss()
    H = dense_hessian(model, lambda call: crit(call(x), y))
    op = HessianOperator(model, crit, (x, y))
    res = [krylov_trace(op, 20, per_block=True, generator=s) for s in range(60)]
    est = np.array([r.estimate for r in res])
    assert abs(est.mean() - float(H.trace())) < 4 * est.std(ddof=1) / math.sqrt(len(est)) + 1e-12
    exact_blocks = torch.stack([H[b.slice, b.slice].diagonal().sum() for b in op.blocks])
    blocks = torch.stack([r.block_estimates for r in res])
    assert ((blocks.mean(0) - exact_blocks).abs() <= 4 * blocks.std(0) / math.sqrt(len(res)) + 1e-12).all()
    assert all(abs(float(r.block_estimates.sum()) - r.estimate) < 1e-10 for r in res)
