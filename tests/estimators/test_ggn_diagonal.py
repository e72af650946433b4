"""ggn_diagonal (backpropagated loss-Hessian factor) against the exact diagonal from D products."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from curvlens.estimators import exact_diagonal
from curvlens.estimators.ggn_diagonal import ggn_diagonal
from curvlens.operators import GGNOperator, HessianOperator


def _data(sizes, d, c, *, targets="class"):
    g = torch.Generator().manual_seed(1)
    out = []
    for n in sizes:
        x = torch.randn(n, d, generator=g, dtype=torch.float64)
        y = torch.randint(0, c, (n,), generator=g) if targets == "class" else torch.randn(n, c, generator=g,
                                                                                         dtype=torch.float64)
        out.append((x, y))
    return out


def _mlp(d, c):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(d, 7), nn.Tanh(), nn.Linear(7, 5), nn.ReLU(), nn.Linear(5, c)).double()


@pytest.mark.parametrize("loss, targets", [(nn.CrossEntropyLoss(), "class"), (nn.MSELoss(), "real"),
                                           (nn.MSELoss(reduction="sum"), "real")])
def test_matches_exact_diagonal_uneven_batches(loss, targets):
    model = _mlp(4, 3)
    G = GGNOperator(model, loss, _data((5, 9, 2), 4, 3, targets=targets))
    ref = exact_diagonal(G).estimate
    res = ggn_diagonal(G)
    torch.testing.assert_close(res.estimate, ref, rtol=1e-10, atol=1e-13)
    assert res.method == "backprop" and res.stderr is None and res.num_matvecs == 0


def test_parameter_subset_and_float32():
    model = _mlp(4, 3).float()
    data = [(x.float(), y) for x, y in _data((6, 3), 4, 3)]
    G = GGNOperator(model, nn.CrossEntropyLoss(), data, params=["2.weight", "4.bias"])
    torch.testing.assert_close(ggn_diagonal(G).estimate, exact_diagonal(G).estimate, rtol=1e-4, atol=1e-7)
    assert all(p.grad is None for p in model.parameters())


def test_unsupported_models_raise():
    torch.manual_seed(0)
    conv = nn.Sequential(nn.Conv1d(1, 2, 3), nn.Flatten(), nn.Linear(8, 3)).double()
    x = torch.randn(5, 1, 6, dtype=torch.float64)
    G = GGNOperator(conv, nn.CrossEntropyLoss(), (x, torch.randint(0, 3, (5,))))
    with pytest.raises(ValueError, match=r"parameter '0.weight' does not belong to an nn.Linear.*exact_diagonal"):
        ggn_diagonal(G)
    with pytest.raises(TypeError, match="op: expected a GGNOperator, got HessianOperator"):
        ggn_diagonal(HessianOperator(_mlp(4, 3), nn.CrossEntropyLoss(), _data((4,), 4, 3)))
    lin = nn.Linear(3, 3).double()
    shared = nn.Sequential(lin, nn.Tanh(), lin)
    G = GGNOperator(shared, nn.MSELoss(), (torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)))
    with pytest.raises(ValueError, match="ran 2 time"):
        ggn_diagonal(G)
