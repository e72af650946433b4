"""ggn_diagonal's two routes (curvature backpropagation with the residual off; hooks and a batched
autograd backward) against the diagonal of the dense float64 GGN."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from curvlens.estimators.ggn_diagonal import _hooked, ggn_diagonal
from curvlens.operators import GGNOperator

_FAST = "curvature backpropagation, residual off"
_HOOKS = "batched backward of the factor columns"


def _data(sizes, d, c, *, targets="class", seed=1):
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in sizes:
        x = torch.randn(n, d, generator=g, dtype=torch.float64)
        if targets == "class":
            y = torch.randint(0, c, (n,), generator=g)
        elif targets == "prob":
            y = torch.softmax(torch.randn(n, c, generator=g, dtype=torch.float64), 1)
        elif targets == "binary":
            y = torch.rand(n, c, generator=g, dtype=torch.float64)
        else:
            y = torch.randn(n, c, generator=g, dtype=torch.float64)
        out.append((x, y))
    return out


def _mlp(act, bias=True, d=4, c=3):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(d, 6, bias=bias), act(), nn.Linear(6, 5, bias=bias), act(),
                         nn.Linear(5, c, bias=bias)).double()


def _check_both_routes(G, route):
    ref = torch.diagonal(G.to_dense())
    res = ggn_diagonal(G)
    assert route in res.info.status
    torch.testing.assert_close(res.estimate, ref, rtol=1e-10, atol=1e-14)
    hooked = G.problem.reduce_(_hooked(G.problem, G.spec), "ggn diagonal")
    torch.testing.assert_close(hooked, ref, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("act", [nn.Tanh, nn.Sigmoid, nn.ReLU, nn.LeakyReLU])
@pytest.mark.parametrize("loss, targets", [
    (nn.CrossEntropyLoss(), "class"), (nn.CrossEntropyLoss(reduction="sum"), "class"),
    (nn.CrossEntropyLoss(), "prob"), (nn.MSELoss(), "real"), (nn.BCEWithLogitsLoss(), "binary")])
def test_sequential_routes_match_dense_ggn(act, loss, targets):
    G = GGNOperator(_mlp(act), loss, _data((5, 9, 2), 4, 3, targets=targets))
    _check_both_routes(G, _FAST)


def test_no_bias_ignore_index_and_dense_switch():
    G = GGNOperator(_mlp(nn.Tanh, bias=False), nn.CrossEntropyLoss(ignore_index=1), _data((6, 4), 4, 3))
    _check_both_routes(G, _FAST)
    torch.manual_seed(0)  # 12 classes through a width-2 layer: the factors switch to a dense matrix
    model = nn.Sequential(nn.Linear(3, 2), nn.Tanh(), nn.Linear(2, 2), nn.Sigmoid(), nn.Linear(2, 12)).double()
    _check_both_routes(GGNOperator(model, nn.CrossEntropyLoss(), _data((7, 5), 3, 12, seed=4)), _FAST)


class _Residual(nn.Module):
    """Not a Sequential: the hook route."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 5), nn.Linear(5, 3)

    def forward(self, x):
        h = torch.tanh(self.a(x))
        return self.b(h + h**2)


def test_other_models_take_the_hook_route():
    torch.manual_seed(0)
    G = GGNOperator(_Residual().double(), nn.CrossEntropyLoss(), _data((5, 4), 4, 3))
    _check_both_routes(G, _HOOKS)
    # a Linear layer shared by two positions of a Sequential: the fast route refuses, the hooks name it
    lin = nn.Linear(3, 3).double()
    G = GGNOperator(nn.Sequential(lin, nn.Tanh(), lin), nn.MSELoss(), _data((4,), 3, 3, targets="real"))
    with pytest.raises(ValueError, match="ran 2 time"):
        ggn_diagonal(G)
    # one weight tensor in two Linear modules (tied weights)
    tied = nn.Sequential(nn.Linear(3, 3), nn.Tanh(), nn.Linear(3, 3)).double()
    tied[2].weight = tied[0].weight
    G = GGNOperator(tied, nn.MSELoss(), _data((4,), 3, 3, targets="real"))
    with pytest.raises(ValueError, match=r"parameter '0.weight' is shared by 2 nn.Linear modules"):
        ggn_diagonal(G)


def test_frozen_extractor_subset_float32_and_state():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(1, 2, 3), nn.Flatten(), nn.Linear(8, 6), nn.Tanh(), nn.Dropout(0.5),
                          nn.Linear(6, 3)).double()
    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(n, 1, 6, generator=g, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g))
            for n in (5, 3)]
    model.train()
    G = GGNOperator(model, nn.CrossEntropyLoss(), data, params=["2.weight", "5.bias"])
    _check_both_routes(G, _FAST)
    assert model.training and all(p.grad is None for p in model.parameters())
    m32, d32 = _mlp(nn.Sigmoid).float(), [(x.float(), y) for x, y in _data((6, 3), 4, 3)]
    res = ggn_diagonal(GGNOperator(m32, nn.CrossEntropyLoss(), d32))
    ref = torch.diagonal(GGNOperator(_mlp(nn.Sigmoid), nn.CrossEntropyLoss(), _data((6, 3), 4, 3)).to_dense())
    assert res.estimate.dtype == torch.float64 and _FAST in res.info.status
    torch.testing.assert_close(res.estimate, ref, rtol=1e-4, atol=1e-7)


def test_chunked_samples(monkeypatch):
    import curvlens.estimators.diagonal_hessian as dh

    G = GGNOperator(_mlp(nn.Tanh), nn.CrossEntropyLoss(), _data((9, 4), 4, 3))
    monkeypatch.setattr(dh, "_CHUNK_ELEMENTS", 40)  # 2 samples per chunk
    _check_both_routes(G, _FAST)
