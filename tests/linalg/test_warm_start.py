"""Warm starts (``v0``) of top_eigenpairs / bottom_eigenpairs on matrices with known spectra."""

from __future__ import annotations

import inspect
import warnings

import pytest
import torch

from curvlens.linalg import bottom_eigenpairs, lanczos, top_eigenpairs
from curvlens.operators import DenseOperator

D = 200


def _known(seed=0):
    """``A = Q diag(ev) Q^T``: separated top outliers 10, 9, 8.5, 8, 7.9 and a bulk in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(D, D, generator=g, dtype=torch.float64))
    ev = torch.cat([torch.tensor([10.0, 9.0, 8.5, 8.0, 7.9], dtype=torch.float64),
                    torch.linspace(-1.0, 1.0, D - 5, dtype=torch.float64)])
    A = (Q * ev) @ Q.T
    return 0.5 * (A + A.T), ev, Q


def _check_certified(A, res):
    """The result's residuals are true residuals of its vectors, within their tolerances."""
    V, lam = res.eigenvectors, res.eigenvalues
    true = torch.linalg.vector_norm(A @ V - V * lam, dim=0)
    assert torch.allclose(true, res.residuals, rtol=1e-6, atol=1e-12)
    assert bool(res.converged.all()) and bool((res.residuals <= res.tolerances).all())
    assert torch.allclose(V.T @ V, torch.eye(res.k, dtype=V.dtype), atol=1e-10)


@pytest.mark.parametrize("k", [1, 2, 4])
def test_exact_top_eigenvectors_certify_in_few_products(k):
    A, ev, Q = _known()
    op = DenseOperator(A)
    order = torch.argsort(ev, descending=True)
    cold = top_eigenpairs(op, k, generator=1)
    warm = top_eigenpairs(op, k, generator=1, v0=Q[:, order[:k]])
    # one block product per start column, plus the k certificate products
    assert warm.info.matvecs <= 2 * k
    assert cold.info.matvecs >= 2.5 * warm.info.matvecs, (cold.info.matvecs, warm.info.matvecs)
    _check_certified(A, cold)
    _check_certified(A, warm)
    assert bool(((warm.eigenvalues - cold.eigenvalues).abs() <= warm.residuals + cold.residuals).all())
    assert bool(((warm.eigenvalues - ev[order[:k]]).abs() <= warm.residuals + 1e-12).all())
    assert "warm start" in warm.info.status and "warm start" not in cold.info.status


def test_exact_bottom_eigenvectors_plain_and_filtered():
    A, ev, Q = _known(1)
    op = DenseOperator(A)
    lo = Q[:, torch.argsort(ev)[:2]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cold = bottom_eigenpairs(op, 2, generator=0, max_matvecs=400)
    for kw in ({}, {"filter": "chebyshev"}):
        warm = bottom_eigenpairs(op, 2, generator=0, v0=lo, **kw)
        assert warm.info.matvecs <= 4 and warm.info.matvecs * 10 <= cold.info.matvecs
        _check_certified(A, warm)
        assert bool(((warm.eigenvalues - torch.sort(ev).values[:2]).abs() <= warm.residuals + 1e-12).all())


def test_previous_eigenvectors_of_a_nearby_operator():
    A, ev, Q = _known(2)
    g = torch.Generator().manual_seed(5)
    E = torch.randn(D, D, generator=g, dtype=torch.float64)
    A2 = A + 1e-3 * (E + E.T) / 2  # the operator one training step later
    prev = top_eigenpairs(DenseOperator(A), 4, generator=3)
    op2 = DenseOperator(A2)
    cold = top_eigenpairs(op2, 4, generator=3)
    warm = top_eigenpairs(op2, 4, generator=3, v0=prev.eigenvectors)  # (D, 4) folded into block 2
    assert warm.info.matvecs <= 0.7 * cold.info.matvecs, (warm.info.matvecs, cold.info.matvecs)
    _check_certified(A2, warm)
    exact = torch.linalg.eigvalsh(A2).flip(0)[:4]
    assert bool(((warm.eigenvalues - exact).abs() <= warm.residuals + 1e-12).all())
    assert bool(((warm.eigenvalues - cold.eigenvalues).abs() <= warm.residuals + cold.residuals).all())


def test_completion_is_seeded_and_reproducible():
    A, ev, Q = _known(3)
    op = DenseOperator(A)
    v = Q[:, 0] + 0.1 * Q[:, 7]  # a flat vector: block 2 for k=2, completed by one random column
    a = top_eigenpairs(op, 2, generator=11, v0=v)
    b = top_eigenpairs(op, 2, generator=torch.Generator().manual_seed(11), v0=v)
    assert torch.equal(a.eigenvalues, b.eigenvalues) and torch.equal(a.eigenvectors, b.eigenvectors)
    assert a.info.matvecs == b.info.matvecs and a.info.seed == 11
    _check_certified(A, a)
    c = top_eigenpairs(op, 2, generator=12, v0=v)  # another completion, same certified answer
    assert bool(((a.eigenvalues - c.eigenvalues).abs() <= a.residuals + c.residuals).all())
    # dependent columns: the duplicate vanishes in the orthonormalization and is refilled at random
    dup = top_eigenpairs(op, 2, generator=11, v0=torch.stack([v, 2 * v], 1))
    _check_certified(A, dup)
    assert v.norm() > 0 and torch.equal(v, Q[:, 0] + 0.1 * Q[:, 7])  # the caller's v0 is not modified


def test_one_spelling_across_solvers():
    for fn in (top_eigenpairs, bottom_eigenpairs, lanczos):
        p = inspect.signature(fn).parameters["v0"]
        assert p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is None


_OP = DenseOperator(torch.diag(torch.arange(1.0, 11.0, dtype=torch.float64)))


@pytest.mark.parametrize("v0, exc, msg", [
    ([1.0] * 10, TypeError, r"v0: expected a torch.Tensor of shape \(10,\) or \(10, j\), or None, got list"),
    (torch.ones(11, dtype=torch.float64), ValueError, r"v0: expected shape \(10,\) or \(10, j\) with 1 <= j <= 10, got \(11,\)"),
    (torch.ones(10, 0, dtype=torch.float64), ValueError, r"v0: expected shape .* got \(10, 0\)"),
    (torch.ones(10, 2, 2, dtype=torch.float64), ValueError, r"v0: expected shape .* got \(10, 2, 2\)"),
    (torch.ones(10, dtype=torch.int64), TypeError, r"v0: expected a real floating-point tensor, got dtype torch.int64"),
    (torch.ones(10, dtype=torch.complex128), TypeError, r"v0: expected a real floating-point tensor"),
    (torch.ones(10, dtype=torch.float32), ValueError,
     r"v0: expected the operator's dtype torch.float64, got torch.float32; pass v0.to\(torch.float64\)"),
    (torch.ones(10, dtype=torch.float64, device="meta"), ValueError, r"v0: expected the operator's device cpu, got meta"),
    (torch.tensor([1.0] * 9 + [float("nan")], dtype=torch.float64), ValueError, r"v0: expected finite values"),
    (torch.stack([torch.ones(10), torch.zeros(10)], 1).double(), ValueError,
     r"v0: expected non-zero columns, got a zero column 1"),
])
@pytest.mark.parametrize("solver", [top_eigenpairs, bottom_eigenpairs])
def test_bad_v0(solver, v0, exc, msg):
    with pytest.raises(exc, match=msg):
        solver(_OP, 1, v0=v0, generator=0)
