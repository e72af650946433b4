"""Every operator against an exact dense reference in float64, flat and list formats."""

import pytest
import torch
from torch import nn

from curvlens.operators import EmpiricalFisherOperator, GGNOperator, HessianOperator, MCFisherOperator

from ._models import (
    D64, DictModel, Tied, Unused, bn_model, cnn, data, dense_ef, dense_ggn, dense_hessian, dense_hessian_autograd,
    dict_loss,
    image_data, mlp,
)

CE = nn.CrossEntropyLoss()
RTOL = 1e-10


def close(A, B, rtol=RTOL):
    scale = max(float(B.abs().max()), 1e-300)
    assert float((A - B).abs().max()) <= rtol * scale, float((A - B).abs().max()) / scale


def criterion_cases():
    yield "mlp", mlp(), data(10)
    yield "cnn", cnn(), image_data(6)
    yield "bn_eval", bn_model(), data(10)
    yield "tied", Tied(), data(10)
    yield "unused", Unused(), data(10)


CASES = list(criterion_cases())
IDS = [c[0] for c in CASES]


def split(x, y, sizes):
    out, i = [], 0
    for s in sizes:
        out.append((x[i : i + s], y[i : i + s]))
        i += s
    return out


@pytest.mark.parametrize("name,model,xy", CASES, ids=IDS)
@pytest.mark.parametrize("backend", ["double_backward", "fwd_rev"])
def test_hessian_matches_torch_func(name, model, xy, backend):
    x, y = xy
    model.eval()
    H_ref = dense_hessian(model, lambda call: CE(call(x), y))
    H = HessianOperator(model, CE, (x, y), backend=backend)
    close(H.to_dense(), H_ref)


@pytest.mark.parametrize("name,model,xy", CASES, ids=IDS)
def test_ggn_matches_explicit_jthj(name, model, xy):
    x, y = xy
    model.eval()
    G = GGNOperator(model, CE, (x, y))
    close(G.to_dense(), dense_ggn(model, x, y, CE))


@pytest.mark.parametrize("name,model,xy", CASES, ids=IDS)
def test_empirical_fisher_matches_per_sample_outer_products(name, model, xy):
    x, y = xy
    model.eval()
    F = EmpiricalFisherOperator(model, CE, (x, y))
    close(F.to_dense(), dense_ef(model, x, y, CE))


@pytest.mark.parametrize(
    "crit,target",
    [
        (nn.MSELoss(), "real"),
        (nn.MSELoss(reduction="sum"), "real"),
        (nn.BCEWithLogitsLoss(), "binary"),
        (nn.BCELoss(), "binary"),
        (nn.NLLLoss(), "class"),
        (nn.CrossEntropyLoss(reduction="sum"), "class"),
        (nn.functional.mse_loss, "real"),
        ("cross_entropy", "class"),
    ],
    ids=["mse", "mse_sum", "bce_logits", "bce_probs", "nll", "ce_sum", "F.mse", "name_ce"],
)
def test_ggn_losses(crit, target):
    model = mlp()
    g = torch.Generator().manual_seed(7)
    x = torch.randn(8, 4, generator=g, dtype=D64)
    if target == "real":
        y = torch.randn(8, 3, generator=g, dtype=D64)
    elif target == "binary":
        y = torch.randint(0, 2, (8, 3), generator=g).to(D64)
    else:
        y = torch.randint(0, 3, (8,), generator=g)
    wrap = model
    if isinstance(crit, nn.BCELoss):
        wrap = nn.Sequential(model, nn.Sigmoid())
    if isinstance(crit, nn.NLLLoss):
        wrap = nn.Sequential(model, nn.LogSoftmax(dim=1))
    fn = {"cross_entropy": CE}.get(crit, crit) if isinstance(crit, str) else crit
    G = GGNOperator(wrap, crit, (x, y))
    ref = dense_ggn(wrap, x, y, fn)
    if isinstance(crit, nn.NLLLoss):  # NLL is linear in log-probs: reference is CE on them
        ref = dense_ggn(wrap, x, y, lambda o, t: nn.functional.cross_entropy(o, t))
    close(G.to_dense(), ref)
    assert G.is_psd
    assert float(torch.linalg.eigvalsh(G.to_dense()).min()) > -1e-12


def test_custom_loss_fn_model_batch_form():
    model = DictModel()
    g = torch.Generator().manual_seed(0)
    batch = {"x": torch.randn(9, 4, generator=g, dtype=D64), "y": torch.randint(0, 3, (9,), generator=g),
             "v": torch.randn(9, generator=g, dtype=D64)}
    H_ref = dense_hessian(model, lambda call: dict_loss(_Call(call), batch))
    H = HessianOperator(model, dict_loss, batch)
    close(H.to_dense(), H_ref)
    close(HessianOperator(model, dict_loss, batch, backend="fwd_rev").to_dense(), H_ref)
    F = EmpiricalFisherOperator(model, dict_loss, batch)
    rows = []
    for i in range(9):
        bi = {k: v[i : i + 1] for k, v in batch.items()}
        Hi = torch.func.grad(lambda fl, bi=bi: _flat_loss(model, fl, bi))(_flat(model))
        rows.append(Hi)
    Gs = torch.stack(rows)
    close(F.to_dense(), Gs.T @ Gs / 9)


class _Call:
    def __init__(self, call):
        self.call = call

    def __call__(self, x):
        return self.call(x)


def _flat(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def _flat_loss(model, flat, batch):
    pd, i = {}, 0
    for n, p in model.named_parameters():
        pd[n] = flat[i : i + p.numel()].reshape(p.shape)
        i += p.numel()
    return dict_loss(_Call(lambda x: torch.func.functional_call(model, pd, (x,))), batch)


@pytest.mark.parametrize("cls", [HessianOperator, GGNOperator, EmpiricalFisherOperator])
@pytest.mark.parametrize("budget", [None, 0])
def test_uneven_batches_equal_full_batch(cls, budget):
    model = mlp()
    x, y = data(11)
    full = cls(model, CE, (x, y)).to_dense()
    parts = cls(model, CE, split(x, y, [4, 4, 3]), max_graph_memory=budget)
    close(parts.to_dense(), full)
    assert parts.num_samples == 11
    # DataLoader with an uneven last batch and shuffling: still the same matrix
    dl = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=4, shuffle=True)
    close(cls(model, CE, dl).to_dense(), full)


def test_sum_reduction_aggregates_as_sum():
    model = mlp()
    x, y = data(11)
    crit = nn.CrossEntropyLoss(reduction="sum")
    ref = dense_hessian(model, lambda call: crit(call(x), y))
    close(HessianOperator(model, crit, split(x, y, [5, 6])).to_dense(), ref)
    close(EmpiricalFisherOperator(model, crit, split(x, y, [5, 6])).to_dense(), dense_ef(model, x, y, CE, "sum"))


def test_list_format_matches_flat():
    model = mlp()
    x, y = data(10)
    H = HessianOperator(model, CE, (x, y))
    v = torch.randn(H.dim, generator=torch.Generator().manual_seed(1), dtype=D64)
    vs = H.unflatten(v)
    out = H @ vs
    assert isinstance(out, list) and [o.shape for o in out] == [p.shape for p in model.parameters()]
    close(H.flatten(out), H @ v)
    V = torch.randn(H.dim, 5, generator=torch.Generator().manual_seed(2), dtype=D64)
    close(H @ V, torch.stack([H @ V[:, j] for j in range(5)], 1))


@pytest.mark.parametrize("cls", [HessianOperator, GGNOperator, EmpiricalFisherOperator, MCFisherOperator])
def test_symmetric_repeatable_and_psd(cls):
    model = cnn()
    x, y = image_data(6)
    op = cls(model, CE, split(x, y, [4, 2]))
    A = op.to_dense()
    close(A, A.T, 1e-12)
    close(op.to_dense(), A, 0.0)  # repeated products identical
    if cls is not HessianOperator:
        assert op.is_psd and float(torch.linalg.eigvalsh(A).min()) > -1e-10 * float(A.abs().max())
    else:
        assert not op.is_psd


def test_mc_fisher_is_fixed_and_converges_to_ggn():
    model = mlp()
    x, y = data(12)
    G = GGNOperator(model, CE, (x, y)).to_dense()
    a = MCFisherOperator(model, CE, (x, y), generator=3).to_dense()
    close(MCFisherOperator(model, CE, (x, y), generator=3).to_dense(), a, 0.0)
    assert not torch.equal(a, MCFisherOperator(model, CE, (x, y), generator=4).to_dense())
    mean = sum(MCFisherOperator(model, CE, (x, y), generator=s, mc_samples=8).to_dense() for s in range(100)) / 100
    err = float((mean - G).abs().max() / G.abs().max())
    single = float((a - G).abs().max() / G.abs().max())
    assert err < 0.05 and err < single / 4, (err, single)


@pytest.mark.parametrize("crit,kind", [(nn.MSELoss(), "real"), (nn.BCEWithLogitsLoss(), "binary")])
def test_mc_fisher_unbiased_for_regression_and_binary(crit, kind):
    model = mlp()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 4, generator=g, dtype=D64)
    y = torch.randn(6, 3, generator=g, dtype=D64) if kind == "real" else torch.randint(0, 2, (6, 3), generator=g).to(D64)
    G = GGNOperator(model, crit, (x, y)).to_dense()
    mean = sum(MCFisherOperator(model, crit, (x, y), generator=s, mc_samples=16).to_dense() for s in range(60)) / 60
    assert float((mean - G).abs().max() / G.abs().max()) < 0.06


@pytest.mark.parametrize("cls", [HessianOperator, GGNOperator])
def test_block_view_is_exact_diagonal_block(cls):
    model = mlp()
    x, y = data(10)
    op = cls(model, CE, (x, y))
    A = op.to_dense()
    assert op.block_names() == ["0", "2"]
    for b in op.blocks:
        sub = op.block(b.name)
        assert sub.dim == b.size
        close(sub.to_dense(), A[b.slice, b.slice])


def test_param_subsets():
    model = mlp()
    x, y = data(10)
    A = HessianOperator(model, CE, (x, y)).to_dense()
    n0 = sum(p.numel() for p in model[0].parameters())
    for spec in ["0", model[0], ["0.weight", "0.bias"], lambda n, p: n.startswith("0.")]:
        op = HessianOperator(model, CE, (x, y), params=spec)
        assert op.dim == n0
        close(op.to_dense(), A[:n0, :n0])
    op = HessianOperator(model, CE, (x, y), params=[model[2].bias])
    close(op.to_dense(), A[-3:, -3:])


def test_float32_model_stays_float32():
    model = mlp().float()
    x, y = data(10)
    H = HessianOperator(model, CE, (x.float(), y))
    assert H.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in model.parameters())
    v = torch.ones(H.dim)
    assert (H @ v).dtype == torch.float32


def test_to_scipy_and_counter():
    model = mlp()
    x, y = data(10)
    H = HessianOperator(model, CE, (x, y))
    import numpy as np

    L = H.to_scipy()
    v = np.linspace(-1, 1, H.dim)
    np.testing.assert_allclose(L @ v, (H @ torch.from_numpy(v)).numpy(), rtol=1e-12)
    assert H.num_matvecs == 2
    H.matmat(torch.zeros(H.dim, 3, dtype=D64))
    assert H.num_matvecs == 5


class _TinyTransformer(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(6)
        self.inp = nn.Linear(3, 8)
        self.block = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
        self.head = nn.Linear(8, 3)
        self.to(D64)

    def forward(self, x):
        return self.head(self.block(self.inp(x)).mean(dim=1))


@pytest.mark.parametrize("cls", [HessianOperator, GGNOperator])
def test_transformer_block_attention_is_twice_differentiable(cls):
    """scaled_dot_product_attention's fused CPU kernel has no double backward: operators must
    select the math kernel themselves (the reference does the same explicitly)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    model = _TinyTransformer().eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 4, 3, generator=g, dtype=D64)
    y = torch.randint(0, 3, (5,), generator=g)
    op = cls(model, CE, (x, y))
    with sdpa_kernel([SDPBackend.MATH]):
        if cls is HessianOperator:  # torch.func.hessian takes the layer's fast path: use autograd
            ref = dense_hessian_autograd(model, lambda call: CE(call(x), y))
        else:
            ref = dense_ggn(model, x, y, CE)
    close(op.to_dense(), ref, 1e-9)


def test_gradient_over_uneven_batches_matches_full_batch():
    model = Unused()
    x, y = data(11)
    ref = torch.autograd.grad(CE(model(x), y), list(model.parameters()), allow_unused=True)
    ref = [torch.zeros_like(p) if r is None else r for r, p in zip(ref, model.parameters())]
    g = HessianOperator(model, CE, split(x, y, [4, 4, 3])).gradient()
    for a, b in zip(g, ref):
        close(a, b, 1e-12)
    assert all(p.grad is None for p in model.parameters())
