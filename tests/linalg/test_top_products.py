"""top_eigenpairs defaults: separated top eigenvalues to rtol 1e-3 within k + 15 products,
certified by true residuals from the stored basis products."""

import numpy as np
import pytest
import torch

import curvlens.linalg._filtered as F
from curvlens.linalg import top_eigenpairs
from curvlens.linalg.eigen import default_block_size
from tests.linalg._spectra import hessian_like_spectrum, recomputed_residuals, with_spectrum


def _separated(D, k, seed):
    rng = np.random.default_rng(seed)
    top = 10.0 * 0.8 ** np.arange(k + 3)  # consecutive top eigenvalues 20% apart
    return np.sort(np.concatenate([top, rng.uniform(-0.2, 1.0, D - top.size)]))


class _Counting:
    """Counts the vectors actually multiplied (independently of the operator's own counter)."""

    def __init__(self, op):
        self.op, self.dim, self.dtype, self.device, self.products = op, op.dim, op.dtype, op.device, 0

    @property
    def num_matvecs(self):
        return self.products

    def matvec(self, v):
        self.products += 1
        return self.op.matvec(v)

    def matmat(self, V):
        self.products += V.shape[1]
        return self.op.matmat(V)


@pytest.mark.parametrize("k", [1, 3, 5, 10])
@pytest.mark.parametrize("spectrum", ["separated", "hessian_like"])
def test_top_k_within_k_plus_15_products(k, spectrum):
    for seed in range(3):
        ev = _separated(400, k, seed) if spectrum == "separated" else hessian_like_spectrum(400, seed=seed)
        dense = with_spectrum(ev, seed=seed)
        op = _Counting(dense)
        res = top_eigenpairs(op, k, rtol=1e-3, generator=seed)
        exact = np.sort(ev)[::-1][:k]
        assert res.all_converged
        assert np.all(np.abs(res.eigenvalues.numpy() - exact) <= 1e-3 * np.abs(exact)), (res.eigenvalues, exact)
        assert op.products == res.info.matvecs <= k + 15, (k, spectrum, seed, op.products)
        # the certificates from stored products are the true residuals of the returned vectors
        true = recomputed_residuals(dense, res)
        np.testing.assert_allclose(res.residuals.numpy(), true, rtol=1e-6, atol=1e-12)


def test_without_room_for_stored_products_certificates_cost_k_products(monkeypatch):
    ev = _separated(300, 5, 0)
    a = top_eigenpairs(with_spectrum(ev), 5, generator=1)
    monkeypatch.setattr(F, "PRODUCTS_MEMORY_FRACTION", 0.0)
    b = top_eigenpairs(with_spectrum(ev), 5, generator=1)
    assert b.info.matvecs == a.info.matvecs + 5
    torch.testing.assert_close(a.eigenvalues, b.eigenvalues, rtol=1e-9, atol=1e-12)


def test_block_size_default_from_k():
    assert [default_block_size(k) for k in (1, 5, 10, 11, 40)] == [1, 1, 1, 2, 2]
    ev = _separated(200, 12, 0)
    res = top_eigenpairs(with_spectrum(ev), 12, generator=0)
    assert res.all_converged and res.info.matvecs % 2 == 0  # block of 2: products come in pairs
