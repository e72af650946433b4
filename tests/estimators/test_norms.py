import math

import numpy as np
import pytest
import torch

from curvlens.estimators import NormResult, frobenius_norm
from tests.estimators._b_matrices import MATRICES, low_rank, op_of, psd_decaying


@pytest.mark.parametrize("method", ["hutchinson", "hutchpp"])
@pytest.mark.parametrize("matrix", MATRICES)
def test_trace_sq_unbiased(method, matrix):
    A = MATRICES[matrix]()
    truth = float((A * A).sum())  # ||A||_F^2 = tr(A^2)
    res = [frobenius_norm(op_of(A), 12, method=method, generator=s) for s in range(200)]
    est = np.array([r.trace_sq for r in res])
    assert abs(est.mean() - truth) < 4 * est.std(ddof=1) / math.sqrt(len(est)) + 1e-12
    stderr = np.sqrt(np.mean([r.trace_sq_stderr**2 for r in res]))
    assert 0.5 < stderr / est.std(ddof=1) < 2.0


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_hutchpp_exact_on_low_rank(probe):
    A = low_rank(4)
    r = frobenius_norm(op_of(A), 14, probe=probe, generator=1)
    assert abs(r.frobenius - float(torch.linalg.matrix_norm(A))) < 1e-10
    assert abs(r.trace_sq - float(torch.linalg.eigvalsh(A).pow(2).sum())) < 1e-10


def test_hutchpp_beats_hutchinson_on_decaying_spectrum():
    A = psd_decaying()
    truth = float(torch.linalg.matrix_norm(A))

    def rmse(method):
        return math.sqrt(np.mean([(frobenius_norm(op_of(A), 12, method=method, generator=s).frobenius - truth) ** 2
                                  for s in range(40)]))

    assert rmse("hutchpp") < 0.5 * rmse("hutchinson")


def test_metadata_and_reproducibility():
    op = op_of(MATRICES["indefinite"]())
    a = frobenius_norm(op, 12, generator=2)
    b = frobenius_norm(op, 12, generator=2)
    assert a == b or (a.trace_sq == b.trace_sq and a.frobenius == b.frobenius)
    assert isinstance(a, NormResult) and a.method == "hutchpp" and a.num_matvecs == a.info.matvecs == 12
    assert a.frobenius == pytest.approx(math.sqrt(a.trace_sq))
    assert a.frobenius_stderr == pytest.approx(a.trace_sq_stderr / (2 * a.frobenius))
    assert a.info.seed == 2


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(method="power"), r"method: expected one of \('hutchpp', 'hutchinson'\), got 'power'"),
        (dict(num_matvecs=3), r"num_matvecs: expected an int >= 4, got 3"),
        (dict(num_matvecs=1, method="hutchinson"), r"num_matvecs: expected an int >= 2, got 1"),
        (dict(probe="normal"), r"probe: expected one of"),
    ],
)
def test_bad_inputs(kwargs, match):
    kwargs.setdefault("num_matvecs", 12)
    with pytest.raises(ValueError, match=match):
        frobenius_norm(op_of(MATRICES["indefinite"]()), **kwargs)
