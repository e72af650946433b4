"""resolve_loss: names, aliases, reductions, user specs, errors."""

import textwrap

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from curvlens.errors import CheckpointError
from curvlens.io.losses import LOSSES, loss_name, resolve_loss

g = torch.Generator().manual_seed(0)
OUT = torch.randn(6, 4, generator=g, dtype=torch.float64)
CLS = torch.tensor([0, 3, 1, 2, 2, 0])
REG = torch.randn(6, 4, generator=g, dtype=torch.float64)
BIN = (torch.rand(6, 4, generator=g, dtype=torch.float64) > 0.5).to(torch.float64)


@pytest.mark.parametrize(
    "name, reduction, reference",
    [
        ("cross_entropy", "mean", lambda: F.cross_entropy(OUT, CLS)),
        ("ce", "sum", lambda: F.cross_entropy(OUT, CLS, reduction="sum")),
        ("CrossEntropy", "mean", lambda: F.cross_entropy(OUT, CLS)),
        ("nll", "mean", lambda: F.nll_loss(F.log_softmax(OUT, 1), CLS)),
        ("mse", "sum", lambda: ((OUT - REG) ** 2).sum()),
        ("mse", "mean", lambda: ((OUT - REG) ** 2).mean()),
        ("bce", "mean", lambda: F.binary_cross_entropy(torch.sigmoid(OUT), BIN)),
        ("bce_probs", "mean", lambda: F.binary_cross_entropy(torch.sigmoid(OUT), BIN)),
    ],
)
def test_builtin_losses_match_reference(name, reduction, reference):
    loss = resolve_loss(name, reduction=reduction)
    assert isinstance(loss, nn.Module)
    canonical = loss_name(loss)
    if canonical in ("cross_entropy", "nll"):
        got = loss(F.log_softmax(OUT, 1) if canonical == "nll" else OUT, CLS)
    elif canonical == "mse":
        got = loss(OUT, REG)
    elif canonical == "bce":
        got = loss(OUT, BIN)
    else:
        got = loss(torch.sigmoid(OUT), BIN)
    torch.testing.assert_close(got, reference(), rtol=1e-12, atol=1e-12)


def test_every_table_entry_resolves():
    for name, (cls, _) in LOSSES.items():
        assert type(resolve_loss(name)) is cls and loss_name(resolve_loss(name)) == name
    assert loss_name(lambda o, t: o) is None


@pytest.fixture
def loss_file(tmp_path):
    path = tmp_path / "my_losses.py"
    path.write_text(textwrap.dedent(
        """
        import torch
        from torch import nn

        def l1(outputs, targets):
            return (outputs - targets).abs().mean()

        class Huber(nn.HuberLoss):
            pass

        class NeedsArgs(nn.Module):
            def __init__(self, weight):
                super().__init__()

        INSTANCE = nn.SmoothL1Loss()
        NUMBER = 3
        """
    ))
    return path


def test_user_specs(loss_file):
    l1 = resolve_loss(f"{loss_file}:l1")
    torch.testing.assert_close(l1(OUT, REG), (OUT - REG).abs().mean())
    assert isinstance(resolve_loss(f"{loss_file}:Huber"), nn.HuberLoss)
    assert isinstance(resolve_loss(f"{loss_file}:INSTANCE"), nn.SmoothL1Loss)


def test_callable_passthrough():
    def f(model, batch):
        return model(batch[0]).sum()

    assert resolve_loss(f) is f


@pytest.mark.parametrize(
    "spec, kwargs, exc, match",
    [
        ("hinge", {}, ValueError, r"loss: unknown loss 'hinge'; expected one of cross_entropy, nll, mse, bce"),
        ("mse", {"reduction": "none"}, ValueError, r"reduction: expected one of mean, sum, got 'none'"),
        (3, {}, TypeError, r"loss: expected a loss name .* got int"),
        ("no_such_mod_e:fn", {}, CheckpointError, r"no module named 'no_such_mod_e'"),
    ],
)
def test_errors(spec, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        resolve_loss(spec, **kwargs)


def test_user_spec_errors(loss_file):
    with pytest.raises(CheckpointError, match=r"expected a callable loss\(outputs, targets\).*got int"):
        resolve_loss(f"{loss_file}:NUMBER")
    with pytest.raises(CheckpointError, match=r"instantiating NeedsArgs\(\) raised TypeError.*instance or a function"):
        resolve_loss(f"{loss_file}:NeedsArgs")
