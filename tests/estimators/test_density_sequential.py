"""SLQ probes run one at a time (one Lanczos basis alive) give the batched run's quadrature."""

from __future__ import annotations

import torch

import curvlens.estimators._multi_lanczos as ml
import curvlens.estimators.slq as slq
from curvlens.estimators.density import spectral_density
from curvlens.operators import HessianOperator


def _mlp_operator():
    g = torch.Generator().manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 9), torch.nn.Tanh(), torch.nn.Linear(9, 3)).double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
    x = torch.randn(40, 6, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (40,), generator=g)
    return HessianOperator(model, torch.nn.CrossEntropyLoss(), [(x[:25], y[:25]), (x[25:], y[25:])])


def _run(monkeypatch, basis_bytes, deflate):
    widths = []
    real = ml.multi_lanczos

    def spy(op, Q0, *a, **k):
        widths.append(Q0.shape[1])
        return real(op, Q0, *a, **k)

    monkeypatch.setattr(slq, "_BASIS_BYTES", basis_bytes)
    monkeypatch.setattr(slq, "multi_lanczos", spy)
    res = spectral_density(_mlp_operator(), num_probes=4, num_steps=12, deflate=deflate, fill_budget=False,
                           generator=3)
    return res, widths


def test_sequential_probes_match_the_batched_run(monkeypatch):
    for deflate in (False, True):
        seq, w_seq = _run(monkeypatch, 1, deflate)
        bat, w_bat = _run(monkeypatch, 2**40, deflate)
        assert set(w_seq) == {1} and max(w_bat) > 1  # one basis at a time vs probes sharing products
        assert seq.nodes.shape == bat.nodes.shape
        torch.testing.assert_close(seq.nodes, bat.nodes, rtol=0, atol=1e-12)
        torch.testing.assert_close(seq.weights, bat.weights, rtol=0, atol=1e-12)

