"""The per-step path: one product chain and one reduction per layer, fused momentum updates."""

import math

import pytest
import torch
from torch import nn

from curvlens.optim.kfac import KFAC, KFACPreconditioner


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(7, 3)
        self.conv = nn.Conv1d(3, 4, 2)
        self.norm = nn.LayerNorm(4)
        self.lin = nn.Linear(4, 5, bias=False)
        self.head = nn.Linear(5, 3)

    def forward(self, idx):
        h = self.conv(self.emb(idx).transpose(1, 2)).mean(2)
        return self.head(torch.tanh(self.lin(self.norm(h))))


def _setup(seed=0, **kw):
    torch.manual_seed(seed)  # test process only: model init
    model = _Net().double()
    g = torch.Generator().manual_seed(seed)
    idx, y = torch.randint(0, 7, (16, 5), generator=g), torch.randint(0, 3, (16,), generator=g)
    pre = KFACPreconditioner(model, loss_fn=nn.CrossEntropyLoss(), generator=0, update_every=1, **kw)
    for _ in range(2):  # factors, inverses and fresh gradients in place
        model.zero_grad()
        nn.functional.cross_entropy(model(idx), y).backward()
        pre.step()
    model.zero_grad()
    nn.functional.cross_entropy(model(idx), y).backward()
    return model, pre


@pytest.mark.parametrize("kw", [{}, {"inverse": "eigh"}, {"ekfac": True}])
def test_precondition_dot_equals_precondition_and_inner_product(kw):
    model, pre = _setup(**kw)
    for name, b in pre.blocks.items():
        news, dot = b.precondition_dot(pre.damping)
        ref = b.precondition(pre.damping)
        assert len(news) == len(ref) == len(b.params)
        for n, r, p in zip(news, ref, b.params):
            assert n.shape == p.shape
            torch.testing.assert_close(n, r, rtol=1e-12, atol=1e-14)
        want = sum(float((r * p.grad).sum()) for r, p in zip(ref, b.params))
        assert float(dot) == pytest.approx(want, rel=1e-12), name


def test_step_writes_the_clipped_preconditioned_gradients():
    model, pre = _setup(kl_clip=1e-9)
    refs = {p: n for b in pre.blocks.values() for n, p in zip(b.precondition(pre.damping), b.params)}
    vg = sum(float((refs[p] * p.grad).sum()) for p in refs)
    info = pre.step(lr=0.5)
    nu = math.sqrt(1e-9 / (0.25 * vg))
    assert info.kl_scale == pytest.approx(nu, rel=1e-12) and info.kl_scale < 1
    for p, r in refs.items():
        torch.testing.assert_close(p.grad, nu * r, rtol=1e-12, atol=1e-15)


def test_one_infinite_gradient_entry_leaves_every_gradient_unchanged():
    model, pre = _setup()
    model.head.weight.grad[0, 0] = math.inf
    before = [p.grad.clone() for p in model.parameters()]
    info = pre.step()
    assert "non-finite" in info.skipped and info.layers == 0
    for p, b in zip(model.parameters(), before):
        assert torch.equal(p.grad, b) or torch.allclose(p.grad, b, equal_nan=True)


def test_kfac_momentum_and_weight_decay_match_a_plain_loop():
    torch.manual_seed(1)  # test process only: model init
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    twin = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    twin.load_state_dict(model.state_dict())
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(24, 4, generator=g, dtype=torch.float64), torch.randint(0, 3, (24,), generator=g)
    lr, mu, wd = 0.3, 0.7, 0.01
    opt = KFAC(model, nn.CrossEntropyLoss(), lr=lr, momentum=mu, weight_decay=wd, generator=5)
    pre = KFACPreconditioner(twin, loss_fn=nn.CrossEntropyLoss(), lr=lr, generator=5)
    bufs = {}
    for _ in range(4):
        opt.step((x, y))
        twin.zero_grad()
        nn.functional.cross_entropy(twin(x), y).backward()
        pre.step(lr=lr)
        with torch.no_grad():
            for p in twin.parameters():
                d = p.grad + wd * p
                bufs[p] = d.clone() if p not in bufs else d + mu * bufs[p]
                p -= lr * bufs[p]
        assert opt.last_step.accepted
        for p, q in zip(model.parameters(), twin.parameters()):
            torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("pad_max", [0, 1 << 30])
@pytest.mark.parametrize("reduce", [False, True])
def test_input_gram_both_bias_paths_equal_the_ones_column_gram(monkeypatch, pad_max, reduce):
    from curvlens.optim.kfac import factors as fx

    monkeypatch.setattr(fx, "PAD_MAX", pad_max)
    g = torch.Generator().manual_seed(2)
    for module, x in ((nn.Linear(5, 2).double(), torch.randn(6, 3, 5, generator=g, dtype=torch.float64)),
                      (nn.Conv2d(2, 3, 2, padding=1, stride=2).double(),
                       torch.randn(4, 2, 5, 5, generator=g, dtype=torch.float64))):
        rows = fx.averaged_rows(module, x) if reduce else fx.input_rows(module, x)[:, :-1]
        ones = torch.cat([rows, torch.ones(rows.shape[0], 1, dtype=rows.dtype)], 1)
        got, n = fx.input_gram(module, x, reduce)
        assert n == rows.shape[0]
        torch.testing.assert_close(got, ones.T @ ones, rtol=1e-13, atol=1e-12)
