import math

import numpy as np
import pytest
import torch

from curvlens import DenseOperator
from curvlens.estimators import DiagonalResult, exact_diagonal, hutchinson_diagonal, xdiag
from curvlens.results import RESULT_KINDS
from tests.estimators._b_matrices import MATRICES, low_rank, op_of, psd_decaying

STOCHASTIC = {"hutchinson": hutchinson_diagonal, "xdiag": xdiag}


@pytest.mark.parametrize("matrix", MATRICES)
def test_exact_diagonal_is_exact(matrix):
    A = MATRICES[matrix]()
    op = op_of(A)
    calls = []
    r = exact_diagonal(op, chunk_size=5, callback=lambda d, t: calls.append((d, t)))
    assert torch.equal(r.estimate, torch.diagonal(A))
    assert r.stderr is None and r.method == "exact" and r.num_probes == 0
    assert r.num_matvecs == op.num_matvecs == A.shape[0] and r.info.seed is None
    assert calls[-1] == (24, 24) and len(calls) == 5


def test_exact_diagonal_of_a_block():
    A = MATRICES["indefinite"]()
    r = exact_diagonal(op_of(A).block("layer1"))
    assert torch.allclose(r.estimate, torch.diagonal(A)[7:16], rtol=0, atol=1e-14)


@pytest.mark.parametrize("method", STOCHASTIC)
@pytest.mark.parametrize("matrix", MATRICES)
def test_unbiased_over_seeds(method, matrix):
    A = MATRICES[matrix]()
    op = op_of(A)
    ests = torch.stack([STOCHASTIC[method](op, 12, generator=s).estimate for s in range(200)])
    spread = ests.std(0) / math.sqrt(ests.shape[0])
    assert ((ests.mean(0) - torch.diagonal(A)).abs() <= 4.5 * spread + 1e-12).all()


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_xdiag_exact_on_low_rank(probe):
    A = low_rank(4)
    r = xdiag(op_of(A), 12, probe=probe, generator=0)
    assert (r.estimate - torch.diagonal(A)).abs().max() < 1e-10
    assert r.stderr.max() < 1e-10


def test_hutchinson_diagonal_exact_on_diagonal_matrix():
    d = torch.linspace(-2.0, 3.0, 10, dtype=torch.float64)
    r = hutchinson_diagonal(DenseOperator(torch.diag(d)), 3, generator=0)
    assert (r.estimate - d).abs().max() < 1e-15 and r.stderr.abs().max() < 1e-15


def test_xdiag_beats_hutchinson_on_decaying_spectrum():
    A = psd_decaying()
    op, truth = op_of(A), torch.diagonal(A)

    def err(f):
        return float(np.mean([torch.linalg.vector_norm(f(op, 12, generator=s).estimate - truth) for s in range(40)]))

    assert err(xdiag) < 0.5 * err(hutchinson_diagonal)


@pytest.mark.parametrize("method", STOCHASTIC)
def test_metadata_reproducibility_and_stderr(method):
    op = op_of(MATRICES["indefinite"]())
    state = torch.get_rng_state()
    a = STOCHASTIC[method](op, 12, generator=4)
    b = STOCHASTIC[method](op, 12, generator=torch.Generator().manual_seed(4))
    c = STOCHASTIC[method](op, 12, generator=5)
    assert torch.equal(state, torch.get_rng_state())
    assert torch.equal(a.estimate, b.estimate) and not torch.equal(a.estimate, c.estimate)
    assert isinstance(a, DiagonalResult) and RESULT_KINDS["diagonal_estimate"][0] is DiagonalResult
    assert a.estimate.shape == a.stderr.shape == (24,) and a.estimate.dtype == torch.float64
    assert a.info.seed == 4 and a.num_matvecs == a.info.matvecs == 12 and a.method == method
    assert a.num_probes == (12 if method == "hutchinson" else 6)


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda op: exact_diagonal("A"), TypeError, r"op: expected a curvlens CurvatureOperator, got str"),
        (lambda op: exact_diagonal(op, chunk_size=0), ValueError, r"chunk_size: expected an int >= 1, got 0"),
        (lambda op: hutchinson_diagonal(op, 1), ValueError, r"num_matvecs: expected an int >= 2, got 1"),
        (lambda op: xdiag(op, 3), ValueError, r"num_matvecs: expected an int >= 4, got 3; xdiag needs"),
        (lambda op: xdiag(op, 8, probe="x"), ValueError, r"probe: expected one of"),
        (lambda op: hutchinson_diagonal(op, 8, generator=1.5), TypeError, r"generator: expected a torch.Generator"),
    ],
)
def test_bad_inputs(call, exc, match):
    with pytest.raises(exc, match=match):
        call(op_of(MATRICES["indefinite"]()))
