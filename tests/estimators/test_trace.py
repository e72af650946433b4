import math
import warnings

import numpy as np
import pytest
import torch

from curvlens import DenseOperator
from curvlens.errors import ConvergenceWarning
from curvlens.estimators import TraceResult, hutchinson_trace, hutchpp_trace, krylov_trace, xtrace
from curvlens.results import RESULT_KINDS
from tests.estimators._b_matrices import BLOCKS, MATRICES, block_traces, low_rank, op_of, psd_decaying

ESTIMATORS = {"hutchinson": hutchinson_trace, "hutchpp": hutchpp_trace, "krylov": krylov_trace, "xtrace": xtrace}


@pytest.mark.parametrize("method", ESTIMATORS)
@pytest.mark.parametrize("matrix", MATRICES)
@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_unbiased_over_seeds(method, matrix, probe):
    A = MATRICES[matrix]()
    op, truth = op_of(A), float(A.trace())
    res = [ESTIMATORS[method](op, 12, probe=probe, per_block=True, generator=s) for s in range(200)]
    est = np.array([r.estimate for r in res])
    spread = est.std(ddof=1) / math.sqrt(len(est))
    assert abs(est.mean() - truth) < 4 * spread + 1e-12
    blocks = torch.stack([r.block_estimates for r in res])
    bspread = blocks.std(0) / math.sqrt(len(res))
    assert ((blocks.mean(0) - block_traces(A)).abs() <= 4 * bspread + 1e-12).all()
    # the reported standard error matches the actual spread of the estimates (within 2x)
    stderr = np.sqrt(np.mean([r.stderr**2 for r in res]))
    assert 0.5 < stderr / est.std(ddof=1) < 2.0


@pytest.mark.parametrize("method", ESTIMATORS)
def test_block_estimates_add_up_and_are_named(method):
    A = MATRICES["indefinite"]()
    r = ESTIMATORS[method](op_of(A), 12, per_block=True, generator=0)
    assert r.block_names == ("layer0", "layer1", "layer2")
    assert r.block_estimates.dtype == torch.float64 and r.block_stderr.shape == (3,)
    assert abs(float(r.block_estimates.sum()) - r.estimate) < 1e-10
    assert set(r.block_dict()) == {"layer0", "layer1", "layer2"}
    plain = ESTIMATORS[method](op_of(A), 12, generator=0)
    assert plain.block_names == () and plain.block_estimates.numel() == 0
    assert plain.estimate == r.estimate  # per-block costs no products and changes nothing


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
@pytest.mark.parametrize("method, budget", [("hutchpp", 15), ("xtrace", 12), ("krylov", 16)])
def test_exact_on_low_rank(method, budget, probe):
    A = low_rank(4)
    r = ESTIMATORS[method](op_of(A), budget, probe=probe, per_block=True, generator=3)
    assert abs(r.estimate - float(A.trace())) < 1e-10
    assert (r.block_estimates - block_traces(A)).abs().max() < 1e-10
    assert r.stderr < 1e-10


def test_hutchinson_exact_on_diagonal_matrix():
    op = DenseOperator(torch.diag(torch.arange(1.0, 9.0, dtype=torch.float64)))
    r = hutchinson_trace(op, 5, generator=1)
    assert r.estimate == 36.0 and r.stderr == 0.0


def test_deflation_beats_hutchinson_on_decaying_spectrum():
    A = psd_decaying()
    op, truth = op_of(A), float(A.trace())

    def rmse(f):
        return math.sqrt(np.mean([(f(op, 12, generator=s).estimate - truth) ** 2 for s in range(60)]))

    h, hpp, xt, kr = rmse(hutchinson_trace), rmse(hutchpp_trace), rmse(xtrace), rmse(krylov_trace)
    assert xt < hpp < h and kr < 0.5 * h


@pytest.mark.parametrize("method", ESTIMATORS)
def test_reproducible_and_global_rng_untouched(method):
    op = op_of(MATRICES["indefinite"]())
    f = ESTIMATORS[method]
    state, np_state = torch.get_rng_state(), np.random.get_state()
    a = f(op, 10, per_block=True, generator=7)
    b = f(op, 10, per_block=True, generator=torch.Generator().manual_seed(7))
    c = f(op, 10, per_block=True, generator=8)
    assert a.estimate == b.estimate and a.stderr == b.stderr
    assert torch.equal(a.block_estimates, b.block_estimates)
    assert a.estimate != c.estimate
    assert a.info.seed == 7 and c.info.seed == 8
    assert torch.equal(state, torch.get_rng_state())
    assert np.array_equal(np_state[1], np.random.get_state()[1])
    d = f(op, 10, generator=None)
    assert isinstance(d.info.seed, int)
    assert f(op, 10, generator=d.info.seed).estimate == d.estimate  # replay from the recorded seed


@pytest.mark.parametrize("method", ESTIMATORS)
def test_result_metadata_and_callback(method):
    op = op_of(MATRICES["psd_decaying"]())
    calls = []
    r = ESTIMATORS[method](op, 12, generator=0, callback=lambda done, total: calls.append((done, total)))
    assert isinstance(r, TraceResult) and RESULT_KINDS["trace_estimate"][0] is TraceResult
    assert r.method == method and r.probe == "rademacher"
    assert r.num_matvecs == r.info.matvecs == op.num_matvecs == 12
    assert r.info.converged and "fixed budget" in r.info.status
    assert r.info.dtype == "torch.float64"
    assert calls and calls[-1] == (12, 12)
    assert all(a[0] <= b[0] for a, b in zip(calls, calls[1:]))


def test_float32_operator():
    A = MATRICES["psd_decaying"]().float()
    for f in ESTIMATORS.values():
        r = f(DenseOperator(A), 12, generator=0)
        assert math.isfinite(r.estimate) and abs(r.estimate - float(A.trace())) < 1.0


@pytest.mark.parametrize("method", ESTIMATORS)
def test_adaptive_stops_near_target(method):
    op = op_of(MATRICES["diag_dominant"]())
    target = 0.002
    r = ESTIMATORS[method](op, 8, target_rstderr=target, max_matvecs=5000, generator=0)
    assert r.info.converged and r.rstderr <= target
    assert r.num_matvecs > 8
    assert "reached relative standard error" in r.info.status
    if method != "xtrace":  # residual stderr falls like 1/sqrt(n): no large overshoot
        assert r.rstderr > target / 3


@pytest.mark.parametrize("method", ESTIMATORS)
def test_adaptive_not_reached_is_a_result_with_warning(method):
    op = op_of(MATRICES["indefinite"]())
    with pytest.warns(ConvergenceWarning, match=r"above target_rstderr=1e-09 after max_matvecs=40; increase max_matvecs"):
        r = ESTIMATORS[method](op, 8, target_rstderr=1e-9, max_matvecs=40, generator=0)
    assert not r.info.converged and r.rstderr > 1e-9
    assert 36 <= r.num_matvecs <= 40 and "increase max_matvecs" in r.info.status


def test_fixed_budget_emits_no_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        hutchinson_trace(op_of(MATRICES["indefinite"]()), 4, generator=0)


BAD = [
    (dict(op=np.eye(3)), TypeError, r"op: expected a curvlens CurvatureOperator, got ndarray"),
    (dict(num_matvecs=1), ValueError, r"num_matvecs: expected an int >= [24], got 1"),
    (dict(num_matvecs=10.0), ValueError, r"num_matvecs: expected an int >= [24], got 10.0"),
    (dict(num_matvecs=True), ValueError, r"num_matvecs: expected an int >= [24], got True"),
    (dict(probe="sphere"), ValueError, r"probe: expected one of \('rademacher', 'gaussian'\), got 'sphere'"),
    (dict(target_rstderr=-0.1), ValueError, r"target_rstderr: expected a positive float .*got -0.1"),
    (dict(target_rstderr=0.1, max_matvecs=5), ValueError, r"max_matvecs: expected an int >= 10, got 5"),
    (dict(max_matvecs=50), ValueError, r"max_matvecs: only used with target_rstderr"),
    (dict(chunk_size=0), ValueError, r"chunk_size: expected an int >= 1, got 0"),
    (dict(generator="seed"), TypeError, r"generator: expected a torch.Generator, an int seed or None, got str"),
]


@pytest.mark.parametrize("method", ESTIMATORS)
@pytest.mark.parametrize("kwargs, exc, match", BAD)
def test_bad_inputs(method, kwargs, exc, match):
    kwargs = dict(kwargs)
    op = kwargs.pop("op", op_of(MATRICES["indefinite"]()))
    kwargs.setdefault("num_matvecs", 10)
    with pytest.raises(exc, match=match):
        ESTIMATORS[method](op, **kwargs)


@pytest.mark.parametrize("method", ["hutchpp", "xtrace", "krylov"])
def test_deflated_methods_need_four_products(method):
    with pytest.raises(ValueError, match=rf"num_matvecs: expected an int >= 4, got 3; {method}"):
        ESTIMATORS[method](op_of(MATRICES["indefinite"]()), 3)


def test_blocks_fixture_covers_vector():
    assert BLOCKS[0].start == 0 and BLOCKS[-1].stop == 24


@pytest.mark.parametrize("matrix", MATRICES)
def test_xtrace_matches_leave_one_out_definition(matrix):
    """XTrace's t_i = tr(Q_i^T A Q_i) + w_i^T (I - P_i) A (I - P_i) w_i, with Q_i = orth(A W_{-i})."""
    from curvlens.estimators._probes import probe_vectors

    A = MATRICES[matrix]()
    k = 6
    W = probe_vectors(A.shape[0], k, generator=torch.Generator().manual_seed(11))
    Y = A @ W
    t = []
    for i in range(k):
        Qi, _ = torch.linalg.qr(torch.cat([Y[:, :i], Y[:, i + 1 :]], 1))
        u = W[:, i] - Qi @ (Qi.T @ W[:, i])
        t.append(float(torch.trace(Qi.T @ A @ Qi) + u @ A @ u))
    t = torch.tensor(t, dtype=torch.float64)
    r = xtrace(op_of(A), 2 * k, generator=11)
    assert abs(r.estimate - float(t.mean())) < 1e-11
    assert abs(r.stderr - float(t.std() / math.sqrt(k))) < 1e-11
