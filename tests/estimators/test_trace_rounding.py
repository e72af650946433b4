"""The trace split does not depend on rounding: the same operator computed in another order (as a
sum over ranks is) gives the same split and the same estimate to rounding."""

from __future__ import annotations

import torch

from curvlens import DenseOperator
from curvlens.estimators._common import orth
from curvlens.operators import DiagonalOperator
from curvlens.estimators import krylov_trace


def _low_rank(d: int, rank: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    U = torch.linalg.qr(torch.randn(d, rank, dtype=torch.float64, generator=g))[0]
    lam = torch.logspace(0, -3, rank, dtype=torch.float64)
    return (U * lam) @ U.T


def test_split_is_the_same_under_rounding_level_changes_of_the_operator():
    # rank 30 in D = 80 with 100 products (at most 40 Krylov vectors): the Krylov space becomes invariant, where the predicted
    # errors of further steps are pure rounding; those must not decide the split
    for seed in range(16):
        A = _low_rank(80, 30, seed)
        g = torch.Generator().manual_seed(100 + seed)
        E = torch.randn(80, 80, dtype=torch.float64, generator=g)
        B = A + 1e-15 * (E + E.T)  # another rounding of (nearly) the same matrix
        a = krylov_trace(DenseOperator(A), 100, generator=seed)
        b = krylov_trace(DenseOperator(B), 100, generator=seed)
        split = [r.info.status.split("split:")[-1] for r in (a, b)]
        assert split[0] == split[1], (seed, split)
        assert a.num_probes == b.num_probes, seed
        assert abs(a.estimate - b.estimate) <= 1e-9 * abs(a.estimate), (seed, a.estimate, b.estimate)


def test_tall_float32_blocks_keep_their_directions_and_deflate():
    # D = 1.1M float32: the old rank threshold 10 * D * eps exceeded 1 and dropped every direction,
    # so the trace never deflated on million-parameter models
    d = 1_100_000
    X = torch.randn(d, 4, generator=torch.Generator().manual_seed(0))
    assert orth(X).shape[1] == 4
    assert orth(torch.cat([X, X[:, :1] * 2.0], 1)).shape[1] == 4  # a repeated direction is still dropped
    lam = torch.zeros(d)
    lam[:10] = torch.logspace(3, 1, 10)
    lam[10:] = 1e-3 * torch.rand(d - 10, generator=torch.Generator().manual_seed(1))
    res = krylov_trace(DiagonalOperator(lam), 30, generator=0)
    assert "0 Krylov vectors" not in res.info.status, res.info.status
    assert abs(res.estimate - float(lam.double().sum())) <= 1e-3 * float(lam.double().sum())
