"""K-FAC-reduce factors (``weight_sharing="reduce"``) against dense float64 loops (the comparison with
curvlinops' ``kfac_approx="reduce"`` factors, a benchmark peer, is in ``benchmarks/kfac_step_cost.py``)."""

import pytest
import torch
from torch import nn

from curvlens.optim.kfac import KFAC, KFACPreconditioner
from curvlens.optim.kfac import factors as fx


@pytest.fixture(autouse=True)
def _float64():
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


def _ce_sqrt(logits):
    """Per-sample square roots S_n (C x C) of diag(p) - p p^T."""
    p = torch.softmax(logits, dim=1)
    return torch.diag_embed(p.sqrt()) - p.unsqueeze(2) * p.sqrt().unsqueeze(1)


def _one_step(model, x, y, loss=None, fisher="type2", weight_sharing="reduce"):
    loss = loss or nn.CrossEntropyLoss()
    pre = KFACPreconditioner(model, loss_fn=loss, fisher=fisher, kl_clip=None, weight_sharing=weight_sharing,
                             generator=0)
    model.zero_grad()
    loss(model(x), y).backward()
    pre.step()
    pre.remove()
    return pre


def _reduced_g_ref(rest, z, S, scale):
    """scale * sum_n sum_c u u^T with u = sum_t (J_n^T S_n[:, c]) at position t: the output
    gradients of each sample summed over its positions before the outer product."""
    out = 0
    for n in range(z.shape[0]):
        J = torch.autograd.functional.jacobian(rest, z[n:n + 1])[0, :, 0]  # (K, C_out, *pos)
        V = torch.einsum("kc,k...->c...", S[n], J)  # (cols, C_out, *pos)
        U = V.reshape(V.shape[0], V.shape[1], -1).sum(-1)  # (cols, C_out)
        out = out + U.T @ U
    return scale * out


def _mean_patches(x, k, stride, pad, dilation=1):
    """Each sample's patches averaged over the output positions, by loops: (N, C * k * k)."""
    xp = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    n, c, h, w = xp.shape
    span = dilation * (k - 1) + 1
    out = []
    for i in range(n):
        rows = [xp[i, :, r:r + span:dilation, s:s + span:dilation].reshape(-1)
                for r in range(0, h - span + 1, stride) for s in range(0, w - span + 1, stride)]
        out.append(torch.stack(rows).mean(0))
    return torch.stack(out)


def test_conv2d_reduce_factors_match_loops():
    g = torch.Generator().manual_seed(1)
    conv = nn.Conv2d(2, 3, 3, stride=2, padding=1)
    head = nn.Linear(3 * 3 * 3, 4)
    model = nn.Sequential(conv, nn.Tanh(), nn.Flatten(), head)
    x, y = torch.randn(5, 2, 5, 5, generator=g), torch.randint(0, 4, (5,), generator=g)
    pre = _one_step(model, x, y)
    a = torch.cat([_mean_patches(x, 3, 2, 1), torch.ones(5, 1)], 1)
    torch.testing.assert_close(pre.blocks["0"].factors["A"], a.T @ a / 5, rtol=1e-12, atol=1e-14)
    z = conv(x).detach()
    G = _reduced_g_ref(lambda t: head(torch.tanh(t).flatten(1)), z, _ce_sqrt(model(x).detach()), 1 / 5)
    torch.testing.assert_close(pre.blocks["0"].factors["G"], G, rtol=1e-10, atol=1e-14)


def test_averaged_rows_conv1d_conv2d_dilation():
    g = torch.Generator().manual_seed(2)
    conv = nn.Conv2d(2, 3, 2, stride=1, padding=2, dilation=2, bias=False)
    x = torch.randn(3, 2, 6, 5, generator=g)
    ref = fx.input_rows(conv, x).reshape(3, -1, 8).mean(1)
    torch.testing.assert_close(fx.averaged_rows(conv, x), ref, rtol=1e-13, atol=1e-15)
    c1 = nn.Conv1d(2, 3, 3, padding=1)
    x1 = torch.randn(4, 2, 7, generator=g)
    xp = torch.nn.functional.pad(x1, (1, 1))
    ref1 = torch.stack([torch.stack([xp[i, :, t:t + 3].reshape(-1) for t in range(7)]).mean(0) for i in range(4)])
    s, n = fx.input_gram(c1, x1, reduce=True)
    a = torch.cat([ref1, torch.ones(4, 1)], 1)
    assert n == 4
    torch.testing.assert_close(s, a.T @ a, rtol=1e-13, atol=1e-14)
    gz = torch.randn(4, 3, 7, generator=g)
    torch.testing.assert_close(fx.output_rows(c1, gz, reduce=True), gz.sum(-1), rtol=0, atol=0)


def test_linear_sequence_reduce_factors_match_loops():
    """A Linear layer on (N, T, D) inputs shares its weight over T: reduce averages the inputs
    and sums the output gradients over T."""
    g = torch.Generator().manual_seed(3)
    lin, head = nn.Linear(3, 4), nn.Linear(4, 2)
    model = nn.Sequential(lin, nn.Tanh(), head)
    x, y = torch.randn(6, 5, 3, generator=g), torch.randn(6, 5, 2, generator=g)
    loss = nn.MSELoss(reduction="sum")
    pre = _one_step(model, x, y, loss=loss)
    a = torch.cat([x.mean(1), torch.ones(6, 1)], 1)
    torch.testing.assert_close(pre.blocks["0"].factors["A"], a.T @ a / 6, rtol=1e-12, atol=1e-14)
    # the type-2 factor of a summed MSE: S_n = sqrt(2) I over the sample's T * 2 outputs
    G = 0
    for n in range(6):
        J = torch.autograd.functional.jacobian(lambda t: head(torch.tanh(t)), lin(x[n]).detach())  # (T, 2, T, 4)
        U = J.reshape(5 * 2, 5, 4).sum(1) * 2 ** 0.5
        G = G + U.T @ U
    torch.testing.assert_close(pre.blocks["0"].factors["G"], G, rtol=1e-10, atol=1e-14)


def test_reduce_equals_expand_without_weight_sharing():
    """On a plain MLP the two approximations are the same: whole K-FAC runs agree exactly."""
    g = torch.Generator().manual_seed(4)
    x, y = torch.randn(32, 5, generator=g), torch.randint(0, 3, (32,), generator=g)
    runs = []
    for ws in ("expand", "reduce"):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))
        opt = KFAC(model, nn.CrossEntropyLoss(), lr=0.3, weight_sharing=ws, update_every=1, inverse_every=3,
                   generator=7)
        losses = [float(opt.step((x, y))) for _ in range(6)]
        runs.append((losses, torch.cat([p.detach().reshape(-1) for p in model.parameters()])))
    assert runs[0][0] == runs[1][0]
    torch.testing.assert_close(runs[0][1], runs[1][1], rtol=0, atol=0)


def test_reduce_options_and_state():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 16, 3))
    with pytest.raises(ValueError, match=r"^weight_sharing: expected one of 'expand', 'reduce', got 'mean'; "):
        KFACPreconditioner(model, weight_sharing="mean")
    with pytest.raises(ValueError, match=r"^weight_sharing: expected 'expand' with ekfac=True"):
        KFACPreconditioner(model, ekfac=True, weight_sharing="reduce")
    with pytest.raises(ValueError, match=r"^weight_sharing: expected one of"):
        KFAC(model, nn.CrossEntropyLoss(), lr=0.1, weight_sharing=None)
    g = torch.Generator().manual_seed(6)
    x, y = torch.randn(4, 1, 6, 6, generator=g), torch.randint(0, 3, (4,), generator=g)
    pre = _one_step(model, x, y)
    state = pre.state_dict()
    assert state["weight_sharing"] == "reduce"
    other = KFACPreconditioner(model, fisher="empirical", weight_sharing="expand")
    with pytest.raises(ValueError, match=r"^state: expected factors with weight_sharing='expand', got 'reduce'; "):
        other.load_state_dict(state)
    other.remove()
    again = KFACPreconditioner(model, fisher="empirical", weight_sharing="reduce")
    again.load_state_dict(state)
    torch.testing.assert_close(again.blocks["0"].factors["A"], pre.blocks["0"].factors["A"], rtol=0, atol=0)
    again.remove()
