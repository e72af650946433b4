"""The per-sample gradient noise scale is accumulated slice by slice in bounded memory: it equals
the computation from the whole (N, D) matrix of per-sample gradients in float64 to 1e-12."""

import math

import pytest
import torch
from torch import nn

import curvlens.diagnostics.gradient_noise as gn_mod
from curvlens.diagnostics.gradient_noise import default_chunk_size, gradient_noise_scale
from curvlens.problem import Problem


def _setup():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(37, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (37,), generator=g)
    model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
    return model, nn.CrossEntropyLoss(), (x, y)


def _whole_matrix(model, loss_fn, data):
    """Reference: every per-sample gradient at once, ``tr(Sigma) = mean |g_i|^2 - |G|^2``."""
    pr = Problem(model, loss_fn, data)
    Gs = torch.cat(list(pr.per_sample_gradients(chunk_size=1000)), 0).double()
    G = Gs.mean(0)
    gn = float(G @ G)
    return float((Gs * Gs).sum(1).mean()) - gn, gn


@pytest.mark.parametrize("chunk,cols", [(None, 1 << 16), (4, 5), (37, 13)])
def test_streamed_sums_equal_whole_matrix(monkeypatch, chunk, cols):
    monkeypatch.setattr(gn_mod, "SUM_COLUMNS", cols)  # several parameter slices, an uneven last one
    model, loss_fn, data = _setup()
    res = gradient_noise_scale(model, loss_fn, data, chunk_size=chunk, method="per_sample")
    tr, gn = _whole_matrix(model, loss_fn, data)
    assert res.method == "per_sample" and res.num_samples == 37
    assert math.isclose(res.trace_sigma, tr, rel_tol=1e-12)
    assert math.isclose(res.grad_norm_sq, gn, rel_tol=1e-12)
    assert math.isclose(res.b_simple, tr / gn, rel_tol=1e-12)


def test_default_chunk_bounds_the_chunk_memory():
    assert default_chunk_size(100, 4) == 64  # small models: 64 samples per vmap call
    assert default_chunk_size(1_068_810, 4) == 15  # 15 x 4.3 MB <= 64 MB
    assert default_chunk_size(10**9, 8) == 1
    with pytest.raises(ValueError, match="chunk_size"):
        gradient_noise_scale(*_setup(), chunk_size=0)
