"""Minibatch traces from common probes with the full operator as control variate."""

import math

import torch
from torch import nn

from curvlens.diagnostics import curvature_noise
from curvlens.operators import HessianOperator


def test_control_variate_trace_spread_matches_exact_law():
    g = torch.Generator().manual_seed(0)
    N, D = 64, 24
    X = torch.randn(N, D, generator=g, dtype=torch.float64) * torch.linspace(0.2, 2.0, D, dtype=torch.float64)
    y = torch.randn(N, 1, generator=g, dtype=torch.float64)
    model = nn.Linear(D, 1, bias=False).double()
    full_op = HessianOperator(model, nn.MSELoss(), (X, y))
    H = 2 * X.T @ X / N
    per_sample = 2 * (X**2).sum(1)  # tr(H_B) is the mean of these over the minibatch
    s2 = float(per_sample.var(unbiased=False))

    def make(idx):
        return HessianOperator(model, nn.MSELoss(), (X[idx], y[idx]))

    draws = 80
    res = curvature_noise(make, N, full_values={"trace": float(H.trace())}, quantities=["trace"],
                          batch_sizes=[4, 16], num_draws=draws, trace_probes=4, full_operator=full_op,
                          generator=3)
    rel_se = math.sqrt(2 / (draws - 1)) * 1.5
    for j, B in enumerate((4, 16)):
        exact = s2 * (N - B) / ((N - 1) * B)
        ratio = float(res.stds[0, j]) ** 2 / exact
        # the probe error (~||H_B - H||_F^2 / k) is estimated and subtracted: unbiased
        assert abs(ratio - 1) < 4 * rel_se, (B, ratio)
    # without the control variate, 4 probes on H_B alone are far noisier than the minibatch spread
    plain = curvature_noise(make, N, full_values={"trace": float(H.trace())}, quantities=["trace"],
                            batch_sizes=[16], num_draws=draws, trace_probes=4, generator=3)
    assert float(plain.stds[0, 0]) > 1.5 * float(res.stds[0, 1])
