"""K-FAC factors against explicit dense float64 computations (loops, Jacobians, Hessians)."""

import pytest
import torch
from torch import nn

from curvlens.optim.kfac import KFACPreconditioner
from curvlens.optim.kfac.inverse import eigh_factor, kron_solve


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


def _one_step(model, x, y, fisher="type2", loss=None):
    loss = loss or nn.CrossEntropyLoss()
    pre = KFACPreconditioner(model, loss_fn=loss, fisher=fisher, kl_clip=None, generator=0)
    model.zero_grad()
    loss(model(x), y).backward()
    pre.step()
    pre.remove()
    return pre


def _g_ref(rest, z, S, scale):
    """scale * sum_n sum_c sum_t v v^T with v = J_n^T S_n[:, c] at each position t;
    z: (N, C_out, *positions) layer outputs, rest: z_n -> f_n."""
    out = 0
    for n in range(z.shape[0]):
        J = torch.autograd.functional.jacobian(rest, z[n:n + 1])[0, :, 0]  # (K, C_out, *pos)
        V = torch.einsum("kc,k...->c...", S[n], J)  # (cols, C_out, *pos)
        V = V.reshape(V.shape[0], V.shape[1], -1)
        out = out + torch.einsum("cit,cjt->ij", V, V)
    return scale * out


def test_linear_factors_type2():
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3))
    x, y = torch.randn(7, 4, generator=g), torch.randint(0, 3, (7,), generator=g)
    pre = _one_step(model, x, y)
    a = torch.cat([x, torch.ones(7, 1)], 1)
    torch.testing.assert_close(pre.blocks["0"].factors["A"], a.T @ a / 7, rtol=1e-12, atol=1e-14)
    z = model[0](x).detach()
    G = _g_ref(lambda t: model[2](torch.tanh(t[..., 0])), z.unsqueeze(-1), _ce_sqrt(model(x).detach()), 1 / 7)
    torch.testing.assert_close(pre.blocks["0"].factors["G"], G, rtol=1e-10, atol=1e-14)


def _patches(x, k, stride, pad):
    """Explicit patch extraction by loops: rows (N * positions, C * k * k)."""
    xp = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    n, c, h, w = xp.shape
    rows = []
    for i in range(n):
        for r in range(0, h - k + 1, stride):
            for s in range(0, w - k + 1, stride):
                rows.append(xp[i, :, r:r + k, s:s + k].reshape(-1))
    return torch.stack(rows)


def test_conv2d_factors_bias_padding_stride():
    g = torch.Generator().manual_seed(1)
    conv = nn.Conv2d(2, 3, 3, stride=2, padding=1)
    head = nn.Linear(3 * 3 * 3, 4)
    model = nn.Sequential(conv, nn.Tanh(), nn.Flatten(), head)
    x, y = torch.randn(3, 2, 5, 5, generator=g), torch.randint(0, 4, (3,), generator=g)
    pre = _one_step(model, x, y)
    rows = _patches(x, 3, 2, 1)
    rows = torch.cat([rows, torch.ones(rows.shape[0], 1)], 1)
    torch.testing.assert_close(pre.blocks["0"].factors["A"], rows.T @ rows / rows.shape[0], rtol=1e-12, atol=1e-14)
    z = conv(x).detach()
    G = _g_ref(lambda t: head(torch.tanh(t).flatten(1)), z, _ce_sqrt(model(x).detach()), 1 / 3)
    torch.testing.assert_close(pre.blocks["0"].factors["G"], G, rtol=1e-10, atol=1e-14)


def test_conv1d_factor_matches_unfolded_linear():
    g = torch.Generator().manual_seed(2)
    conv = nn.Conv1d(2, 3, 3, padding=1, bias=False)
    model = nn.Sequential(conv, nn.Flatten(), nn.Linear(3 * 6, 2))
    x, y = torch.randn(4, 2, 6, generator=g), torch.randint(0, 2, (4,), generator=g)
    pre = _one_step(model, x, y)
    xp = torch.nn.functional.pad(x, (1, 1))
    rows = torch.stack([xp[i, :, t:t + 3].reshape(-1) for i in range(4) for t in range(6)])
    torch.testing.assert_close(pre.blocks["0"].factors["A"], rows.T @ rows / 24, rtol=1e-12, atol=1e-14)


def test_embedding_factors():
    g = torch.Generator().manual_seed(3)
    emb = nn.Embedding(6, 3)
    head = nn.Linear(3, 4)
    model = nn.Sequential(emb, nn.Tanh(), nn.Flatten(), nn.Linear(3 * 2, 4))
    idx, y = torch.randint(0, 6, (5, 2), generator=g), torch.randint(0, 4, (5,), generator=g)
    pre = _one_step(model, idx, y)
    counts = torch.stack([(idx == v).sum() for v in range(6)]).double() / idx.numel()
    torch.testing.assert_close(pre.blocks["0"].factors["A"], counts)
    z = emb(idx).detach().transpose(1, 2)  # (N, d, positions)
    G = _g_ref(lambda t: model[3](torch.tanh(t.transpose(1, 2)).flatten(1)), z, _ce_sqrt(model(idx).detach()), 1 / 5)
    torch.testing.assert_close(pre.blocks["0"].factors["G"], G, rtol=1e-10, atol=1e-14)
    del head


@pytest.mark.parametrize("norm", ["layer", "group", "batch_eval"])
def test_norm_factors(norm):
    g = torch.Generator().manual_seed(4)
    if norm == "layer":
        layer, x = nn.LayerNorm(4), torch.randn(5, 3, 4, generator=g)
        body = nn.Sequential(layer, nn.Tanh(), nn.Flatten(), nn.Linear(12, 3))
    else:
        layer = nn.GroupNorm(2, 4) if norm == "group" else nn.BatchNorm1d(4)
        x = torch.randn(5, 4, 3, generator=g)
        body = nn.Sequential(layer, nn.Tanh(), nn.Flatten(), nn.Linear(12, 3))
    with torch.no_grad():
        layer.weight.uniform_(0.5, 1.5, generator=g)
        layer.bias.uniform_(-0.5, 0.5, generator=g)
    if norm == "batch_eval":
        layer.running_mean.uniform_(-1, 1, generator=g)
        body.eval()
    y = torch.randint(0, 3, (5,), generator=g)
    pre = _one_step(body, x, y)
    S = _ce_sqrt(body(x).detach())
    ref = 0
    for n in range(5):
        for c in range(3):
            gw, gb = torch.autograd.grad((body(x[n:n + 1])[0] * S[n, :, c]).sum(), [layer.weight, layer.bias])
            u = torch.cat([gw.reshape(-1), gb.reshape(-1)])
            ref = ref + torch.outer(u, u)
    torch.testing.assert_close(pre.blocks["0"].factors["F"], ref / 5, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("bias", [True, False])
def test_type2_linear_mse_is_exact_newton_step(bias):
    g = torch.Generator().manual_seed(5)
    model = nn.Linear(3, 2, bias=bias)
    x, y = torch.randn(20, 3, generator=g), torch.randn(20, 2, generator=g)
    pre = KFACPreconditioner(model, loss_fn=nn.MSELoss(), fisher="type2", damping=0.0, kl_clip=None)
    nn.functional.mse_loss(model(x), y).backward()
    grad = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    pre.step()
    step = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    shapes = [p.shape for p in model.parameters()]

    def loss(theta):
        w = theta[:6].reshape(shapes[0])
        b = theta[6:] if bias else None
        return nn.functional.mse_loss(nn.functional.linear(x, w, b), y)

    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    H = torch.autograd.functional.hessian(loss, theta)  # = GGN for linear least squares
    torch.testing.assert_close(step, torch.linalg.solve(H, grad), rtol=1e-10, atol=1e-12)


def test_mc_factors_converge_to_type2():
    g = torch.Generator().manual_seed(6)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3))
    x, y = torch.randn(10, 3, generator=g), torch.randint(0, 3, (10,), generator=g)
    exact = _one_step(model, x, y).blocks["2"].factors["G"]
    pre = KFACPreconditioner(model, loss_fn=nn.CrossEntropyLoss(), fisher="mc", factor_decay=0.0,
                             update_every=1, inverse_every=10**6, generator=7)
    draws = []
    for _ in range(800):
        model.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        pre.step()
        draws.append(pre.blocks["2"].factors["G"].clone())
    d = torch.stack(draws)
    err = (d.mean(0) - exact).abs().max()
    se = d.std(0).max() / len(draws) ** 0.5
    assert err < 5 * se
    assert err < 0.1 * exact.abs().max()
    first = (d[:10].mean(0) - exact).abs().max()
    assert err < first  # averaging more draws gets closer


def test_kron_solve_matches_dense_damped_inverse():
    g = torch.Generator().manual_seed(8)
    a = torch.randn(4, 4, generator=g)
    gg = torch.randn(3, 3, generator=g)
    A, G = a @ a.T, gg @ gg.T
    V = torch.randn(3, 4, generator=g)
    lam = 0.3
    pi = ((A.trace() / 4) / (G.trace() / 3)).sqrt()
    Ad, Gd = A + pi * lam**0.5 * torch.eye(4), G + lam**0.5 / pi * torch.eye(3)
    ref = torch.linalg.solve(Gd, V) @ torch.linalg.inv(Ad)
    torch.testing.assert_close(kron_solve(eigh_factor(G), eigh_factor(A), V, lam), ref, rtol=1e-10, atol=1e-12)


def test_eigh_fallback_on_nonfinite_factor():
    e = eigh_factor(torch.tensor([[1.0, float("nan")], [float("nan"), 2.0]]))
    assert e.fallback and e.vectors is None and torch.isfinite(e.values).all()
