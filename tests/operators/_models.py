"""Small models and exact dense references (float64) for the operator tests."""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call, hessian, jacrev

D64 = torch.float64


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).to(D64)


def cnn() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1), nn.Tanh(), nn.MaxPool2d(2), nn.Conv2d(2, 2, 3), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(2, 3),
    ).to(D64)


def bn_model() -> nn.Module:
    torch.manual_seed(2)
    m = nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5), nn.Tanh(), nn.Linear(5, 3)).to(D64)
    with torch.no_grad():  # non-trivial running statistics
        m[1].running_mean.uniform_(-0.5, 0.5)
        m[1].running_var.uniform_(0.5, 2.0)
    return m


class Tied(nn.Module):
    """Two layers sharing one weight Parameter (as in tied embeddings)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.enc = nn.Linear(4, 4).to(D64)
        self.dec = nn.Linear(4, 4).to(D64)
        self.dec.weight = self.enc.weight
        self.head = nn.Linear(4, 3).to(D64)

    def forward(self, x):
        return self.head(torch.tanh(self.dec(torch.tanh(self.enc(x)))))


class Unused(nn.Module):
    """A model with a parameter that never reaches the loss."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(4)
        self.a = nn.Linear(4, 3).to(D64)
        self.unused = nn.Linear(4, 2).to(D64)

    def forward(self, x):
        return self.a(x)


class DictModel(nn.Module):
    """Returns a dict; its loss is not criterion(model(x), y)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(5)
        self.body = nn.Linear(4, 5).to(D64)
        self.cls = nn.Linear(5, 3).to(D64)
        self.reg = nn.Linear(5, 1).to(D64)

    def forward(self, x):
        h = torch.tanh(self.body(x))
        return {"logits": self.cls(h), "value": self.reg(h).squeeze(-1)}


def dict_loss(model, batch):
    out = model(batch["x"])
    return nn.functional.cross_entropy(out["logits"], batch["y"]) + 0.5 * ((out["value"] - batch["v"]) ** 2).mean()


def data(n: int = 10, shape=(4,), classes: int = 3, seed: int = 0):
    g = gen(seed)
    x = torch.randn(n, *shape, generator=g, dtype=D64)
    y = torch.randint(0, classes, (n,), generator=g)
    return x, y


def image_data(n: int = 6, seed: int = 0):
    return data(n, (1, 8, 8), 3, seed)


# ---------------------------------------------------------------------- references
def _flat_fn(model, f):
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    flat0 = torch.cat([p.detach().reshape(-1) for _, p in model.named_parameters()])

    def g(flat):
        pd, i = {}, 0
        for n, s in zip(names, shapes):
            k = int(torch.Size(s).numel())
            pd[n] = flat[i : i + k].reshape(s)
            i += k
        return f(lambda *a, **kw: functional_call(model, pd, a, kw))

    return g, flat0


def dense_hessian(model, loss_of_call):
    """Exact Hessian of ``loss_of_call(call)`` where ``call(x)`` evaluates the model."""
    g, flat0 = _flat_fn(model, loss_of_call)
    return hessian(g)(flat0)


def dense_ggn(model, x, y, crit):
    """Explicit ``J^T H J`` with H the exact Hessian of the loss w.r.t. the outputs."""
    g, flat0 = _flat_fn(model, lambda call: call(x))
    out = g(flat0).detach()
    J = jacrev(g)(flat0).reshape(out.numel(), -1)
    Hout = hessian(lambda o: crit(o.reshape(out.shape), y))(out.reshape(-1))
    return J.T @ Hout @ J


def dense_ef(model, x, y, crit, reduction="mean"):
    """Explicit mean (or sum) of per-sample gradient outer products."""
    rows = []
    for i in range(len(x)):
        g, flat0 = _flat_fn(model, lambda call, i=i: crit(call(x[i : i + 1]), y[i : i + 1]))
        rows.append(torch.func.grad(g)(flat0))
    G = torch.stack(rows)
    return G.T @ G / (len(x) if reduction == "mean" else 1.0)


def dense_hessian_autograd(model, loss_of_call):
    """Exact Hessian by ``torch.autograd.functional.hessian`` (reverse-over-reverse).

    Needed where ``torch.func.hessian`` (forward-over-reverse through functorch) is itself wrong:
    nn.TransformerEncoderLayer takes its inference fast path under functorch transforms, and
    batch_norm's forward-mode derivative in training mode disagrees on torch 2.13.
    """
    names = [n for n, _ in model.named_parameters()]
    ps = tuple(p.detach() for _, p in model.named_parameters())
    Hs = torch.autograd.functional.hessian(
        lambda *pp: loss_of_call(lambda *a, **kw: functional_call(model, dict(zip(names, pp)), a, kw)), ps)
    return torch.cat([torch.cat([Hs[i][j].reshape(ps[i].numel(), ps[j].numel()) for j in range(len(ps))], 1)
                      for i in range(len(ps))], 0)
