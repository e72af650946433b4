"""EKFAC against dense float64 references: exact Fisher / GGN diagonals in the Kronecker eigenbasis,
and the distance to the exact damped natural gradient."""

import copy

import pytest
import torch
from torch import nn

from curvlens.optim.kfac import KFAC, KFACPreconditioner
from curvlens.optim.kfac import ekfac as ek
from curvlens.optim.kfac.inverse import Eigh, eigh_factor


@pytest.fixture(autouse=True)
def _float64():
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


def _ce_hessians(logits):
    p = torch.softmax(logits, dim=1)
    return torch.diag_embed(p) - p.unsqueeze(2) * p.unsqueeze(1)


def _curvature(f, theta, logits, kind, y):
    """Dense GGN (``kind="type2"``) or empirical Fisher of the mean cross-entropy of ``f(theta)``."""
    n = logits.shape[0]
    J = torch.autograd.functional.jacobian(f, theta).reshape(n, logits.shape[1], -1)  # (N, C, P)
    if kind == "type2":
        return torch.einsum("nci,ncd,ndj->ij", J, _ce_hessians(logits), J) / n
    r = torch.softmax(logits, 1) - nn.functional.one_hot(y, logits.shape[1])  # d e_n / d f_n
    g = torch.einsum("nc,nci->ni", r, J)
    return g.T @ g / n


def _diag_in_basis(block, F, shape):
    ea, eg = block.eig
    Q = torch.kron(eg.vectors, ea.vectors)  # column (i, j) = vec(q_G,i q_A,j^T), row-major
    return (Q.T @ F @ Q).diagonal().reshape(shape)


def _linear_case(seed):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(20, 5, generator=g), torch.randint(0, 3, (20,), generator=g)
    xa = torch.cat([x, torch.ones(20, 1)], 1)
    return nn.Sequential(nn.Linear(5, 3)), x, y, (lambda m: xa @ m.T)


def _conv_case(seed):
    g = torch.Generator().manual_seed(seed)
    conv = nn.Conv2d(2, 2, 2)
    x, y = torch.randn(6, 2, 3, 3, generator=g), torch.randint(0, 8, (6,), generator=g)

    def f(m):  # m = [W.flatten(1) | b]: 4 positions per sample
        return nn.functional.conv2d(x, m[:, :-1].reshape(conv.weight.shape), m[:, -1]).flatten(1)

    return nn.Sequential(conv, nn.Flatten()), x, y, f


def _precondition(model, x, y, **kw):
    pre = KFACPreconditioner(model, loss_fn=nn.CrossEntropyLoss(), kl_clip=None, generator=0, **kw)
    model.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    pre.step()
    pre.remove()
    return pre


@pytest.mark.parametrize("case", [_linear_case, _conv_case])
@pytest.mark.parametrize("fisher", ["type2", "empirical"])
def test_scales_are_the_exact_curvature_diagonal_in_the_eigenbasis(case, fisher):
    model, x, y, f = case(0)
    pre = _precondition(model, x, y, fisher=fisher, ekfac=True)
    block = pre.blocks["0"]
    layer = model[0]
    theta = torch.cat([layer.weight.detach().flatten(1), layer.bias.detach()[:, None]], 1)
    F = _curvature(f, theta, f(theta).detach(), fisher, y)
    torch.testing.assert_close(block.scales, _diag_in_basis(block, F, theta.shape), rtol=1e-10, atol=1e-14)


def test_scales_are_moving_averaged_in_a_fixed_basis():
    model, x, y, f = _linear_case(1)
    pre = KFACPreconditioner(model, loss_fn=nn.CrossEntropyLoss(), fisher="type2", factor_decay=0.25,
                             update_every=1, inverse_every=100, kl_clip=None, ekfac=True)
    layer, refs = model[0], []
    for xb, yb in ((x[:10], y[:10]), (x[10:], y[10:])):
        model.zero_grad()
        nn.functional.cross_entropy(model(xb), yb).backward()
        pre.step()
        xa = torch.cat([xb, torch.ones(10, 1)], 1)
        theta = torch.cat([layer.weight.detach(), layer.bias.detach()[:, None]], 1)
        F = _curvature(lambda m: xa @ m.T, theta, xa @ theta.T, "type2", yb)
        refs.append(_diag_in_basis(pre.blocks["0"], F, theta.shape))  # basis of the first step
    torch.testing.assert_close(pre.blocks["0"].scales, 0.25 * refs[0] + 0.75 * refs[1], rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("shape", [(5, 1, 3, 4), (4, 3, 6, 2), (7, 4, 2, 3)])
def test_projected_second_moments_match_per_sample_loop(shape, monkeypatch):
    n, t, d_in, d_out = shape
    monkeypatch.setattr(ek, "CHUNK_ELEMENTS", 2 * d_in * d_out)  # several chunks
    g = torch.Generator().manual_seed(2)
    a_rows, g_rows = torch.randn(n * t, d_in, generator=g), torch.randn(n * t, d_out, generator=g)
    qa, qg = torch.linalg.qr(torch.randn(d_in, d_in, generator=g))[0], torch.linalg.qr(torch.randn(d_out, d_out,
                                                                                                  generator=g))[0]
    ea, eg = Eigh(torch.ones(d_in), qa), Eigh(torch.ones(d_out), qg)
    ref = sum((qg.T @ g_rows[i * t:(i + 1) * t].T @ a_rows[i * t:(i + 1) * t] @ qa) ** 2 for i in range(n))
    out = ek.projected_second_moments(eg, ea, a_rows, g_rows, n, 0.5)
    torch.testing.assert_close(out, 0.5 * ref, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match=r"^samples: expected a divisor of the"):
        ek.projected_second_moments(eg, ea, a_rows, g_rows, n * t + 1, 1.0)


def test_ekfac_quad_is_the_dense_quadratic_form():
    g = torch.Generator().manual_seed(3)
    ea = eigh_factor((lambda m: m @ m.T)(torch.randn(4, 4, generator=g)))
    eg = eigh_factor((lambda m: m @ m.T)(torch.randn(3, 3, generator=g)))
    S, M = torch.rand(3, 4, generator=g), torch.randn(3, 4, generator=g)
    Q = torch.kron(eg.vectors, ea.vectors)
    dense = Q @ torch.diag(S.reshape(-1)) @ Q.T
    assert ek.ekfac_quad(eg, ea, S, M) == pytest.approx(float(M.reshape(-1) @ dense @ M.reshape(-1)), rel=1e-12)


def _flat_params(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def _mlp_case(seed):
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
    x, y = torch.randn(64, 4, generator=g), torch.randint(0, 3, (64,), generator=g)
    shapes, names = [p.shape for p in model.parameters()], [n for n, _ in model.named_parameters()]

    def logits(theta):
        ps, i = [], 0
        for s in shapes:
            ps.append(theta[i:i + s.numel()].reshape(s))
            i += s.numel()
        return torch.func.functional_call(model, dict(zip(names, ps)), (x,))

    theta = _flat_params(model)
    return model, x, y, logits, theta, _curvature(logits, theta, logits(theta).detach(), "type2", y)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ekfac_is_closer_to_the_natural_gradient_than_kfac(seed):
    # damping 1 (the order of the GGN's top eigenvalues); at much smaller damping K-FAC's factored
    # damping (pi-correction, which adds sqrt(lambda) (pi A (x) I + I (x) G / pi)) regularizes far
    # more than EKFAC's plain lambda, and on this MLP it is then K-FAC that lands closer
    model, x, y, logits, theta, F = _mlp_case(seed)
    lam = 1.0
    F = F + lam * torch.eye(theta.numel())
    th = theta.clone().requires_grad_(True)
    grad = torch.autograd.grad(nn.functional.cross_entropy(logits(th), y), th)[0]
    exact = torch.linalg.solve(F, grad)
    errs = {}
    for ekfac in (False, True):
        m = copy.deepcopy(model)
        _precondition(m, x, y, fisher="type2", damping=lam, ekfac=ekfac)
        e = torch.cat([p.grad.reshape(-1) for p in m.parameters()]) - exact
        errs[ekfac] = float(e @ F @ e) ** 0.5
    assert errs[True] <= errs[False]


@pytest.mark.parametrize("seed", [0, 1])
def test_ekfac_blocks_are_closer_to_the_exact_blocks(seed):
    model, x, y, _, theta, F = _mlp_case(seed)
    pre = _precondition(model, x, y, fisher="type2", ekfac=True)
    start = 0
    for name in ("0", "2"):
        b, layer = pre.blocks[name], model[int(name)]
        n_w, n_b = layer.weight.numel(), layer.bias.numel()
        d_out, d_in = layer.weight.shape
        # the exact block in the [W | b] row-major order of the block
        order = torch.cat([torch.arange(n_w).reshape(d_out, d_in), n_w + torch.arange(n_b)[:, None]], 1).reshape(-1)
        block = F[start:start + n_w + n_b, start:start + n_w + n_b][order][:, order]
        start += n_w + n_b
        ea, eg = b.eig
        Q = torch.kron(eg.vectors, ea.vectors)
        ekfac = Q @ torch.diag(b.scales.reshape(-1)) @ Q.T
        kfac = torch.kron(b.factors["G"], b.factors["A"])
        assert torch.linalg.norm(block - ekfac) <= torch.linalg.norm(block - kfac)


def test_ekfac_solve_is_the_dense_damped_solve():
    model, x, y, f = _linear_case(5)
    lam = 0.1
    raw = copy.deepcopy(model)
    nn.functional.cross_entropy(raw(x), y).backward()
    pre = _precondition(model, x, y, fisher="type2", damping=lam, ekfac=True)
    b = pre.blocks["0"]
    ea, eg = b.eig
    Q = torch.kron(eg.vectors, ea.vectors)
    dense = Q @ torch.diag(b.scales.reshape(-1)) @ Q.T + lam * torch.eye(Q.shape[0])
    v = torch.cat([raw[0].weight.grad, raw[0].bias.grad[:, None]], 1).reshape(-1)
    ref = torch.linalg.solve(dense, v).reshape(3, 6)
    torch.testing.assert_close(model[0].weight.grad, ref[:, :-1], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(model[0].bias.grad, ref[:, -1], rtol=1e-10, atol=1e-12)
    d = [torch.randn(3, 5, generator=torch.Generator().manual_seed(0)), torch.ones(3)]
    dv = torch.cat([d[0], d[1][:, None]], 1).reshape(-1)
    assert b.quad(d) == pytest.approx(float(dv @ (dense - lam * torch.eye(18)) @ dv), rel=1e-10)


def test_kfac_optimizer_with_ekfac_trains_and_resumes_bit_identically():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(64, 4, generator=g)
    y = (x @ torch.randn(4, 3, generator=g)).argmax(1)

    def make():
        with torch.random.fork_rng():
            torch.manual_seed(0)
            return nn.Sequential(nn.Conv1d(1, 3, 2), nn.Tanh(), nn.Flatten(), nn.Linear(9, 3))

    xs = x[:, None, :]
    kw = dict(lr=0.1, inverse_every=3, ekfac=True, adapt_damping=True, adapt_every=2)
    model = make()
    opt = KFAC(model, nn.CrossEntropyLoss(), generator=5, **kw)
    first = opt.step((xs, y))
    for _ in range(4):
        opt.step((xs, y))
    saved_model, saved_opt = copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())
    assert saved_opt["state"] is not None and opt.pre.blocks["0"].scales is not None
    for _ in range(15):
        last = opt.step((xs, y))
    assert last < 0.7 * first
    model2 = make()
    model2.load_state_dict(saved_model)
    opt2 = KFAC(model2, nn.CrossEntropyLoss(), generator=99, **kw)
    opt2.load_state_dict(saved_opt)
    for _ in range(15):
        opt2.step((xs, y))
    for p, q in zip(model.parameters(), model2.parameters()):
        assert torch.equal(p, q)


def test_ekfac_flag_checked():
    with pytest.raises(TypeError, match=r"^ekfac: expected True or False, got 'yes'"):
        KFACPreconditioner(nn.Linear(2, 2), loss_fn="mse", ekfac="yes")
