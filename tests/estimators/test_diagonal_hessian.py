"""hessian_diagonal (backpropagated curvature) against the diagonal of the dense float64 Hessian."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import curvlens.estimators.diagonal_hessian as dh
from curvlens.estimators.diagonal_hessian import hessian_diagonal
from curvlens.estimators.ggn_diagonal import ggn_diagonal
from curvlens.operators import GGNOperator, HessianOperator


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


def _mlp(act, bias, d=4, c=3):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(d, 6, bias=bias), act(), nn.Linear(6, 5, bias=bias), act(),
                         nn.Linear(5, c, bias=bias)).double()


def _dense_diag(op):
    return torch.diagonal(op.to_dense())


@pytest.mark.parametrize("act", [nn.Tanh, nn.Sigmoid, nn.ReLU])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("loss, targets", [(nn.CrossEntropyLoss(), "class"), (nn.MSELoss(), "real")])
def test_matches_dense_hessian_diagonal(act, bias, loss, targets):
    model = _mlp(act, bias)
    data = _data((5, 9, 2), 4, 3, targets=targets)
    H = HessianOperator(model, loss, data)
    res = hessian_diagonal(H)
    ref = _dense_diag(H)
    torch.testing.assert_close(res.estimate, ref, rtol=1e-10, atol=1e-14)
    assert res.method == "backprop" and res.stderr is None and res.num_matvecs == 0
    ggn = ggn_diagonal(GGNOperator(model, loss, data)).estimate
    gap = float((ggn - ref).abs().max()) / float(ref.abs().max())
    if act is nn.ReLU:  # piecewise linear: no residual, the Hessian diagonal is the GGN's
        assert gap < 1e-10
    else:  # the residual terms matter: the GGN diagonal is not the answer
        assert gap > 1e-3


@pytest.mark.parametrize("loss, targets", [
    (nn.CrossEntropyLoss(reduction="sum"), "class"), (nn.CrossEntropyLoss(), "prob"),
    (nn.CrossEntropyLoss(ignore_index=1), "class"), (nn.MSELoss(reduction="sum"), "real"),
    (nn.BCEWithLogitsLoss(), "binary")])
def test_other_losses_and_targets(loss, targets):
    model = _mlp(nn.Tanh, True)
    H = HessianOperator(model, loss, _data((6, 4), 4, 3, targets=targets, seed=3))
    torch.testing.assert_close(hessian_diagonal(H).estimate, _dense_diag(H), rtol=1e-10, atol=1e-14)


def test_dense_switch_chunks_nested_sequential_and_mixed_activations(monkeypatch):
    # narrow layers and many classes: the factors outgrow a dense matrix and the code switches
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Sigmoid(), nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Identity()),
                          nn.Linear(4, 12), nn.LeakyReLU(0.1), nn.Tanh(), nn.Linear(12, 12)).double()
    data = _data((7, 5), 3, 12, seed=4)
    H = HessianOperator(model, nn.CrossEntropyLoss(), data)
    ref = _dense_diag(H)
    torch.testing.assert_close(hessian_diagonal(H).estimate, ref, rtol=1e-10, atol=1e-14)
    monkeypatch.setattr(dh, "_CHUNK_ELEMENTS", 300)  # a few samples per chunk
    torch.testing.assert_close(hessian_diagonal(H).estimate, ref, rtol=1e-10, atol=1e-14)


def test_parameter_subset_frozen_extractor_float32_and_state():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(1, 2, 3), nn.Flatten(), nn.Linear(8, 6), nn.Tanh(), nn.Dropout(0.5),
                          nn.Linear(6, 3)).double()
    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(n, 1, 6, generator=g, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g))
            for n in (5, 3)]
    model.train()
    H = HessianOperator(model, nn.CrossEntropyLoss(), data, params=["2.weight", "5.bias"])  # mode="eval"
    torch.testing.assert_close(hessian_diagonal(H).estimate, _dense_diag(H), rtol=1e-10, atol=1e-14)
    assert model.training and all(p.grad is None for p in model.parameters())
    m32 = _mlp(nn.Sigmoid, True).float()
    d32 = [(x.float(), y) for x, y in _data((6, 3), 4, 3)]
    H64 = HessianOperator(_mlp(nn.Sigmoid, True), nn.CrossEntropyLoss(), _data((6, 3), 4, 3))
    res = hessian_diagonal(HessianOperator(m32, nn.CrossEntropyLoss(), d32))
    assert res.estimate.dtype == torch.float64
    torch.testing.assert_close(res.estimate, _dense_diag(H64), rtol=1e-4, atol=1e-7)


class _Custom(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(x) * 2


def test_unsupported_models_and_losses_raise_naming_the_fallback():
    x, y = torch.randn(5, 4, dtype=torch.float64), torch.randint(0, 3, (5,))
    conv = nn.Sequential(nn.Linear(4, 6), nn.Unflatten(1, (1, 6)), nn.Conv1d(1, 1, 3), nn.Flatten(),
                         nn.Linear(4, 3)).double()
    with pytest.raises(ValueError, match=r"module '1' \(Unflatten\) is not supported by hessian_diagonal .*"
                                         r"exact_diagonal\(op\) \(D products\), or ggn_diagonal"):
        hessian_diagonal(HessianOperator(conv, nn.CrossEntropyLoss(), (x, y)))
    with pytest.raises(ValueError, match=r"got a _Custom with its own forward; use exact_diagonal\(op\)"):
        hessian_diagonal(HessianOperator(_Custom().double(), nn.CrossEntropyLoss(), (x, y)))
    class Doubled(nn.Sequential):
        def forward(self, x):
            return 2 * super().forward(x)

    with pytest.raises(ValueError, match=r"got a Doubled with its own forward"):
        hessian_diagonal(HessianOperator(Doubled(nn.Linear(4, 3)).double(), nn.CrossEntropyLoss(), (x, y)))
    with pytest.raises(TypeError, match=r"op: expected a HessianOperator, got GGNOperator; .*ggn_diagonal\(op\)"):
        hessian_diagonal(GGNOperator(_mlp(nn.Tanh, True), nn.CrossEntropyLoss(), (x, y)))
    logsm = nn.Sequential(nn.Linear(4, 3), nn.LogSoftmax(dim=1)).double()
    with pytest.raises(ValueError, match=r"module '1' \(LogSoftmax\) is not supported"):
        hessian_diagonal(HessianOperator(logsm, nn.CrossEntropyLoss(), (x, y)))
    with pytest.raises(ValueError, match=r"loss_fn: hessian_diagonal supports cross_entropy, mse, bce_with_logits, "
                                         r"got 'nll'"):
        hessian_diagonal(HessianOperator(nn.Sequential(nn.Linear(4, 3)).double(), nn.NLLLoss(), (x, y)))
    drop = nn.Sequential(nn.Linear(4, 6), nn.Dropout(0.5), nn.Linear(6, 3)).double()
    with pytest.raises(ValueError, match=r"module '1' \(Dropout\) is in train mode.*mode='eval'"):
        hessian_diagonal(HessianOperator(drop, nn.CrossEntropyLoss(), (x, y), mode="train", allow_random=True))

    def loss_mb(model, batch):
        return nn.functional.cross_entropy(model(batch[0]), batch[1])

    with pytest.raises(ValueError, match=r"needs a criterion loss .* got a loss_fn\(model, batch\)"):
        hessian_diagonal(HessianOperator(_mlp(nn.Tanh, True, c=3), loss_mb, (x, y)))
    seq3d = nn.Sequential(nn.Linear(4, 3)).double()
    with pytest.raises(ValueError, match=r"module '0' \(Linear\) got inputs of shape \(5, 2, 4\)"):
        hessian_diagonal(HessianOperator(seq3d, nn.MSELoss(), (torch.randn(5, 2, 4, dtype=torch.float64),
                                                                 torch.randn(5, 2, 3, dtype=torch.float64))))
