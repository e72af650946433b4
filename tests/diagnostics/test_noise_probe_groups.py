"""The noise study's trace quadratic forms go through the operator a few probes at a time: they
equal the all-at-once ``(Z * A Z).sum(0)`` to 1e-12 (float64), and the control variate keeps only
``z_i^T A z_i`` of the full-data operator."""

import torch

import curvlens.diagnostics.noise as noise_mod
from curvlens import HessianOperator
from curvlens.estimators import probe_vectors
from tests.operators._models import data, mlp


def test_grouped_quadratic_forms_equal_all_at_once():
    op = HessianOperator(mlp(), torch.nn.CrossEntropyLoss(), data())
    Z = probe_vectors(op.dim, 2 * noise_mod.PROBE_GROUP + 3, kind="rademacher", dtype=op.dtype,
                      generator=torch.Generator().manual_seed(1))
    ref = (Z * op.matmat(Z)).sum(0)
    start = op.num_matvecs
    got = noise_mod._quadratic_forms(op, Z)
    assert op.num_matvecs - start == Z.shape[1]
    assert got.dtype == torch.float64 and torch.allclose(got, ref, rtol=1e-12, atol=1e-12)


def test_control_variate_from_stored_quadratic_forms():
    x, y = data(n=12)
    full = HessianOperator(mlp(), torch.nn.CrossEntropyLoss(), (x, y))
    sub = HessianOperator(full.model, torch.nn.CrossEntropyLoss(), (x[:5], y[:5]))
    Z, zAz, extra = noise_mod._common_probes(sub, full, 6, torch.Generator().manual_seed(0))
    assert extra == 6 and zAz.shape == (6,)
    tr_full = 2.5  # any full-data trace value
    est, var = noise_mod._probe_trace(sub, Z, zAz, tr_full)
    q = (Z * sub.matmat(Z)).sum(0) - (Z * full.matmat(Z)).sum(0)
    assert abs(est - (tr_full + float(q.mean()))) < 1e-12
    assert abs(var - float(q.var(unbiased=True)) / 6) < 1e-12
