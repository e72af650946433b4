"""The deflated estimators reduce residual probes group by group (no (D, k) float64 array):
their results equal the all-at-once computation (one (D, k) probe block, per-row samples of
``deflated_row_samples``, then row and block sums) to 1e-12 in float64."""

import math

import pytest
import torch

import curvlens.estimators.hutchpp as hutchpp_mod
from curvlens import HessianOperator
from curvlens.estimators import hutchpp_trace, krylov_trace, probe_vectors
from curvlens.estimators._common import block_sums, mean_stderr
from curvlens.estimators._deflation import deflated_row_samples, leave_one_out_mix
from curvlens.estimators.hutchpp import hutchpp_sketch
from curvlens.estimators.krylov_trace import MIX_MIN_SAMPLES, KrylovBuilder, pilot_size
from tests.operators._models import data, mlp


def _operator():
    return HessianOperator(mlp(), torch.nn.CrossEntropyLoss(), data())


def _all_at_once(op, Q, Z, k, probe, gen):
    """The previous computation: every residual probe at once, (D, k) float64 rows kept."""
    G = probe_vectors(op.dim, k, kind=probe, dtype=op.dtype, device=op.device, generator=gen)
    U = G - Q @ (Q.T @ G)
    rows = deflated_row_samples(Q, Z, G, U, op.matmat(U))
    est, se = mean_stderr(rows.sum(0))
    b_est, b_se = mean_stderr(block_sums(rows, op.blocks), dim=1)
    return float(est), float(se), b_est, b_se, rows.shape[1]


def _close(a, b):
    return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-12 * max(1.0, abs(b)))


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
@pytest.mark.parametrize("m,slab", [(40, 1 << 16), (23, 7)])
def test_krylov_trace_equals_all_at_once(monkeypatch, probe, m, slab):
    """The same split rebuilt from the same generator: pilot probes, the Krylov basis started
    from the first of them (its size read from the status), every other probe at once, the
    leave-one-out mix of Hutchinson and deflated samples."""
    monkeypatch.setattr(hutchpp_mod, "ROW_SLAB", slab)  # small slabs: several per block, uneven last one
    op = _operator()
    res = krylov_trace(op, m, probe=probe, per_block=True, generator=3)
    r = int(res.info.status.split("split: ")[1].split()[0])
    assert "deflation weight" in res.info.status  # a network Hessian: deflation pays
    gen = torch.Generator().manual_seed(3)
    k0 = pilot_size(m, 1)
    W = probe_vectors(op.dim, k0, kind=probe, dtype=op.dtype, device=op.device, generator=gen)
    Y = op.matmat(W)
    kb = KrylovBuilder(op, r, 1, probe=probe, chunk=64, gen=gen)
    kb.start(W[:, :1], Y[:, :1])
    while kb.step():
        pass
    Q, Z = kb.Q, kb.Z
    G = torch.cat([W[:, 1:], probe_vectors(op.dim, m - k0 - (r - 1), kind=probe, dtype=op.dtype,
                                           device=op.device, generator=gen)], 1)
    U = G - Q @ (Q.T @ G)
    x_rows = deflated_row_samples(Q, Z, G, U, op.matmat(U))
    y_rows = (G * op.matmat(G)).double()
    c = leave_one_out_mix(y_rows.sum(0), x_rows.sum(0), MIX_MIN_SAMPLES)
    rows = y_rows + c * (x_rows - y_rows)
    est, se = mean_stderr(rows.sum(0))
    b_est, b_se = mean_stderr(block_sums(rows, op.blocks), dim=1)
    assert rows.shape[1] > hutchpp_mod.PROBE_GROUP  # several groups
    assert res.num_probes == rows.shape[1] == m - r and res.num_matvecs == m
    assert _close(res.estimate, float(est)) and _close(res.stderr, float(se))
    assert torch.allclose(res.block_estimates, b_est, rtol=1e-12, atol=1e-12)
    assert torch.allclose(res.block_stderr, b_se, rtol=1e-12, atol=1e-12)
    assert math.isclose(float(res.block_estimates.sum()), res.estimate, rel_tol=1e-12)


def test_hutchpp_trace_equals_all_at_once():
    op = _operator()
    res = hutchpp_trace(op, 60, per_block=True, generator=5)
    gen = torch.Generator().manual_seed(5)
    start = op.num_matvecs
    Q, Z = hutchpp_sketch(op, 20, probe="rademacher", chunk=64, gen=gen)
    k = 60 - (op.num_matvecs - start)
    est, se, b_est, b_se, _ = _all_at_once(op, Q, Z, k, "rademacher", gen)
    assert res.num_probes == k
    assert _close(res.estimate, est) and _close(res.stderr, se)
    assert torch.allclose(res.block_estimates, b_est, rtol=1e-12, atol=1e-12)


def test_compact_probes_equal_probe_vectors(monkeypatch):
    monkeypatch.setattr(hutchpp_mod, "ROW_SLAB", 5)
    for probe in ("rademacher", "gaussian"):
        cols = hutchpp_mod._residual_probes(23, 11, probe=probe, dtype=torch.float64, device="cpu",
                                            gen=torch.Generator().manual_seed(2))
        ref = probe_vectors(23, 11, kind=probe, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
        assert torch.equal(torch.cat([cols(0, 4), cols(4, 11)], 1), ref)
