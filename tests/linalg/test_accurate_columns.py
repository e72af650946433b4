"""Column-at-a-time float64 helpers against the whole-block float64 formulas."""

import numpy as np
import torch

from curvlens.linalg._accurate import column_sumsq64, rayleigh, unit_columns


def _block(dtype, seed=0, D=5000, k=3):
    g = torch.Generator().manual_seed(seed)
    Y = torch.randn(D, k, generator=g, dtype=torch.float64).to(dtype)
    A = torch.randn(D, generator=g, dtype=torch.float64).to(dtype)
    return Y, A[:, None] * Y + 0.01 * torch.randn(D, k, generator=g, dtype=torch.float64).to(dtype)


def test_rayleigh_matches_block_formula():
    for dtype in (torch.float32, torch.float64):
        Y, AY = _block(dtype)
        Y64, AY64 = Y.double(), AY.double()
        nn = (Y64 * Y64).sum(0)
        theta = (Y64 * AY64).sum(0) / nn
        res = torch.linalg.vector_norm(AY64 - Y64 * theta, dim=0) / nn.sqrt()
        th, rs = rayleigh(Y, AY)
        np.testing.assert_allclose(th, theta.numpy(), rtol=1e-13)
        np.testing.assert_allclose(rs, res.numpy(), rtol=1e-12)


def test_rayleigh_leaves_float64_products_untouched():
    Y, AY = _block(torch.float64)
    before = AY.clone()
    rayleigh(Y, AY)
    assert torch.equal(AY, before)


def test_unit_columns_and_sumsq_match_block_formulas():
    for dtype in (torch.float32, torch.float64):
        Y, _ = _block(dtype, seed=1)
        ref = (Y.double() / torch.linalg.vector_norm(Y, dim=0, dtype=torch.float64)).to(dtype)
        out = unit_columns(Y)
        assert out.dtype == dtype and out.is_contiguous()
        torch.testing.assert_close(out, ref, rtol=2 * torch.finfo(dtype).eps, atol=0.0)
        np.testing.assert_allclose(column_sumsq64(Y), Y.double().pow(2).sum(0).numpy(), rtol=1e-13)
    assert unit_columns(torch.zeros(4, 0)).shape == (4, 0)
    assert column_sumsq64(torch.zeros(4, 0)).shape == (0,)
