"""JacobianGGNOperator against dense float64 GGN references (J^T H J from torch.func)."""

import pytest
import torch
from torch import nn

from curvlens import Problem
from curvlens.operators import GGNOperator
from curvlens.operators.ggn_jacobian import JacobianGGNOperator, output_entries

D64 = torch.float64


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _mlp(out=3, seed=0):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, out)).to(D64)


def _dense_ggn(model, loss, x, y):
    """J^T (d^2 L / d f^2) J with J and the output Hessian from torch.func (independent of curvlens)."""
    from torch.func import functional_call, hessian, jacrev

    names = [n for n, _ in model.named_parameters()]
    base = tuple(p.detach() for p in model.parameters())
    out = model(x).detach()
    jac = jacrev(lambda *pv: functional_call(model, dict(zip(names, pv)), (x,)), argnums=tuple(range(len(base))))(*base)
    J = torch.cat([j.reshape(out.numel(), -1) for j in jac], 1)
    H = hessian(lambda o: loss(o.reshape(out.shape), y))(out.reshape(-1))
    return J.T @ H @ J


CASES = [
    ("mse", lambda: nn.MSELoss(), lambda g: torch.randn(20, 3, generator=g, dtype=D64)),
    ("cross_entropy", lambda: nn.CrossEntropyLoss(), lambda g: torch.randint(0, 3, (20,), generator=g)),
    ("bce_with_logits", lambda: nn.BCEWithLogitsLoss(), lambda g: torch.rand(20, 3, generator=g, dtype=D64).round()),
    ("mse_sum", lambda: nn.MSELoss(reduction="sum"), lambda g: torch.randn(20, 3, generator=g, dtype=D64)),
]


@pytest.mark.parametrize("name,loss,targets", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("dense,method", [(True, "vmap"), (False, "backward")])
def test_matches_dense_reference(name, loss, targets, dense, method):
    g = _gen(1)
    x, y = torch.randn(20, 4, generator=g, dtype=D64), targets(g)
    model, crit = _mlp(), loss()
    ref = _dense_ggn(model, crit, x, y)
    op = JacobianGGNOperator(model, crit, (x, y), dense=dense, method=method)
    assert op.method_used == method and op.is_dense == dense
    V = torch.randn(op.dim, 3, generator=g, dtype=D64)
    torch.testing.assert_close(op @ V, ref @ V, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(op.diagonal(), ref.diagonal(), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(op.to_dense(), ref, rtol=1e-10, atol=1e-12)


def test_several_batches_are_weighted_like_the_loss():
    g = _gen(2)
    x, y = torch.randn(30, 4, generator=g, dtype=D64), torch.randn(30, 3, generator=g, dtype=D64)
    model = _mlp()
    batches = [(x[:7], y[:7]), (x[7:], y[7:])]
    op = JacobianGGNOperator(model, nn.MSELoss(), batches)
    torch.testing.assert_close(op.to_dense(), _dense_ggn(model, nn.MSELoss(), x, y), rtol=1e-10, atol=1e-12)
    assert op.num_entries == 30 * 3 * op.dim == output_entries(Problem(model, nn.MSELoss(), batches)) * op.dim


class _InputDerivative(nn.Module):
    """Outputs u'(x) via autograd.grad inside forward (as physics-informed networks do)."""

    def __init__(self):
        super().__init__()
        self.u = _mlp(out=1, seed=3)

    def forward(self, x):
        with torch.enable_grad():
            xr = x.detach().requires_grad_(True)
            u = self.u(xr)
            return torch.autograd.grad(u.sum(), xr, create_graph=True)[0] + u


def _loop_dense_ggn(model, x, mse_reduction="mean"):
    """J^T H J for an MSE loss, with J from one plain backward pass per output entry on the full
    batch (no vmap, no sub-batches) and H = 2 I (sum) or 2 I / M (mean)."""
    params = list(model.parameters())
    out = model(x)
    flat = out.reshape(-1)
    rows = [torch.cat([torch.zeros(p.numel(), dtype=D64) if g is None else g.reshape(-1)
                       for g, p in zip(torch.autograd.grad(flat[j], params, retain_graph=True, allow_unused=True),
                                       params)])
            for j in range(flat.numel())]
    J = torch.stack(rows).detach()
    scale = 2.0 if mse_reduction == "sum" else 2.0 / flat.numel()
    return scale * J.T @ J


class _Poisson(nn.Module):
    """A physics-informed residual: rows (x, is_boundary) -> -u''(x) - f(x) inside, u(x) on the
    boundary, with u'' from two autograd.grad calls inside forward."""

    def __init__(self):
        super().__init__()
        self.u = _mlp(out=1, seed=8)
        with torch.no_grad():
            self.u[0].weight.copy_(torch.linspace(-1, 1, 24, dtype=D64).reshape(6, 4))

    def forward(self, rows):
        x, bnd = rows[:, :4], rows[:, 4:5]
        with torch.enable_grad():
            xr = x.detach().requires_grad_(True)
            u = self.u(xr)
            du = torch.autograd.grad(u.sum(), xr, create_graph=True)[0]
            d2u = torch.autograd.grad(du[:, 0].sum(), xr, create_graph=True)[0][:, :1]
        return torch.where(bnd > 0, u, -d2u - torch.sin(x[:, :1]))


def _poisson_rows(n, g):
    x = torch.rand(n, 4, generator=g, dtype=D64)
    bnd = (torch.arange(n) % 9 == 0).to(D64)[:, None]
    return torch.cat([x, bnd], 1)


def test_model_that_torch_func_cannot_transform_uses_sub_batches():
    g = _gen(4)
    x, y = torch.randn(9, 4, generator=g, dtype=D64), torch.randn(9, 4, generator=g, dtype=D64)
    model = _InputDerivative()  # 4 outputs per sample: sub-batches of 8 and 1 samples
    ref = _loop_dense_ggn(model, x)
    op = JacobianGGNOperator(model, nn.MSELoss(), (x, y))  # method="auto"
    assert op.method_used == "batched"
    torch.testing.assert_close(op.to_dense(), ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(GGNOperator(model, nn.MSELoss(), (x, y)).to_dense(), ref, rtol=1e-10, atol=1e-12)
    full = JacobianGGNOperator(model, nn.MSELoss(), (x, y), method="backward")
    assert full.method_used == "backward"
    torch.testing.assert_close(full.to_dense(), ref, rtol=1e-10, atol=1e-12)
    with pytest.raises(RuntimeError):
        JacobianGGNOperator(model, nn.MSELoss(), (x, y), method="vmap")


@pytest.mark.parametrize("reduction,dense", [("mean", True), ("sum", False)])
def test_pinn_residual_matches_dense_reference(reduction, dense):
    g = _gen(9)
    rows = _poisson_rows(70, g)  # one output per sample: sub-batches of 32, 32 and 6
    zeros = torch.zeros(70, 1, dtype=D64)
    model = _Poisson()
    ref = _loop_dense_ggn(model, rows, reduction)
    op = JacobianGGNOperator(model, nn.MSELoss(reduction=reduction), (rows, zeros), dense=dense, verify=True)
    assert op.method_used == "batched" and op.is_dense == dense
    V = torch.randn(op.dim, 3, generator=g, dtype=D64)
    torch.testing.assert_close(op @ V, ref @ V, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(op.diagonal(), ref.diagonal(), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(op.to_dense(), ref, rtol=1e-10, atol=1e-12)


def test_failed_vmapped_backward_falls_back_to_single_directions(monkeypatch):
    import curvlens.operators.ggn_jacobian as gj

    calls = []

    def no_batching(*args, **kwargs):
        calls.append(1)
        raise RuntimeError("no batching rule")

    monkeypatch.setattr(gj, "_batched_grad", no_batching)
    g = _gen(10)
    rows, model = _poisson_rows(40, g), _Poisson()
    zeros = torch.zeros(40, 1, dtype=D64)
    ref = _loop_dense_ggn(model, rows)
    for method in ("batched", "backward"):
        op = JacobianGGNOperator(model, nn.MSELoss(), (rows, zeros), method=method)
        assert op.method_used == method
        torch.testing.assert_close(op.to_dense(), ref, rtol=1e-10, atol=1e-12)
    assert len(calls) == 3  # two sub-batches, then the full batch


class _CenteredDerivative(nn.Module):
    """Samples interact through a batch mean, and forward calls autograd.grad (no torch.func)."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 5), nn.Linear(5, 1)

    def forward(self, x):
        with torch.enable_grad():
            xr = x.detach().requires_grad_(True)
            h = torch.tanh(self.a(xr))
            u = self.b(h * (1.0 + h.mean(0, keepdim=True)))
            return torch.autograd.grad(u.sum(), xr, create_graph=True)[0]


def test_sub_batches_of_interacting_samples_are_detected():
    g = _gen(11)
    x, y = torch.randn(40, 4, generator=g, dtype=D64), torch.randn(40, 4, generator=g, dtype=D64)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = _CenteredDerivative().to(D64)
    ref = _loop_dense_ggn(model, x)
    op = JacobianGGNOperator(model, nn.MSELoss(), (x, y))  # auto: the sub-batch check fails, full backward
    assert op.method_used == "backward"
    torch.testing.assert_close(op.to_dense(), ref, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match=r"^model: the per-sample \(batched\) Jacobian GGN differs from the "):
        JacobianGGNOperator(model, nn.MSELoss(), (x, y), method="batched", verify=True)
    with pytest.raises(ValueError, match=r"^method: 'batched' needs tensor inputs whose first dimension indexes"):
        JacobianGGNOperator(_DictInput(model), nn.MSELoss(), ({"x": x}, y), method="batched")


class _DictInput(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):  # called as model(**inputs)
        return self.inner(x)


class _Centered(nn.Module):
    """Subtracts the batch mean of the hidden layer: samples interact, yet one sample runs."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 5), nn.Linear(5, 3)

    def forward(self, x):
        h = torch.tanh(self.a(x))
        return self.b(h - 0.5 * h.mean(0, keepdim=True))


def test_verify_catches_samples_that_interact():
    g = _gen(5)
    x, y = torch.randn(16, 4, generator=g, dtype=D64), torch.randn(16, 3, generator=g, dtype=D64)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = _Centered().to(D64)
    with pytest.raises(ValueError, match=r"^model: the per-sample \(vmap\) Jacobian GGN differs from the autograd"):
        JacobianGGNOperator(model, nn.MSELoss(), (x, y), method="vmap", verify=True)
    # the backward route is exact when samples interact
    op = JacobianGGNOperator(model, nn.MSELoss(), (x, y), method="backward", verify=True)
    ref = GGNOperator(model, nn.MSELoss(), (x, y)).to_dense()
    torch.testing.assert_close(op.to_dense(), ref, rtol=1e-9, atol=1e-12)


def test_batch_statistics_fall_back_to_backward_passes():
    g = _gen(5)
    x, y = torch.randn(16, 4, generator=g, dtype=D64), torch.randn(16, 3, generator=g, dtype=D64)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5), nn.Tanh(), nn.Linear(5, 3)).to(D64)
    op = JacobianGGNOperator(model, nn.MSELoss(), (x, y), mode="train")
    assert op.method_used == "backward" and model.training
    ref = GGNOperator(model, nn.MSELoss(), (x, y), mode="train").to_dense()
    torch.testing.assert_close(op.to_dense(), ref, rtol=1e-9, atol=1e-12)


def test_bad_inputs_raise_one_line():
    g = _gen(6)
    x, y = torch.randn(8, 4, generator=g, dtype=D64), torch.randn(8, 3, generator=g, dtype=D64)
    model = _mlp()
    with pytest.raises(ValueError, match=r"^max_entries: the Jacobian of batch 0 has 24 x 51 = 1224 entries, more"):
        JacobianGGNOperator(model, nn.MSELoss(), (x, y), max_entries=1000)
    with pytest.raises(ValueError, match=r"^method: expected one of \('auto', 'vmap', 'batched', 'backward'\), got 'fwd'"):
        JacobianGGNOperator(model, nn.MSELoss(), (x, y), method="fwd")
    with pytest.raises(ValueError, match=r"^loss_fn: JacobianGGNOperator needs a criterion"):
        JacobianGGNOperator(model, lambda m, b: m(b[0]).sum(), (x, y), loss_form="model_batch")


def test_snapshot_reports_stale_weights():
    g = _gen(7)
    x, y = torch.randn(8, 4, generator=g, dtype=D64), torch.randn(8, 3, generator=g, dtype=D64)
    model = _mlp()
    op = JacobianGGNOperator(model, nn.MSELoss(), (x, y))
    assert not op.is_stale
    with torch.no_grad():
        model[0].weight.add_(0.1)
    assert op.is_stale
