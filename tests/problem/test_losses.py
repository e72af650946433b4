"""The loss table: names, aliases, reductions, user specs, errors; the refused name ``bce``."""

import textwrap

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from curvlens.errors import CheckpointError
from curvlens.problem.losses import LOSSES, loss_name, resolve_loss

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
        ("bce_with_logits", "mean", lambda: F.binary_cross_entropy(torch.sigmoid(OUT), BIN)),
        ("bce_logits", "sum", lambda: F.binary_cross_entropy(torch.sigmoid(OUT), BIN, reduction="sum")),
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
    elif canonical == "bce_with_logits":
        got = loss(OUT, BIN)
    else:
        got = loss(torch.sigmoid(OUT), BIN)
    torch.testing.assert_close(got, reference(), rtol=1e-12, atol=1e-12)


def test_every_table_entry_resolves():
    for name, row in LOSSES.items():
        assert row.name == name
        assert type(resolve_loss(name)) is row.module and loss_name(resolve_loss(name)) == name
        for alias in row.aliases:
            assert loss_name(resolve_loss(alias)) == name
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
        ("hinge", {}, ValueError, r"loss: unknown loss 'hinge'; expected one of cross_entropy, nll, mse, bce_with_logits, bce_probs "
         r"or 'pkg.module:function'"),
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


# --- one meaning per name ------------------------------------------------------------------------

AMBIGUOUS = (r"^(loss|loss_fn): '[ bBcCeE]+' is ambiguous \(logits or probabilities\?\); use 'bce_with_logits' \(BCEWithLogitsLoss, "
             r"the model outputs logits\) or 'bce_probs' \(BCELoss, the model outputs probabilities\)")


def test_bce_is_refused_everywhere():
    from curvlens.operators import GGNOperator, MCFisherOperator
    from curvlens.problem.losses import identify_loss

    x, y = torch.randn(4, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64), BIN[:4, :2]
    model = nn.Linear(3, 2).double()
    for call in (lambda: resolve_loss("bce"), lambda: resolve_loss(" BCE "),
                 lambda: identify_loss("bce", "mean", purpose="GGNOperator"),
                 lambda: GGNOperator(model, "bce", (x, y)), lambda: MCFisherOperator(model, "bce", (x, y))):
        with pytest.raises(ValueError, match=AMBIGUOUS):
            call()


def test_table_rows_pair_module_and_functional():
    """Each row's nn class computes the same loss as its functional (so a name has one meaning)."""
    inputs = {"cross_entropy": (OUT, CLS), "nll": (F.log_softmax(OUT, 1), CLS), "mse": (OUT, REG),
              "bce_with_logits": (OUT, BIN), "bce_probs": (torch.sigmoid(OUT), BIN)}
    assert set(inputs) == set(LOSSES)
    for name, row in LOSSES.items():
        for red in ("mean", "sum"):
            torch.testing.assert_close(row.module(reduction=red)(*inputs[name]),
                                       row.functional(*inputs[name], reduction=red), rtol=0, atol=0)


def _net(name):
    g = torch.Generator().manual_seed(3)
    lin1, lin2 = nn.Linear(4, 5).double(), nn.Linear(5, 3).double()
    with torch.no_grad():
        for p in (*lin1.parameters(), *lin2.parameters()):
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) * 0.7)
    tail = {"nll": [nn.LogSoftmax(dim=1)], "bce_probs": [nn.Sigmoid()]}.get(name, [])
    return nn.Sequential(lin1, nn.Tanh(), lin2, *tail)


def _data(name):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(7, 4, generator=g, dtype=torch.float64)
    if name in ("cross_entropy", "nll"):
        return x, torch.randint(0, 3, (7,), generator=g)
    if name == "mse":
        return x, torch.randn(7, 3, generator=g, dtype=torch.float64)
    return x, torch.randint(0, 2, (7, 3), generator=g).to(torch.float64)


def _dense_ggn(model, x, y, criterion):
    """``J^T (d^2 L / d f^2) J`` with the Jacobian and the output Hessian from torch.func (float64)."""
    names = [n for n, _ in model.named_parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    shapes = [p.shape for p in model.parameters()]

    def outputs(v):
        parts, i = {}, 0
        for n, s in zip(names, shapes):
            parts[n] = v[i : i + s.numel()].reshape(s)
            i += s.numel()
        return torch.func.functional_call(model, parts, (x,))

    out = outputs(flat).detach()
    J = torch.func.jacrev(outputs)(flat).reshape(out.numel(), -1)
    H = torch.func.hessian(lambda o: criterion(o.reshape(out.shape), y))(out.reshape(-1))
    return J.T @ H @ J


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("name", list(LOSSES))
def test_ggn_of_a_name_is_the_ggn_of_its_nn_module(name, reduction):
    from curvlens.operators import GGNOperator

    model, (x, y) = _net(name), _data(name)
    criterion = LOSSES[name].module(reduction=reduction)
    # nll is linear in its log-probability input: its GGN is that of cross-entropy on them
    ref_loss = nn.CrossEntropyLoss(reduction=reduction) if name == "nll" else criterion
    ref = _dense_ggn(model, x, y, ref_loss)
    by_name = GGNOperator(model, name, (x, y), reduction=reduction).to_dense()
    by_module = GGNOperator(model, criterion, (x, y)).to_dense()
    torch.testing.assert_close(by_name, ref, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(by_module, ref, rtol=1e-9, atol=1e-10)
    for alias in LOSSES[name].aliases:
        torch.testing.assert_close(GGNOperator(model, alias, (x, y), reduction=reduction).to_dense(), ref,
                                   rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("name", [n for n in LOSSES if n != "nll"])
def test_closed_form_output_hessian_matches_autograd(name):
    from curvlens.problem.losses import LossSpec

    out = torch.sigmoid(OUT) if name == "bce_probs" else OUT
    y = {"cross_entropy": CLS, "mse": REG}.get(name, BIN)
    spec = LossSpec(name, "mean")
    H = torch.func.hessian(lambda o: spec(o.reshape(out.shape), y))(out.reshape(-1))
    W = torch.eye(out.numel(), dtype=torch.float64).reshape(-1, *out.shape)
    torch.testing.assert_close(spec.hessian_vp(out, y, W).reshape(out.numel(), -1), H, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("name", ["cross_entropy", "mse", "bce_with_logits", "bce_probs"])
def test_sampled_gradients_have_the_fisher_as_second_moment(name):
    """E[g g^T] per term is the Fisher of the likelihood: the output Hessian at targets that
    are the model's own predictions (for bce_probs: 1 / (p (1 - p)))."""
    from curvlens.problem.losses import LossSpec

    out = torch.sigmoid(OUT[:2]) if name == "bce_probs" else OUT[:2]
    spec = LossSpec(name, "sum")
    S = 40000
    G = spec.sampled_gradients(out, CLS[:2] if name == "cross_entropy" else REG[:2], S,
                               torch.Generator().manual_seed(11))
    assert G.shape == (S, *out.shape)
    second = torch.einsum("s...,s...->...", G.reshape(S, -1, 1), G.reshape(S, 1, -1)) / S
    p = spec.probs(out)
    if name == "cross_entropy":  # block diagonal over samples: diag(p) - p p^T per row
        fisher = torch.block_diag(*[torch.diag(r) - torch.outer(r, r) for r in p])
    elif name == "mse":
        fisher = 2.0 * torch.eye(out.numel(), dtype=torch.float64)
    else:
        v = (p * (1 - p)).reshape(-1)
        fisher = torch.diag(v if name == "bce_with_logits" else 1 / v)
    scale = float(fisher.abs().max())
    assert float((second - fisher).abs().max()) < 0.05 * scale
    again = spec.sampled_gradients(out, REG[:2], S, torch.Generator().manual_seed(11))
    assert torch.equal(G, again)  # the generator alone decides the draws
